#!/usr/bin/env python3
"""Full-load time, two builds of cnamd side by side on one database fill.

Run by hand (not a test):

    .venv/bin/python bench/bench_full_load.py --entries 1000000 --rounds 3 \\
        --other /path/to/older/checkout/.venv/bin/python

Fills an embedded PostgreSQL once (bench/bench_feed.py's data), then runs the
loader child (``python -m cnamd.replica.loader``, what every full load runs) of
this checkout and of ``--other`` (another checkout's venv: the code before a
change) in turns, ``--rounds`` times each, and maps each snapshot written. On a
shared machine the turns put both builds under the same load, which separate
runs minutes apart do not. Prints each load's wall time (spawn to exit, then the
map) and the child's own stream / build / write split when it logs one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_feed import cpu_model, fill

from cnamd.cache.trie import NameCache
from cnamd.replica.loader import SPEC_ENV
from cnamd.store.embedded import EmbeddedPostgres

_SPLIT = re.compile(r"(stream|build|write)_seconds=([0-9.]+)")


async def load_once(
    python: str, url: str, path: Path
) -> tuple[float, float, float, dict[str, float]]:
    """One loader child of ``python``: its wall and CPU seconds, map seconds, logged split.

    The child's CPU time (user + system) is what the shared machine's load changes
    least; PostgreSQL's own work (the COPY, the digest) is not in it."""
    spec = {
        "url": url,
        "path": str(path),
        "connect_timeout": 10.0,
        "cause": "bench",
        "log": {"level": "info", "format": "kv"},
    }
    env = {**os.environ, SPEC_ENV: json.dumps(spec)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    child = await asyncio.create_subprocess_exec(
        python, "-m", "cnamd.replica.loader", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await child.communicate()
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if child.returncode != 0:
        raise RuntimeError(f"{python}: loader exit {child.returncode}: {err.decode()[-2000:]}")
    started = time.monotonic()
    cache, _meta = NameCache.open(path)
    mapped = time.monotonic() - started
    cache.close()
    return wall, cpu, mapped, {k: float(v) for k, v in _SPLIT.findall(err.decode())}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--other", default="", help="another checkout's venv python")
    args = parser.parse_args()
    builds = {"this": sys.executable}
    if args.other:
        builds["other"] = args.other

    with tempfile.TemporaryDirectory(prefix="cnamd-bench-") as tmp:
        embedded = EmbeddedPostgres(Path(tmp) / "pg", database="bench")
        url = await embedded.start()
        try:
            fill_s = await fill(url, args.entries)
            print(f"machine: {os.cpu_count()} cores, {cpu_model()}, load {os.getloadavg()}")
            print(f"entries: {args.entries:,} (COPY into PostgreSQL {fill_s:.1f} s)")
            walls: dict[str, list[float]] = {name: [] for name in builds}
            cpus: dict[str, list[float]] = {name: [] for name in builds}
            for round_ in range(args.rounds):
                for name, python in builds.items():
                    path = Path(tmp) / f"{name}.snapshot"
                    wall, cpu, mapped, split = await load_once(python, url, path)
                    walls[name].append(wall + mapped)
                    cpus[name].append(cpu)
                    print(
                        f"round {round_ + 1} {name}: load {wall:.2f} s (child CPU {cpu:.2f} s)"
                        f" + map {mapped * 1000:.0f} ms"
                        + "".join(f", {k} {v:.2f} s" for k, v in split.items())
                        + f" (load average {os.getloadavg()[0]:.1f})"
                    )
                    path.unlink()
            for name, values in walls.items():
                print(
                    f"{name} ({builds[name]}): median {statistics.median(values):.2f} s,"
                    f" best {min(values):.2f} s over {len(values)} loads;"
                    f" child CPU median {statistics.median(cpus[name]):.2f} s"
                )
        finally:
            await embedded.stop()
    print("reproduce: .venv/bin/python bench/bench_full_load.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    asyncio.run(main())
