#!/usr/bin/env python3
"""Phone directories: a name search and an export over an enterprise of N names, from
PostgreSQL (what http/phones.py does) and, for contrast, by walking the cache's entries.

    .venv/bin/python bench/bench_phone_directory.py [--entries 1000000] [--searches 200]

Starts an embedded PostgreSQL in a temporary directory, fills the demo
enterprise with N names ("Firstname Lastname", 400 x 400 combinations) by COPY
with the change-log triggers off, and times, one at a time:
- ``store.directories.visible_numbers`` for a random 2-letter term, limit 32;
- the same for a 4-letter term;
- an export (no term, limit 2000);
- ``NameCache.entries()`` walked in full, keeping the enterprise's matches: the
  cache's only way to find names by their text.

Measured with 1M names on the 2-core VM (embedded PostgreSQL 17), cnamd at 4f11964:
    SQL name search, 2-letter term: p50 440.9, p99 680.9 ms
    SQL name search, 4-letter term: p50 312.0, p99 584.3 ms
    SQL export, 2000 names: p50 1041.6 ms, p99 1400.4 ms
    cache: NameCache.entries() walked for one term: 4115 ms
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg

from cnamd.cache.trie import CacheBuilder
from cnamd.model import LookupContext, Scope
from cnamd.store.demo import load_demo
from cnamd.store.directories import visible_numbers
from cnamd.store.embedded import EmbeddedPostgres
from cnamd.store.migrations import migrate

rng = random.Random(7)
SYLLABLES = ["an", "be", "ch", "do", "el", "fr", "ga", "ha", "jo", "ka", "li", "ma", "no", "pe"]


def word() -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()


FIRST = [word() for _ in range(400)]
LAST = [word() for _ in range(400)]


def names(count: int) -> Iterator[tuple[str, str]]:
    for i in range(count):
        yield f"+4930{i:08d}", f"{rng.choice(FIRST)} {rng.choice(LAST)}"[:15]


async def fill(conn: asyncpg.Connection, count: int) -> LookupContext:
    await migrate(conn)
    await load_demo(conn)
    tenant: int = await conn.fetchval("SELECT id FROM tenants WHERE slug = 'demo'")
    now = datetime.datetime.now(datetime.UTC)
    await conn.execute("SET session_replication_role = replica")
    await conn.copy_records_to_table(
        "cnam_entries",
        records=(("enterprise", tenant, k, n, "approved", now) for k, n in names(count)),
        columns=["scope", "tenant_id", "key", "name", "approval", "approved_at"],
    )
    await conn.execute("ANALYZE cnam_entries")
    return LookupContext(tenant)


async def timed(runs: int, call: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        took.append(time.perf_counter() - started)
    took.sort()
    return statistics.median(took) * 1000, took[int(len(took) * 0.99) - 1] * 1000


def walk_cache(count: int, tenant: int, term: str) -> float:
    builder = CacheBuilder()
    for key, name in names(count):
        builder.add(Scope.ENTERPRISE, tenant, key, name)
    cache = builder.build()
    started = time.perf_counter()
    found = [
        e
        for e in cache.entries()
        if e.scope is Scope.ENTERPRISE and e.owner == tenant and f" {term}" in f" {e.name.lower()}"
    ]
    took = time.perf_counter() - started
    assert found
    return took * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--searches", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg")
        url = await pg.start()
        try:
            conn = await asyncpg.connect(url)
            started = time.perf_counter()
            ctx = await fill(conn, args.entries)
            print(f"{args.entries} names loaded in {time.perf_counter() - started:.1f} s")

            def term(length: int) -> str:
                return rng.choice(FIRST + LAST)[:length].lower()

            for length in (2, 4):

                def search(n: int = length) -> Awaitable[object]:
                    return visible_numbers(conn, ctx, term(n), 32)

                p50, p99 = await timed(args.searches, search)
                print(f"SQL name search, {length}-letter term: p50 {p50:.1f}, p99 {p99:.1f} ms")
            p50, p99 = await timed(20, lambda: visible_numbers(conn, ctx, None, 2000))
            print(f"SQL export, 2000 names: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
            await conn.close()
        finally:
            await pg.stop()
    assert ctx.tenant_id is not None
    took = walk_cache(args.entries, ctx.tenant_id, "an")
    print(f"cache: NameCache.entries() walked for one term: {took:.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
