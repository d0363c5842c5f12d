"""Imports' turns to merge (store/imports.py, ``MERGE_LOCK``), as tests hold and watch them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg

from cnamd.store.imports import MERGE_LOCK


@contextlib.asynccontextmanager
async def merge_turn_held(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection holding the turn to merge until the block ends: imports started
    inside stage their rows and wait."""
    holder = await asyncpg.connect(db_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock($1)", MERGE_LOCK)
            yield holder
    finally:
        await holder.close()


async def waiting_for_a_turn(conn: asyncpg.Connection, count: int) -> list[int]:
    """The backends waiting for their turn to merge, once there are ``count`` of them
    (bounded: ten seconds)."""
    pids: list[int] = []
    for _ in range(1000):
        pids = [
            row["pid"]
            for row in await conn.fetch(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND (classid::bigint << 32 | objid::bigint) = $1",
                MERGE_LOCK,
            )
        ]
        if len(pids) == count:
            return pids
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(pids)} imports wait their turn to merge, not {count}")
