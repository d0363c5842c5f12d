#!/usr/bin/env python3
"""Load a ``number,name`` CSV (the Kamailio anchor's entries.csv) as global names.

    .venv/bin/python bench/load_entries.py DATA/entries.csv --embedded-dir DATA/pg
    .venv/bin/cnamd serve --embedded-dir DATA/pg --snapshot DATA/cache.snapshot ...

Bench data only: rows go in with COPY and the change-log triggers off (as a
restore would), so a million rows load in seconds; the daemon's full load
reads the table itself.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg

from cnamd.store.embedded import EmbeddedPostgres
from cnamd.store.migrations import migrate


def records(path: Path) -> Iterator[tuple[object, ...]]:
    now = datetime.datetime.now(datetime.UTC)
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            yield ("global", row["number"], row["name"], "approved", now)


async def load(path: Path, url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("DELETE FROM cnam_entries WHERE scope = 'global'")
        await conn.copy_records_to_table(
            "cnam_entries",
            records=records(path),
            columns=["scope", "key", "name", "approval", "approved_at"],
        )
        await conn.execute("ANALYZE cnam_entries")
        count: int = await conn.fetchval("SELECT count(*) FROM cnam_entries")
        return count
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", type=Path)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--database-url")
    where.add_argument("--embedded-dir", type=Path)
    args = parser.parse_args()
    embedded = EmbeddedPostgres(args.embedded_dir) if args.embedded_dir else None
    url = await embedded.start() if embedded else args.database_url
    try:
        started = time.monotonic()
        count = await load(args.csv, url)
        print(f"{count} entries loaded in {time.monotonic() - started:.1f} s")
    finally:
        if embedded is not None:
            await embedded.stop()


if __name__ == "__main__":
    asyncio.run(main())
