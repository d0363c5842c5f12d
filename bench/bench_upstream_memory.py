"""Memory per worker of the held upstream answers (issue #17), by hand.

Two worker-like processes hold N upstream answers at once, both ways cnamd can hold
them: ``dict`` as every process did before the held-answers file (each builds its own
dict from rows it read, as ``UpstreamAnswers.replace`` after ``load_live``), and
``mapped`` as workers do now (each maps the host's file, ``cache/held_file.py``,
whose checksum pass on open reads every page). Each process reports the growth of its
Pss (``/proc/self/smaps_rollup``) from before it held anything; the file's size is
printed beside. Pss splits a shared page between its mappers, so the mapped figure
per process falls as workers are added and the dict one does not.

Reproduce:
    .venv/bin/python bench/bench_upstream_memory.py [N ...]   (default 100000 1000000)
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import time
from pathlib import Path

from cnamd.cache.held_file import HeldFile, write_held
from cnamd.cache.upstream import UpstreamAnswers

WORKERS = 2


def pss_kb() -> int:
    with open("/proc/self/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise RuntimeError("no Pss")


def rows(n: int) -> list[tuple[str, str | None, str, float | None]]:
    far = time.time() + 86400
    return [
        (f"+1313{i:07d}", None if i % 10 == 0 else f"Upstream Caller {i:07d}", "opencnam", far)
        for i in range(n)
    ]


def worker(mode: str, n: int, path: Path, report: int, go: int) -> None:
    """Hold the answers, report the Pss growth, wait until every worker has, then exit."""
    gc.collect()
    before = pss_kb()
    held = UpstreamAnswers()
    if mode == "dict":
        fresh = rows(n)  # the strings a worker's load_live made: its own, not the parent's
        held.replace(fresh)
        del fresh
    else:
        held.use_file(HeldFile.open(path))
    gc.collect()
    assert len(held) == n
    os.write(report, f"{os.getpid()} {before}\n".encode())
    os.read(go, 1)  # the parent reads every worker's Pss while all of them hold the answers
    os._exit(0)


def measure(mode: str, n: int, path: Path) -> list[float]:
    report_r, report_w = os.pipe()
    go_r, go_w = os.pipe()
    pids = []
    for _ in range(WORKERS):
        pid = os.fork()
        if pid == 0:
            worker(mode, n, path, report_w, go_r)
        pids.append(pid)
    with os.fdopen(report_r) as reports:
        befores = {}
        for _ in range(WORKERS):
            pid, before = reports.readline().split()
            befores[int(pid)] = int(before)
        grown = []
        for pid, before in befores.items():
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                now = next(int(line.split()[1]) for line in fh if line.startswith("Pss:"))
            grown.append((now - before) / 1024)
        os.write(go_w, b"x" * WORKERS)
    for pid in pids:
        os.waitpid(pid, 0)
    os.close(report_w)
    os.close(go_r)
    os.close(go_w)
    return grown


def main() -> None:
    counts = [int(a) for a in sys.argv[1:]] or [100000, 1000000]
    for n in counts:
        path = Path(tempfile.mkdtemp()) / "cache.snapshot.upstream"
        write_held(path, rows(n), base_id="bench", last_change_id=0)
        size = path.stat().st_size / 2**20
        for mode in ("dict", "mapped"):
            grown = measure(mode, n, path)
            per = ", ".join(f"{g:.1f}" for g in grown)
            file = "" if mode == "dict" else f"; file {size:.1f} MiB"
            print(
                f"{n:>8} answers, {mode:6}: Pss growth per worker {per} MiB"
                f" ({max(grown) * 2**20 / n:.0f} B per answer){file}"
            )
        path.unlink()


if __name__ == "__main__":
    main()
