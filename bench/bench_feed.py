#!/usr/bin/env python3
"""Full load from PostgreSQL, snapshot write/open, and commit-to-served propagation.

Run by hand (not a test):

    .venv/bin/python bench/bench_feed.py --entries 1000000
    .venv/bin/python bench/bench_feed.py --entries 10000000 --propagation 500

Starts its own embedded PostgreSQL in a temporary directory (or uses
--database-url), fills cnam_entries with COPY (90% full numbers, 10% prefixes;
80% global, the rest spread over 1000 tenants, 5000 usergroups and 50000
users), then measures what the daemon does at start-up and while following.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg

from cnamd.cache.directory import Directory
from cnamd.model import LookupContext
from cnamd.replica.feed import ChangeFeed
from cnamd.settings import load
from cnamd.store.embedded import EmbeddedPostgres
from cnamd.store.migrations import migrate

SCOPES = (
    ("global", 0.80, 1),
    ("enterprise", 0.08, 1000),
    ("usergroup", 0.06, 5000),
    ("user", 0.06, 50000),
)


def rows(count: int, seed: int) -> Iterator[tuple[object, ...]]:
    """(scope, tenant_id, usergroup_id, user_id, key, is_prefix, name, approval, approved_at)."""
    rng = random.Random(seed)
    seen: set[tuple[str, int, str]] = set()
    now = datetime.datetime.now(datetime.UTC)
    scopes = [s for s, _, _ in SCOPES]
    weights = [w for _, w, _ in SCOPES]
    owners = {s: n for s, _, n in SCOPES}
    made = 0
    while made < count:
        scope = rng.choices(scopes, weights)[0]
        owner = rng.randint(1, owners[scope]) if scope != "global" else 0
        prefix = rng.random() < 0.10
        length = rng.randint(4, 9) if prefix else rng.randint(10, 13)
        key = "+" + str(rng.randint(1, 9)) + "".join(rng.choices("0123456789", k=length - 1))
        if (scope, owner, key) in seen:
            continue
        seen.add((scope, owner, key))
        tenant = owner if scope == "enterprise" else (rng.randint(1, 1000) if owner else None)
        yield (
            scope,
            tenant,
            owner if scope == "usergroup" else None,
            owner if scope == "user" else None,
            key,
            prefix,
            f"Name {made}",
            "approved",
            now,
        )
        made += 1


async def fill(url: str, count: int) -> float:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        started = time.monotonic()
        # Bench data only: skip FK and change-log triggers, as a restore would.
        await conn.execute("SET session_replication_role = replica")
        await conn.copy_records_to_table(
            "cnam_entries",
            records=rows(count, 42),
            columns=[
                "scope",
                "tenant_id",
                "usergroup_id",
                "user_id",
                "key",
                "is_prefix",
                "name",
                "approval",
                "approved_at",
            ],
        )
        await conn.execute("ANALYZE cnam_entries")
        return time.monotonic() - started
    finally:
        await conn.close()


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def propagation(url: str, directory: Directory, samples: int) -> list[float]:
    conn = await asyncpg.connect(url)
    delays = []
    try:
        for i in range(samples):
            key = f"+99{i:010d}"
            started = time.perf_counter()
            await conn.execute(
                "INSERT INTO cnam_entries (scope, key, name, approval, approved_at)"
                " VALUES ('global', $1, 'Fresh', 'approved', now())",
                key,
            )
            deadline = started + 5
            while directory.resolve(key, LookupContext()) is None:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"change {key} not served within 5 s")
                await asyncio.sleep(0.0005)
            delays.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)  # an idle daemon between writes
    finally:
        await conn.close()
    return delays


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--propagation", type=int, default=300, help="samples")
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cnamd-bench-") as tmp:
        embedded = None
        url = args.database_url
        if not url:
            embedded = EmbeddedPostgres(Path(tmp) / "pg", database="bench")
            url = await embedded.start()
        try:
            fill_s = await fill(url, args.entries)
            settings = load(environ={}, overrides=[f"cache.snapshot_path={tmp}/cache.snapshot"])
            directory = Directory()
            feed = ChangeFeed(
                url,
                directory,
                settings.cache,
                settings.database,
                settings.sip.allow,
                poll_interval=1.0,
            )
            rss_before = rss_mib()
            started = time.monotonic()
            await feed.start()
            load_s = time.monotonic() - started
            snapshot = Path(tmp) / "cache.snapshot"
            size = snapshot.stat().st_size
            started = time.monotonic()
            from cnamd.cache.trie import NameCache

            mapped, _meta = NameCache.open(snapshot)
            open_s = time.monotonic() - started
            mapped.close()
            delays = await propagation(url, directory, args.propagation)
            await feed.stop()
        finally:
            if embedded is not None:
                await embedded.stop()

    q = statistics.quantiles(delays, n=100)
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}")
    print(f"entries: {args.entries:,} (COPY into PostgreSQL {fill_s:.1f} s)")
    print(f"full load (stream + build + snapshot write + map): {load_s:.2f} s")
    print(
        f"snapshot: {size / 1e6:.1f} MB ({size / args.entries:.1f} B/entry),"
        f" open {open_s * 1000:.1f} ms"
    )
    print(f"peak RSS during load: {rss_mib() - rss_before:.0f} MiB over {rss_before:.0f} MiB")
    print(
        f"propagation commit->served over {len(delays)} writes: p50 {q[49] * 1000:.1f} ms,"
        f" p99 {q[98] * 1000:.1f} ms, max {max(delays) * 1000:.1f} ms"
    )
    print("reproduce: .venv/bin/python bench/bench_feed.py " + " ".join(sys.argv[1:]))


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    asyncio.run(main())
