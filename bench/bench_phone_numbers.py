#!/usr/bin/env python3
"""Phone numbers (seed 003): a range of 100,000 numbers created over HTTP (target < 5 s).

    .venv/bin/python bench/bench_phone_numbers.py [--numbers 100000] [--runs 3]

Starts an embedded PostgreSQL in a temporary directory (or uses
--database-url), serves the real application on a loopback socket and times,
from an HTTP client in the same process (so the figures include the client
parsing the answer, every uuid of the range twice):
- ``POST /api/confd/1.1/phone-numbers/ranges`` of N new numbers, each run in a
  fresh tenant (one set-based INSERT ... ON CONFLICT DO NOTHING);
- the same range again, where every number exists and none is created;
- ``GET /api/confd/1.1/phone-numbers?limit=100&offset=N/2`` in a tenant of N numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestServer

from cnamd.cache.directory import Directory
from cnamd.http.app import make_app
from cnamd.model import Role
from cnamd.settings import load
from cnamd.store import apikeys
from cnamd.store.migrations import migrate

BASE = "/api/confd/1.1/phone-numbers"


class Ready:
    def readiness(self) -> tuple[int, dict[str, Any]]:
        return 200, {}

    def metrics_extra(self) -> bytes:
        return b""


async def prepare(url: str, runs: int) -> str:
    """``runs`` empty tenants b0..bN and an operator key; returns the token."""
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        await conn.execute(
            "INSERT INTO tenants (slug, name, region)"
            " SELECT 'b' || g, 'Bench ' || g, 'US' FROM generate_series(0, $1 - 1) g"
            " ON CONFLICT DO NOTHING",
            runs,
        )
        _, token = await apikeys.create_key(conn, Role.OPERATOR)
        return token
    finally:
        await conn.close()


async def timed_post(
    session: aiohttp.ClientSession, url: str, body: dict[str, str], tenant: str
) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    async with session.post(url, json=body, headers={"Wazo-Tenant": tenant}) as resp:
        answer: dict[str, Any] = await resp.json()
        assert resp.status == 201, answer
    return time.perf_counter() - started, answer


async def run(url: str, numbers: int, runs: int) -> None:
    token = await prepare(url, runs)
    settings = load(environ={}, overrides=[f"ranges.max_span={numbers}"])
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    server = TestServer(make_app(settings, Directory(), Ready(), pool), host="127.0.0.1")
    await server.start_server()
    base = f"http://127.0.0.1:{server.port}{BASE}"
    start = 12_000_000_000
    body = {"start_number": f"+{start}", "end_number": f"+{start + numbers - 1}"}
    try:
        async with aiohttp.ClientSession(headers={"X-Auth-Token": token}) as session:
            fresh, again = [], []
            for run_no in range(runs):
                elapsed, answer = await timed_post(session, f"{base}/ranges", body, f"b{run_no}")
                assert len(answer["created"]) == answer["total"] == numbers, answer["total"]
                fresh.append(elapsed)
                elapsed, answer = await timed_post(session, f"{base}/ranges", body, f"b{run_no}")
                assert (len(answer["created"]), answer["total"]) == (0, numbers)
                again.append(elapsed)
            pages = []
            for _ in range(20):
                started = time.perf_counter()
                async with session.get(
                    f"{base}?limit=100&offset={numbers // 2}", headers={"Wazo-Tenant": "b0"}
                ) as resp:
                    listed = await resp.json()
                pages.append(time.perf_counter() - started)
                assert listed["total"] == numbers and len(listed["items"]) == 100
    finally:
        await server.close()
        await pool.close()
    print(
        f"POST /ranges of {numbers:,} new numbers ({runs} runs):"
        f" median {statistics.median(fresh):.2f} s, max {max(fresh):.2f} s"
    )
    print(
        f"POST /ranges of {numbers:,} existing numbers (0 created):"
        f" median {statistics.median(again):.2f} s, max {max(again):.2f} s"
    )
    print(
        f"GET page of 100 at offset {numbers // 2:,} of {numbers:,}:"
        f" median {statistics.median(pages) * 1000:.1f} ms"
    )
    print(f"reproduce: .venv/bin/python bench/bench_phone_numbers.py --numbers {numbers}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--numbers", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    if args.database_url:
        await run(args.database_url, args.numbers, args.runs)
        return
    from cnamd.store.embedded import EmbeddedPostgres

    with tempfile.TemporaryDirectory() as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg", database="bench")
        url = await pg.start()
        try:
            await run(url, args.numbers, args.runs)
        finally:
            await pg.stop()


if __name__ == "__main__":
    asyncio.run(main())
