#!/usr/bin/env python3
"""A daemon following a hot standby: commit-on-primary -> served latency, the queries it
costs the standby, and the change log's size after a 1M-row import, before and after
retention.

Run by hand (not a test):

    .venv/bin/python bench/bench_standby.py [--writes 300] [--poll 0.05] [--rows 1000000]

Starts a primary and a streaming standby from the embedded binaries (ReplicatedPair)
in a temporary directory and one ``cnamd serve --workers 1`` on the standby.

1. latency: ``--writes`` single-row commits on the primary, ~10 a second; for each,
   the time from the commit's return to the first HTTP lookup on the standby's
   daemon that answers the new name (looked up every ~1 ms, keep-alive).
2. queries: the standby database's ``xact_commit`` (pg_stat_database, counted on the
   standby itself) over 10 s, with the daemon idle, then under 100 writes/s on the
   primary; the bench's own sampling queries are subtracted.
3. retention: ``--rows`` names inserted in one transaction on the primary (the
   triggers log as many changes), change_log's rows and pg_total_relation_size;
   then a pruning (keep 10,000 rows, age 0) and VACUUM (once the standby's feedback
   has moved on, 11 s); then a second import of
   the same size, to show the freed space is reused (the log stops growing); a
   VACUUM FULL at the end gives the size of the rows kept, for scale.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg
from demo_daemon import wait_ready

from cnamd.change_log_pruner import ChangeLogPruner
from cnamd.settings import DatabaseSettings
from cnamd.store.change_log import change_log_size
from cnamd.store.demo import load_demo
from cnamd.store.migrations import migrate
from cnamd.store.replicated_pair import ReplicatedPair

DB = "cnamd"
INSERT = (
    "INSERT INTO cnam_entries (scope, tenant_id, key, is_prefix, name, approval, approved_at)"
    " VALUES ('enterprise', $1, $2, false, $3, 'approved', now())"
)
BULK = (
    "INSERT INTO cnam_entries (scope, tenant_id, key, is_prefix, name, approval, approved_at)"
    " SELECT 'enterprise', $1, $3 || lpad(g::text, 7, '0'), false, 'Bulk ' || g,"
    " 'approved', now() FROM generate_series(1, $2) AS g"
)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


async def latency(pair: ReplicatedPair, base: str, writes: int, tenant: int) -> list[float]:
    conn = await asyncpg.connect(pair.primary.url(DB))
    found: list[float] = []
    try:
        async with aiohttp.ClientSession(base) as http:
            for i in range(writes):
                number, name = f"+4922166{i:06d}", f"Lat {i}"
                await conn.execute(INSERT, tenant, number, name)
                committed = time.perf_counter()
                deadline = committed + 5
                while time.perf_counter() < deadline:
                    async with http.get(f"/v1/lookup/{number}?tenant=demo") as resp:
                        if resp.status == 200 and (await resp.json())["name"] == name:
                            found.append(time.perf_counter() - committed)
                            break
                    await asyncio.sleep(0.001)
                # ~10 a second, jittered so commits do not lock onto the poll's phase
                pause = 0.1 + random.uniform(-0.03, 0.03) - (time.perf_counter() - committed)
                await asyncio.sleep(max(0.0, pause))
    finally:
        await conn.close()
    return found


async def standby_qps(pair: ReplicatedPair, seconds: float, write_rate: int, tenant: int) -> float:
    """Transactions per second on the standby's database, the bench's own excluded."""
    probe = await asyncpg.connect(pair.standby.url(DB))
    writer = await asyncpg.connect(pair.primary.url(DB))
    count = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    try:
        await probe.execute("SELECT pg_stat_clear_snapshot()")
        before = await probe.fetchval(count)
        started = time.perf_counter()
        i = 0
        while time.perf_counter() - started < seconds:
            if write_rate:
                await writer.execute(INSERT, tenant, f"+4922177{i:06d}", f"Load {i}")
                i += 1
                await asyncio.sleep(max(0.0, started + i / write_rate - time.perf_counter()))
            else:
                await asyncio.sleep(0.5)
        await asyncio.sleep(0.6)  # the statistics are flushed at most once a second
        await probe.execute("SELECT pg_stat_clear_snapshot()")
        after = await probe.fetchval(count)
        own = 3  # the probe's own statements (this one, the clear, the first read)
        return float(after - before - own) / (time.perf_counter() - started)
    finally:
        await probe.close()
        await writer.close()


async def retention(pair: ReplicatedPair, rows: int, tenant: int) -> list[str]:
    conn = await asyncpg.connect(pair.primary.url(DB))
    out = []
    try:
        out.append("log before import: " + _fmt(await change_log_size(conn)))
        started = time.perf_counter()
        await conn.execute(BULK, tenant, rows, "+1555", timeout=3600)
        out.append(
            f"after a {rows:,}-row import ({time.perf_counter() - started:.1f} s): "
            + ""
            + _fmt(await change_log_size(conn))
        )
        settings = DatabaseSettings(change_log_max_age=0, change_log_keep_rows=10_000)
        started = time.perf_counter()
        deleted = await ChangeLogPruner(pair.primary.url(DB), settings).prune()
        took = time.perf_counter() - started
        out.append(
            f"after pruning ({deleted:,} rows deleted in {took:.1f} s, batches of 5,000): "
            + ""
            + _fmt(await change_log_size(conn))
        )
        await settled()
        await conn.execute("VACUUM change_log")
        out.append("after VACUUM: " + _fmt(await change_log_size(conn)))
        await conn.execute(BULK, tenant, rows, "+1556", timeout=3600)
        out.append(f"after a second {rows:,}-row import: " + _fmt(await change_log_size(conn)))
        await ChangeLogPruner(pair.primary.url(DB), settings).prune()
        await settled()
        await conn.execute("VACUUM change_log")
        out.append("after pruning + VACUUM again: " + _fmt(await change_log_size(conn)))
        # not what the pruner does: VACUUM FULL locks out writers while it rewrites
        await conn.execute("VACUUM FULL change_log", timeout=3600)
        out.append("after VACUUM FULL (for scale): " + _fmt(await change_log_size(conn)))
    finally:
        await conn.close()
    return out


async def settled() -> None:
    """Wait out the standby's hot_standby_feedback (every wal_receiver_status_interval,
    10 s): until it reports a newer xmin, the primary keeps the deleted rows as if a
    query on the standby might still read them, and VACUUM frees nothing."""
    await asyncio.sleep(11)


def _fmt(found: tuple[int, int]) -> str:
    return f"{found[0]:,} rows, {mb(found[1])}"


async def prepare(pair: ReplicatedPair) -> int:
    admin = await asyncpg.connect(pair.primary.url())
    await admin.execute(f"CREATE DATABASE {DB}")
    await admin.close()
    conn = await asyncpg.connect(pair.primary.url(DB))
    try:
        await migrate(conn)
        await load_demo(conn)
        tenant: int = await conn.fetchval("SELECT id FROM tenants WHERE slug = 'demo'")
    finally:
        await conn.close()
    return tenant


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--poll", type=float, default=0.05, help="database.poll_interval")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--ports", default="25432,25433,28080,25060")
    args = parser.parse_args()
    pg1, pg2, http, sip = (int(p) for p in args.ports.split(","))
    root = Path(tempfile.mkdtemp(prefix="bench-standby-"))
    pair = ReplicatedPair.create(root, pg1, pg2)
    daemon = None
    try:
        tenant = asyncio.run(prepare(pair))
        time.sleep(1)
        base = f"http://127.0.0.1:{http}"
        daemon = subprocess.Popen(
            [
                sys.executable, "-m", "cnamd.cli", "serve", "--workers", "1",
                "--database-url", pair.standby.url(DB),
                "--http-listen", f"127.0.0.1:{http}", "--sip-listen", f"127.0.0.1:{sip}",
                "--snapshot", "", "--set", f"database.poll_interval={args.poll}",
                "--set", "log.level=warning",
            ],
            env={k: v for k, v in os.environ.items() if not k.startswith("CNAMD_")},
        )  # fmt: skip
        wait_ready(base, timeout=60)
        print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} (shared, noisy)")
        found = asyncio.run(latency(pair, base, args.writes, tenant))
        print(
            f"commit on primary -> served via standby (poll {args.poll * 1000:g} ms):"
            f" n={len(found)}/{args.writes} p50 {statistics.median(found) * 1000:.1f} ms"
            f" p99 {pct(found, 0.99) * 1000:.1f} ms max {max(found) * 1000:.1f} ms"
        )
        idle = asyncio.run(standby_qps(pair, 10, 0, tenant))
        busy = asyncio.run(standby_qps(pair, 10, 100, tenant))
        print(f"queries/s on the standby: idle {idle:.1f}, primary at 100 writes/s {busy:.1f}")
        daemon.terminate()
        daemon.wait(timeout=15)
        daemon = None
        for line in asyncio.run(retention(pair, args.rows, tenant)):
            print("change log " + line)
    finally:
        if daemon is not None:
            daemon.kill()
        pair.stop()
    print("command: .venv/bin/python bench/bench_standby.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
