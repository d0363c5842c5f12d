#!/usr/bin/env python3
"""``cnamd import`` end to end: a generated phone-book CSV into one enterprise.

Run by hand (not a test):

    .venv/bin/python bench/bench_import.py                 # 1,000,000 rows
    .venv/bin/python bench/bench_import.py --rows 100000 --database-url postgresql://...

Starts its own embedded PostgreSQL in a temporary directory (or uses
--database-url, into which it adds a tenant), writes N rows (85% E.164, 10%
national numbers written ``030 1234 5678``, 5% prefixes, 0.1% bad names) and
times the ``cnamd import`` subprocess (as an operator runs it) three times: into an empty book (all
inserted), the same file again (all unchanged) and a file with every tenth
name changed (updates). Then times ``cnamd export`` of the result.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from cnamd.store.embedded import EmbeddedPostgres
from cnamd.store.migrations import migrate

TENANT = "bench"


def write_csv(path: Path, rows: int, *, changed_every: int = 0) -> None:
    """``rows`` distinct Berlin numbers in a scrambled order (a stride coprime to ``rows``)."""
    stride = 7919 if rows % 7919 else 7907
    with path.open("w", encoding="utf-8") as out:
        out.write("phone,name,prefix\n")
        for i in range(rows):
            n = i * stride % rows
            digits = f"{10_000_000 + n:08d}"
            name = f"Caller {n}" if not (changed_every and n % changed_every == 0) else f"New {n}"
            kind = n % 1000
            if kind == 0:
                out.write(f"+4930{digits},Bad!{n},\n")  # rejected: '!' is not in the alphabet
            elif kind < 50:
                out.write(f"+49{digits},Block {n},true\n")
            elif kind < 150:
                out.write(f"030 {digits[:4]} {digits[4:]},{name},\n")
            else:
                out.write(f"+4930{digits},{name},false\n")


def cnamd(*args: str) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNAMD_")}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "cnamd.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    elapsed = time.monotonic() - started
    if done.returncode:
        sys.exit(f"cnamd {args[0]} failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed, (done.stdout or done.stderr).strip()


async def prepare(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        await conn.execute(
            "INSERT INTO tenants (slug, name, region) VALUES ($1, 'Bench', 'DE')"
            " ON CONFLICT (slug) DO NOTHING",
            TENANT,
        )
        await conn.execute(
            "DELETE FROM cnam_entries WHERE tenant_id = (SELECT id FROM tenants WHERE slug = $1)",
            TENANT,
        )
    finally:
        await conn.close()


def run(url: str, rows: int, workdir: Path, jobs: int | None) -> None:
    scope = ["--scope", f"enterprise:{TENANT}", "--database-url", url]
    flags = [] if jobs is None else ["--jobs", str(jobs)]
    source, changed = workdir / "entries.csv", workdir / "changed.csv"
    started = time.monotonic()
    write_csv(source, rows)
    write_csv(changed, rows, changed_every=10)
    print(f"generated 2 x {rows:,} rows in {time.monotonic() - started:.1f} s")
    for label, path in (("empty book", source), ("same file", source), ("10% changed", changed)):
        elapsed, summary = cnamd("import", str(path), *scope, *flags)
        load = os.getloadavg()[0]  # the machine may be shared: say how busy it was
        print(f"import, {label}: {elapsed:.1f} s, {rows / elapsed:,.0f} rows/s, load {load:.1f}")
        print(f"  {summary}")
    elapsed, summary = cnamd("export", str(workdir / "export.csv"), *scope)
    print(f"export: {elapsed:.1f} s  [{summary}]")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database-url", help="default: an embedded PostgreSQL in a temp dir")
    parser.add_argument("--jobs", type=int, help="cnamd import --jobs (default: its own)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cnamd-bench-import-") as tmp:
        workdir = Path(tmp)
        embedded = None if args.database_url else EmbeddedPostgres(workdir / "pg")
        url = args.database_url or await embedded.start()  # type: ignore[union-attr]
        try:
            await prepare(url)
            await asyncio.to_thread(run, url, args.rows, workdir, args.jobs)
        finally:
            if embedded is not None:
                await embedded.stop()
    jobs = "" if args.jobs is None else f" --jobs {args.jobs}"
    print(f"reproduce: .venv/bin/python bench/bench_import.py --rows {args.rows}{jobs}")


if __name__ == "__main__":
    asyncio.run(main())
