#!/usr/bin/env python3
"""SIP dips while lookups arrive together at the HTTP and SIP TCP fronts (turn_budget.py).

    .venv/bin/python bench/bench_front_burst.py [--pipelined 2000] [--connections 200]
        [--invites 2000] [--rounds 3]

Per round: ``cnamd serve --demo --workers 1`` on a fresh embedded PostgreSQL; UDP
INVITEs every 2 ms (500/s), each timed on arrival (arrival_clients.py), for 3 s idle,
then for 3 s in each of three phases:

- ``pipelined``: every 0.5 s one client writes ``--pipelined`` lookups of a demo global
  name in one write on one connection, as a PBX that pipelines does, and reads them;
- ``together``: every 0.5 s ``--connections`` clients, connected beforehand, each write
  one lookup at the same instant (a burst's first moment: issue #17's 200 callers);
- ``sip-tcp``: every 0.5 s one SIP TCP connection gets ``--invites`` INVITEs for a demo
  name in one write, as an SBC flushing its queue after a reconnect does, and reads the
  302s.

Prints, per phase, the dips' p99 and max on arrival, the worker's loop lag
(cnamd_event_loop_lag_seconds: its 20 ms timers, how many ran late), how many were
answered (named, or a 302) and how long a burst took from its first write
(``together``'s connections are made before). The daemon's code is whatever ``cnamd``
imports: set PYTHONPATH to another checkout's src to measure it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import loop_lag_reading
from bench_connection_storm import dips_for, idle_phase, line
from demo_daemon import demo

from cnamd.sip.dip_client import build_invite

LOOKUP = b"GET /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\n\r\n"


async def answers(reader: asyncio.StreamReader, count: int) -> int:
    """Read ``count`` answers; how many were 200."""
    named = 0
    for _ in range(count):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n", 1)[0])
        await reader.readexactly(length)
        named += head.startswith(b"HTTP/1.1 200 ")
    return named


async def pipelined(http: int, count: int) -> tuple[int, float]:
    """``count`` lookups in one write: how many were named, and the seconds they took."""
    reader, writer = await asyncio.open_connection("127.0.0.1", http)
    started = time.perf_counter()
    writer.write(LOOKUP * count)
    named = await answers(reader, count)
    took = time.perf_counter() - started
    writer.close()
    return named, took


async def together(http: int, count: int) -> tuple[int, float]:
    """One lookup on each of ``count`` connections made before: named, and the seconds
    from the first write to the last answer."""
    clients = [await asyncio.open_connection("127.0.0.1", http) for _ in range(count)]
    await asyncio.sleep(0.05)  # every connection accepted before the lookups go
    started = time.perf_counter()
    for _, writer in clients:
        writer.write(LOOKUP)
    named = sum(await asyncio.gather(*(answers(reader, 1) for reader, _ in clients)))
    took = time.perf_counter() - started
    for _, writer in clients:
        writer.close()
    return named, took


async def sip_tcp(sip: int, count: int) -> tuple[int, float]:
    """``count`` INVITEs in one write on one SIP TCP connection: how many got a 302, and
    the seconds from the write to the last answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sip)
    local = writer.get_extra_info("sockname")
    server = ("127.0.0.1", sip)
    invites = b"".join(
        build_invite("+492216698712", "+15550100", server, local, "tcp") for _ in range(count)
    )
    started = time.perf_counter()
    writer.write(invites)
    got, answers = 0, b""
    while got < count and (chunk := await reader.read(65536)):
        answers += chunk
        got = answers.count(b"SIP/2.0 302 ")
    took = time.perf_counter() - started
    writer.close()
    return got, took


async def phase(
    base: str,
    sip: int,
    name: str,
    burst: Callable[[], Awaitable[tuple[int, float]]],
    lag: dict[float, float],
) -> dict[float, float]:
    """Dips for 3 s with ``burst()`` started every 0.5 s; prints the phase's line."""
    dipping = asyncio.ensure_future(dips_for(("127.0.0.1", sip), 3.0))
    named, took = [], []
    for _ in range(6):
        await asyncio.sleep(0.5)
        answered, seconds = await burst()
        named.append(answered)
        took.append(seconds)
    during = await dipping
    now = await loop_lag_reading.buckets(base)
    print(
        f"{name:<9} {line('dip', during)}; {loop_lag_reading.described(lag, now)};"
        f" answered {sum(named)}, a burst answered in {statistics.median(took) * 1e3:.1f}"
        " ms (median)"
    )
    return now


async def phases(
    base: str, http: int, sip: int, *, pipeline: int, connections: int, invites: int
) -> None:
    lag = await idle_phase(base, sip, "idle      ")
    lag = await phase(base, sip, "pipelined", lambda: pipelined(http, pipeline), lag)
    lag = await phase(base, sip, "together", lambda: together(http, connections), lag)
    await phase(base, sip, "sip-tcp", lambda: sip_tcp(sip, invites), lag)


def sitting(pipeline: int, connections: int, invites: int) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="cnamd-front-burst-") as tmp,
        demo(Path(tmp), 1) as daemon,
    ):
        asyncio.run(
            phases(
                daemon.base,
                daemon.http,
                daemon.sip,
                pipeline=pipeline,
                connections=connections,
                invites=invites,
            )
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelined", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--invites", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.connections + 256:  # this client holds them too
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(args.connections + 256, hard), hard))
    print("command:", " ".join(["python", *sys.argv]), flush=True)
    print("PYTHONPATH:", os.environ.get("PYTHONPATH", "(unset)"), flush=True)
    for _ in range(args.rounds):
        sitting(args.pipelined, args.connections, args.invites)
