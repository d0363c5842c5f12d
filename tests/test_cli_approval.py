"""``cnamd approve`` and ``cnamd reject`` as an operator runs them beside the store."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg

from cnamd.store.demo import load_demo

CLI = [sys.executable, "-m", "cnamd.cli"]


async def cnamd(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNAMD_")}
    command, *rest = args
    return await asyncio.to_thread(
        subprocess.run,
        [*CLI, command, "--database-url", db_url, *rest],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )


async def test_pending_records_are_listed_approved_and_rejected_with_a_reason(
    db_url: str, conn: asyncpg.Connection
) -> None:
    await load_demo(conn)
    ids = [
        await conn.fetchval(
            "INSERT INTO cnam_records (tenant_id, value)"
            " SELECT id, $1 FROM tenants WHERE slug = 'demo' RETURNING id",
            value,
        )
        for value in ("ACME ONE", "ACME TWO")
    ]
    listed = await cnamd(db_url, "approve")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(i) for i in ids]
    assert lines[0].split("\t")[1] == "demo" and lines[0].endswith("\tACME ONE")

    done = await cnamd(db_url, "approve", str(ids[0]))
    assert done.returncode == 0 and done.stdout.startswith(f"approved {ids[0]} 'ACME ONE'")
    done = await cnamd(db_url, "reject", str(ids[1]), "--reason", "not yours")
    assert done.returncode == 0 and done.stdout.startswith(f"rejected {ids[1]}")
    rows = await conn.fetch(
        "SELECT approval, rejection_reason, approved_at IS NOT NULL AS stamped"
        " FROM cnam_records ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [("approved", None, True), ("rejected", "not yours", False)]
    assert (await cnamd(db_url, "approve")).stdout == ""


async def test_an_unknown_record_exits_2_naming_it(db_url: str, conn: asyncpg.Connection) -> None:
    done = await cnamd(db_url, "approve", "424242")
    assert done.returncode == 2
    assert "no CNAM record '424242'" in done.stderr
    done = await cnamd(db_url, "reject", "1")
    assert done.returncode == 2 and "--reason" in done.stderr
