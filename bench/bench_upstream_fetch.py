"""The upstream HTTP client's CPU per request (issue #17), by hand.

A local aiohttp provider in its own process on CPU 1 answers every ``GET
/cnam/{number}`` at once; this process, on CPU 0 with uvloop, makes N requests 50 at a
time through ``HttpJsonSource.fetch`` on ``Chain``'s own session (``client_session``), and
prints its own CPU time per request (``time.process_time``). Rounds alternate between
the source as it is and the same source with aiohttp's per-request timeout put back
(``ClientTimeout(total=30)``, as before 2026-12-04), so drift on a shared machine hits
both alike.

Reproduce:
    .venv/bin/python bench/bench_upstream_fetch.py [N] [ROUNDS]
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time

import aiohttp
import uvloop
from demo_daemon import free_port

from cnamd.settings import SourceSettings
from cnamd.upstream.chain import client_session
from cnamd.upstream.http_json import HttpJsonSource

PROVIDER = """
import os, sys
from aiohttp import web
os.sched_setaffinity(0, {1})
async def cnam(request):
    return web.json_response({"name": "Fetch " + request.match_info["number"][-4:]})
app = web.Application()
app.router.add_get("/cnam/{number}", cnam)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


async def one_round(port: int, count: int, *, aiohttp_timeout: bool) -> float:
    """CPU microseconds per fetch over ``count`` fetches, 50 at a time."""
    session = client_session()
    settings = SourceSettings(
        name="bench",
        kind="http-json",
        url=f"http://127.0.0.1:{port}/cnam/{{e164}}",
        name_pointer="/name",
        timeout=30,
    )
    source = HttpJsonSource(settings, session, 64)
    if aiohttp_timeout:
        source.timeout = aiohttp.ClientTimeout(total=settings.timeout)

    async def asker(numbers: list[int]) -> None:
        for i in numbers:
            outcome = await source.fetch(f"+1414{i:07d}")
            assert outcome.name, outcome

    async def run() -> None:
        await asyncio.gather(*(asker(list(range(k, count, 50))) for k in range(50)))

    await run()  # the pool's 50 connections opened, the code warm
    started = time.process_time()
    await run()
    spent = time.process_time() - started
    await session.close()
    return spent / count * 1e6


async def main(port: int, count: int, rounds: int) -> None:
    os.sched_setaffinity(0, {0})
    results: dict[str, list[float]] = {"as it is": [], "aiohttp's timeout": []}
    for _ in range(rounds):
        results["as it is"].append(await one_round(port, count, aiohttp_timeout=False))
        results["aiohttp's timeout"].append(await one_round(port, count, aiohttp_timeout=True))
    for label, figures in results.items():
        print(
            f"{label:18} us per fetch: {[round(f) for f in figures]},"
            f" median {statistics.median(figures):.0f}"
        )


if __name__ == "__main__":
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs CPUs 0 and 1")
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    port = free_port()
    provider = subprocess.Popen([sys.executable, "-c", PROVIDER, str(port)])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until the provider listens
            try:
                with socket.create_connection(("127.0.0.1", port), 0.2):
                    break
            except OSError:
                time.sleep(0.05)
        uvloop.run(main(port, count, rounds))
    finally:
        provider.terminate()
        provider.wait()
