#!/usr/bin/env python3
"""SIP dips while a burst of TCP connections reaches a fresh worker (fd_table.py).

    .venv/bin/python bench/bench_connection_storm.py [--connections 1200] [--rounds 3]

Per round: ``cnamd serve --demo --workers 1`` on a fresh embedded PostgreSQL; UDP
INVITEs every 2 ms (500/s), each timed on arrival (arrival_clients.py), for 3 s idle,
then for 3 s from the moment ``--connections`` TCP connections to its HTTP port are
opened at once and kept open: what a PBX farm reconnecting after a restart, or a
burst of upstream fetches, does to a worker's descriptor count. Prints, per phase,
the dips' p99 and max, the worker's loop lag (cnamd_event_loop_lag_seconds) and the
worker's descriptor table (``FDSize``) before and after. The daemon's code is
whatever ``cnamd`` imports: set PYTHONPATH to another checkout's src to measure it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import loop_lag_reading
from arrival_clients import Dips
from demo_daemon import demo


def fd_size(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line[:7] == "FDSize:")


async def dips_for(sip: tuple[str, int], seconds: float) -> list[float]:
    """Latencies on arrival of INVITEs sent every 2 ms for ``seconds``."""
    dips = Dips(sip)
    start = time.perf_counter()
    sent = 0
    while (now := time.perf_counter() - start) < seconds:
        while sent * 0.002 <= now:
            dips.send()
            sent += 1
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.3)  # late answers still count
    dips.close()
    return [sample[1] for sample in dips.samples]


async def storm(http: tuple[str, int], count: int) -> list[socket.socket]:
    """``count`` connections opened at once (non-blocking connects, then awaited)."""
    loop = asyncio.get_running_loop()
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        socks.append(sock)
    await asyncio.gather(*(loop.sock_connect(sock, http) for sock in socks))
    return socks


def line(name: str, values: list[float]) -> str:
    q = statistics.quantiles(values, n=100)
    return (
        f"{name} p50 {q[49] * 1e3:.2f} ms  p99 {q[98] * 1e3:.2f} ms  max {max(values) * 1e3:.1f} ms"
    )


async def idle_phase(base: str, sip: int, label: str = "idle   ") -> dict[float, float]:
    """A second of dips to warm up, then 3 s of them alone: prints their line after
    ``label``; the loop-lag histogram after them, for the next phase to read from."""
    await dips_for(("127.0.0.1", sip), 1.0)  # warm-up, not counted
    lag = await loop_lag_reading.buckets(base)
    idle = await dips_for(("127.0.0.1", sip), 3.0)
    lag, before = await loop_lag_reading.buckets(base), lag
    print(f"{label}{line('dip', idle)}; {loop_lag_reading.described(before, lag)}")
    return lag


async def phases(base: str, http: int, sip: int, pid: int, count: int) -> None:
    lag = await idle_phase(base, sip)
    table = fd_size(pid)
    dipping = asyncio.ensure_future(dips_for(("127.0.0.1", sip), 3.0))
    await asyncio.sleep(0.5)
    opened = await storm(("127.0.0.1", http), count)
    during = await dipping
    lag, before = await loop_lag_reading.buckets(base), lag
    print(f"storm  {line('dip', during)}; {loop_lag_reading.described(before, lag)}")
    print(f"       {len(opened)} connections; the worker's FDSize {table} -> {fd_size(pid)}")
    for sock in opened:
        sock.close()


def sitting(count: int) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="cnamd-storm-bench-") as tmp,
        demo(Path(tmp), 1) as daemon,
    ):
        asyncio.run(phases(daemon.base, daemon.http, daemon.sip, daemon.proc.pid, count))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.connections + 256
    if soft < need:  # this client holds them too
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    print("command:", " ".join(["python", *sys.argv]), flush=True)
    print("PYTHONPATH:", os.environ.get("PYTHONPATH", "(unset)"), flush=True)
    for _ in range(args.rounds):
        sitting(args.connections)
