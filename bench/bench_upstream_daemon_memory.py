#!/usr/bin/env python3
"""Pss of a real ``cnamd serve --workers 2`` holding N upstream answers (issue 17), by hand.

    .venv/bin/python bench/bench_upstream_daemon_memory.py [N ...]   (default 0 100000 1000000)

For each N: an embedded PostgreSQL in a temporary directory, N rows COPYed into
``upstream_answers`` (90% names, 10% negative answers, expiring in a day), then the
daemon on it. Once ready (and 3 s more for the first tail and page faults), prints
each process's whole Pss (/proc/PID/smaps_rollup) and its Pss of the held-answers
file (``<snapshot>.upstream``), and whether any process read the answers whole from
PostgreSQL instead. Compare the workers' Pss across N: what a worker pays per answer.
"""

from __future__ import annotations

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
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    for i in range(n):
        name = None if i % 10 == 0 else f"Upstream Caller {i:07d}"
        yield (f"+1313{i:07d}", name, "opencnam", until)


async def fill(url: str, n: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        await conn.execute("SET session_replication_role = replica")  # no change log rows
        await conn.copy_records_to_table(
            "upstream_answers", records=rows(n), columns=["number", "name", "source", "expires_at"]
        )
        await conn.execute("ANALYZE upstream_answers")
    finally:
        await conn.close()


def pss_kb(pid: int, path: Path | None = None) -> int:
    """Whole Pss of ``pid`` (kB), or its Pss of the mappings of ``path``."""
    if path is None:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("Pss:"))
    total, inside = 0, False
    with open(f"/proc/{pid}/smaps") as fh:
        for line in fh:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:
                inside = len(fields) >= 6 and fields[5] == str(path)
            elif inside and fields[0] == "Pss:":
                total += int(fields[1])
    return total


def report(root: int, snapshot: Path, log_path: Path) -> None:
    held = Path(str(snapshot) + ".upstream")
    kids = [p.pid for p in psutil.Process(root).children() if "worker" in p.cmdline()]
    size = held.stat().st_size / MiB if held.exists() else 0.0
    for label, pid in [("supervisor", root)] + [(f"worker {p}", p) for p in kids]:
        whole = pss_kb(pid) / 1024
        mapped = pss_kb(pid, held) / 1024
        print(f"  {label:16} Pss {whole:7.1f} MiB, of it the held-answers file {mapped:5.1f}")
    read = "upstream answers read whole from PostgreSQL" in log_path.read_text()
    print(f"  file {size:.1f} MiB; answers read whole from PostgreSQL by a process: {read}")


async def ready(session: aiohttp.ClientSession, base: str) -> bool:
    try:
        async with session.get(base + "/readyz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def one(n: int, tmp: Path) -> None:
    pg = EmbeddedPostgres(tmp / "pg")
    url = await pg.start()
    try:
        started = time.monotonic()
        await fill(url, n)
        print(f"{n:,} upstream answers stored in {time.monotonic() - started:.1f} s")
        http = free_port()
        base = f"http://127.0.0.1:{http}"
        snapshot = tmp / "cache.snapshot"
        cmd = [
            sys.executable, "-m", "cnamd.cli", "serve", "--database-url", url,
            "--http-listen", f"127.0.0.1:{http}", "--sip-listen", f"127.0.0.1:{free_port()}",
            "--snapshot", str(snapshot), "--workers", "2",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNAMD_")}
        log_path = tmp / "daemon.log"
        with log_path.open("w") as log:
            daemon = await asyncio.create_subprocess_exec(
                *cmd, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        try:
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True),
                timeout=aiohttp.ClientTimeout(total=5),
            ) as session:
                deadline = time.monotonic() + 300
                while not await ready(session, base):
                    assert time.monotonic() < deadline, "not ready"
                    await asyncio.sleep(0.5)
            await asyncio.sleep(3)
            report(daemon.pid, snapshot, log_path)
        finally:
            daemon.terminate()
            await asyncio.wait_for(daemon.wait(), 30)
    finally:
        await pg.stop()


async def main() -> None:
    counts = [int(a) for a in sys.argv[1:]] or [0, 100_000, 1_000_000]
    for n in counts:
        with tempfile.TemporaryDirectory(prefix="cnamd-bench-upmem-") as tmp:
            await one(n, Path(tmp))


if __name__ == "__main__":
    asyncio.run(main())
