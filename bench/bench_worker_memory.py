#!/usr/bin/env python3
"""Memory of a daemon's workers at N names, before and after a forced reload (issue 16).

Run by hand (not a test):

    .venv/bin/python bench/bench_worker_memory.py --entries 1000000 --workers 1 2 4

For each worker count: an embedded PostgreSQL in a temporary directory holding
``--entries`` global names (COPY, as bench/load_entries.py does), then
``cnamd serve --workers N`` on it. Prints every process's Pss (from
/proc/PID/smaps_rollup) once all workers are ready, then forces a full reload
(a gap in the change log: the host's loader rebuilds and every worker maps the
new file), waits until every worker has mapped the new base and caught up, and
prints the Pss again, with which snapshot inodes each worker maps. The target
(issue 16): all workers' Pss <= 1.2x one worker's, after the reload too.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import psutil

from cnamd.store.embedded import EmbeddedPostgres
from cnamd.store.migrations import migrate

MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def rows(n: int) -> Iterator[tuple[object, ...]]:
    now = datetime.datetime.now(datetime.UTC)
    for i in range(n):
        yield ("global", f"+1{2000000000 + i * 7:010d}", f"Caller {i}", "approved", now)


async def fill(url: str, n: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        await conn.execute("SET session_replication_role = replica")  # no change log rows
        await conn.copy_records_to_table(
            "cnam_entries",
            records=rows(n),
            columns=["scope", "key", "name", "approval", "approved_at"],
        )
        await conn.execute("ANALYZE cnam_entries")
    finally:
        await conn.close()


def pss(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def snapshot_pss(pid: int, path: Path) -> int:
    """Pss of the process's mappings of ``path`` (the shared cache itself)."""
    total, inside = 0, False
    with open(f"/proc/{pid}/smaps") as fh:
        for line in fh:
            fields = line.split()
            if fields and "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                inside = len(fields) >= 6 and fields[5] == str(path)
            elif inside and fields[0] == "Pss:":
                total += int(fields[1]) * 1024
    return total


def mapped_inodes(pid: int, path: Path) -> set[int]:
    found = set()
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5] == str(path):
                found.add(int(fields[4]))
    return found


def processes(root: int) -> tuple[int, list[int]]:
    """(supervisor or single process, its workers); loader children are not counted."""
    kids = [p.pid for p in psutil.Process(root).children() if "worker" in " ".join(p.cmdline())]
    return root, sorted(kids)


async def ready_at(session: aiohttp.ClientSession, base: str, change_id: int, n: int) -> bool:
    """/readyz is 200 and every one of ``n`` workers (the supervisor's view; a single
    process: its own) is at ``change_id`` or later."""
    try:
        async with session.get(base + "/readyz") as resp:
            if resp.status != 200:
                return False
            body = await resp.json()
    except (aiohttp.ClientError, TimeoutError):
        return False
    ids = [w["change_id"] for w in body.get("workers", [])] or [body.get("change_id")]
    return len(ids) == n and all(isinstance(i, int) and i >= change_id for i in ids)


async def until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.5)
    raise SystemExit(f"{what}: not within {timeout} s")


def report(label: str, sup: int, workers: list[int], snapshot: Path) -> tuple[float, float]:
    inode = snapshot.stat().st_ino
    sizes = [pss(w) for w in workers]
    cache = [snapshot_pss(w, snapshot) for w in workers]
    maps = [sorted(mapped_inodes(w, snapshot)) for w in workers]
    print(
        f"  {label}: supervisor {pss(sup) / MiB:.0f} MiB; workers "
        + ", ".join(f"{s / MiB:.0f}" for s in sizes)
        + f" MiB (sum {sum(sizes) / MiB:.0f}), of which the mapped snapshot "
        + ", ".join(f"{c / MiB:.1f}" for c in cache)
        + f" MiB (sum {sum(cache) / MiB:.1f}; file {snapshot.stat().st_size / MiB:.1f} MiB);"
        f" snapshot inode {inode}, workers map {maps}"
    )
    return sum(sizes) / MiB, sum(cache) / MiB


async def one(
    entries: int, workers: int, tmp: Path
) -> tuple[tuple[float, float], tuple[float, float]]:
    pg = EmbeddedPostgres(tmp / "pg")
    url = await pg.start()
    try:
        started = time.monotonic()
        await fill(url, entries)
        print(f"{entries:,} names loaded in {time.monotonic() - started:.1f} s")
        http = free_port()
        base = f"http://127.0.0.1:{http}"
        snapshot = tmp / "cache.snapshot"
        cmd = [
            sys.executable, "-m", "cnamd.cli", "serve", "--database-url", url,
            "--http-listen", f"127.0.0.1:{http}", "--sip-listen", f"127.0.0.1:{free_port()}",
            "--snapshot", str(snapshot), "--workers", str(workers),
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNAMD_")}
        log = (tmp / "daemon.log").open("w")
        daemon = await asyncio.create_subprocess_exec(
            *cmd, stdout=log, stderr=subprocess.STDOUT, env=env
        )
        try:
            conn = await asyncpg.connect(url)
            head = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM change_log"))
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True),
                timeout=aiohttp.ClientTimeout(total=5),
            ) as session:
                await until(lambda: ready_at(session, base, head, workers), 300, "ready")
                await asyncio.sleep(3)  # let the first tail write and page faults settle
                sup, kids = processes(daemon.pid)
                kids = kids or [sup]
                before = report(f"{workers} worker(s), after start", sup, kids, snapshot)
                gap = head + 5
                await conn.execute("INSERT INTO change_log (id, kind) VALUES ($1, 'contexts')", gap)
                inode = snapshot.stat().st_ino

                async def remapped() -> bool:
                    if snapshot.stat().st_ino == inode:
                        return False
                    new = snapshot.stat().st_ino
                    return all(mapped_inodes(k, snapshot) == {new} for k in kids) and (
                        await ready_at(session, base, gap, workers)
                    )

                await until(remapped, 600, "reloaded and remapped")
                await asyncio.sleep(3)
                after = report(f"{workers} worker(s), after a reload", sup, kids, snapshot)
            await conn.close()
        finally:
            daemon.terminate()
            await asyncio.wait_for(daemon.wait(), 30)
        return before, after
    finally:
        await pg.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    results = {}
    for n in args.workers:
        with tempfile.TemporaryDirectory(prefix="cnamd-bench-memory-") as tmp:
            results[n] = await one(args.entries, n, Path(tmp))
    if 1 in results:
        (one_before, one_cache_before), (one_after, one_cache_after) = results[1]
        for n, ((before, cache_before), (after, cache_after)) in results.items():
            print(
                f"{n} worker(s): whole processes {before / one_before:.2f}x one worker's Pss"
                f" after start, {after / one_after:.2f}x after a reload; the cache"
                f" {cache_before / one_cache_before:.2f}x and {cache_after / one_cache_after:.2f}x"
            )


if __name__ == "__main__":
    asyncio.run(main())
