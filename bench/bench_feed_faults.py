#!/usr/bin/env python3
"""Commit-to-served propagation while the daemon's feed connections are killed every second.

Run by hand (not a test):

    .venv/bin/python bench/bench_feed_faults.py --writes 300 --workers 2

Starts an embedded PostgreSQL in a temporary directory and ``cnamd serve --demo``
with ``--workers N`` on it. Then, one write at a time, commits a new name and
polls ``/v1/lookup`` (a new connection per poll, so any worker may answer)
until the name is served, while another task terminates every backend of the
daemon (its feeds, the supervisor's and the pool's) every ``--kill-every``
seconds. Prints the propagation p50/p99/max, the writes never served, and
the change id every worker reached (from /readyz) against the database's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg

from cnamd.store.embedded import EmbeddedPostgres

SPARED = {"application_name": "bench-writer"}
INSERT = (
    "INSERT INTO cnam_entries (scope, tenant_id, key, is_prefix, name, approval, approved_at)"
    " VALUES ('enterprise', $1, $2, false, $3, 'approved', now())"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def wait_ready(session: aiohttp.ClientSession, base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with session.get(base + "/readyz") as resp:
                if resp.status == 200:
                    return
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(0.2)
    raise SystemExit("daemon not ready")


async def killer(url: str, every: float, stop: asyncio.Event) -> int:
    conn = await asyncpg.connect(url, server_settings=SPARED)
    kills = 0
    while not stop.is_set():
        kills += await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND application_name <> 'bench-writer'"
        )
        await asyncio.sleep(every)
    await conn.close()
    return kills


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cnamd-bench-faults-"))
    pg = EmbeddedPostgres(tmp / "pg")
    url = await pg.start()
    http = free_port()
    base = f"http://127.0.0.1:{http}"
    cmd = [
        sys.executable, "-m", "cnamd.cli", "serve", "--demo", "--database-url", url,
        "--http-listen", f"127.0.0.1:{http}", "--sip-listen", f"127.0.0.1:{free_port()}",
        "--snapshot", str(tmp / "cache.snapshot"), "--workers", str(args.workers),
        "--set", "database.retry_max_seconds=1",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNAMD_")}
    log = (tmp / "daemon.log").open("w")
    daemon = await asyncio.create_subprocess_exec(
        *cmd, stdout=log, stderr=subprocess.STDOUT, env=env
    )
    timeout = aiohttp.ClientTimeout(total=3)
    connector = aiohttp.TCPConnector(force_close=True)
    try:
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            await wait_ready(session, base)
            writer = await asyncpg.connect(url, server_settings=SPARED)
            tid = await writer.fetchval("SELECT id FROM tenants WHERE slug = 'demo'")
            stop = asyncio.Event()
            killing = asyncio.create_task(killer(url, args.kill_every, stop))
            delays: list[float] = []
            unserved = 0
            for i in range(args.writes):
                key, name = f"+4975{i:06d}", f"Bench {i}"
                while True:
                    try:
                        await writer.execute(INSERT, tid, key, name)
                        break
                    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                        writer = await asyncpg.connect(url, server_settings=SPARED)
                committed = time.monotonic()
                deadline = committed + args.give_up
                while time.monotonic() < deadline:
                    try:
                        async with session.get(f"{base}/v1/lookup/{key}?tenant=demo") as resp:
                            if resp.status == 200 and (await resp.json())["name"] == name:
                                delays.append(time.monotonic() - committed)
                                break
                    except (aiohttp.ClientError, TimeoutError):
                        pass
                    await asyncio.sleep(0.002)
                else:
                    unserved += 1
            stop.set()
            kills = await killing
            head = await writer.fetchval("SELECT max(id) FROM change_log")
            ready: dict[str, list[dict[str, int]]] = {}
            for _ in range(50):  # a killed worker may still be catching up
                await asyncio.sleep(0.2)
                try:
                    async with session.get(base + "/readyz") as resp:
                        ready = json.loads(await resp.read())
                except (aiohttp.ClientError, TimeoutError):
                    continue
                if all(w["change_id"] == head for w in ready.get("workers", [])):
                    break
            await writer.close()
    finally:
        daemon.terminate()
        await asyncio.wait_for(daemon.wait(), 30)
        await pg.stop()
    delays.sort()
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))] if delays else float("nan")
    print(f"cnamd feed under faults: {os.cpu_count()} CPUs, --workers {args.workers}")
    print(f"  backends terminated: {kills} (every {args.kill_every} s)")
    print(f"  writes: {args.writes}, served: {len(delays)}, never served: {unserved}")
    if delays:
        print(
            f"  propagation p50 {statistics.median(delays) * 1000:.1f} ms,"
            f" p99 {p99 * 1000:.1f} ms, max {delays[-1] * 1000:.1f} ms"
        )
    workers = ready.get("workers") or []
    print(f"  database head {head}; workers at {[w['change_id'] for w in workers]}")
    print(f"  daemon log: {tmp / 'daemon.log'}")
    print(f"command: .venv/bin/python bench/bench_feed_faults.py {' '.join(sys.argv[1:])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill-every", type=float, default=1.0)
    parser.add_argument("--give-up", type=float, default=30.0, help="seconds per write")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
