#!/usr/bin/env python3
"""Management API: a list page of 500 with 1M entries in the scope, and a range of 1M numbers.

    .venv/bin/python bench/bench_api.py [--entries 1000000] [--pages 2000]

Starts an embedded PostgreSQL in a temporary directory (or uses
--database-url), fills the demo enterprise with N entries, serves the real
application on a loopback socket and times, from an HTTP client in the same
process (so the figures include the client's own cost):
- ``GET /api/partner/enterprise/demo/cnam?count=500&next=...`` at random
  positions, one at a time (p50/p99);
- ``POST .../cnam-ranges`` covering 1,000,000 numbers on unaligned bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
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
from cnamd.store.demo import load_demo
from cnamd.store.embedded import EmbeddedPostgres
from cnamd.store.migrations import migrate


class Ready:
    def readiness(self) -> tuple[int, dict[str, Any]]:
        return 200, {}

    def metrics_extra(self) -> bytes:
        return b""


async def fill(url: str, entries: int) -> tuple[str, list[str]]:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        await load_demo(conn)
        started = time.perf_counter()
        await conn.execute(
            "INSERT INTO cnam_entries (scope, tenant_id, key, name, approved_at)"
            " SELECT 'enterprise', t.id, '+4969' || (10000000 + g)::text, 'Name ' || g, now()"
            " FROM tenants t, generate_series(1, $1) g WHERE t.slug = 'demo'"
            " ON CONFLICT DO NOTHING",
            entries,
        )
        await conn.execute("ANALYZE cnam_entries")
        print(f"filled {entries} entries in {time.perf_counter() - started:.1f} s (triggers on)")
        _, token = await apikeys.create_key(conn, Role.PARTNER, enterprises=["demo"])
        keys = [
            r["key"]
            for r in await conn.fetch(
                "SELECT key FROM cnam_entries e JOIN tenants t ON t.id = e.tenant_id"
                " WHERE t.slug = 'demo' AND e.scope = 'enterprise' ORDER BY random() LIMIT 5000"
            )
        ]
        return token, keys
    finally:
        await conn.close()


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1]


async def run(url: str, entries: int, pages: int) -> None:
    token, keys = await fill(url, entries)
    settings = load(environ={}, overrides=["ranges.max_span=1000000", "database.pool_max=4"])
    pool = await asyncpg.create_pool(url, min_size=2, max_size=4)
    server = TestServer(make_app(settings, Directory(), Ready(), pool), host="127.0.0.1")
    await server.start_server()
    base = f"http://127.0.0.1:{server.port}/api/partner/enterprise/demo"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as session:
            times = []
            for i in range(pages + 100):
                start = random.choice(keys)
                t0 = time.perf_counter()
                async with session.get(f"{base}/cnam?count=500&next=%2B{start[1:]}") as resp:
                    body = await resp.json()
                elapsed = time.perf_counter() - t0
                assert resp.status == 200 and body["cnam"], body
                if i >= 100:  # warm-up
                    times.append(elapsed * 1000)
            print(
                f"GET page of 500 ({pages} pages): p50 {pct(times, 0.5):.2f} ms,"
                f" p99 {pct(times, 0.99):.2f} ms, max {max(times):.2f} ms"
            )
            body_json = {"start": "+17005000017", "end": "+17006000016", "name": "Range"}
            t0 = time.perf_counter()
            async with session.post(f"{base}/cnam-ranges", json=body_json) as resp:
                stored = await resp.json()
            elapsed = time.perf_counter() - t0
            assert resp.status == 200, stored
            print(
                f"range of 1,000,000 numbers -> {len(stored['cnam'])} prefixes"
                f" in {elapsed * 1000:.1f} ms"
            )
    finally:
        await server.close()
        await pool.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    if args.database_url:
        await run(args.database_url, args.entries, args.pages)
        return
    with tempfile.TemporaryDirectory() as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg", database="bench")
        url = await pg.start()
        try:
            await run(url, args.entries, args.pages)
        finally:
            await pg.stop()


if __name__ == "__main__":
    asyncio.run(main())
