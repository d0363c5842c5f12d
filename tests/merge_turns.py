"""Imports' turns (store/imports.py, ``IMPORT_TURN``), as tests hold and watch them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg

from cnamd.store.imports import IMPORT_TURN


@contextlib.asynccontextmanager
async def merge_turn_held(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection holding the import turn until the block ends: imports started
    inside wait before they read a row."""
    holder = await asyncpg.connect(db_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock($1)", IMPORT_TURN)
            yield holder
    finally:
        await holder.close()


async def waiting_for_a_turn(conn: asyncpg.Connection, count: int) -> list[int]:
    """The backends waiting for their import turn, once there are ``count`` of them
    (bounded: ten seconds)."""
    pids: list[int] = []
    for _ in range(1000):
        pids = [
            row["pid"]
            for row in await conn.fetch(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND (classid::bigint << 32 | objid::bigint) = $1",
                IMPORT_TURN,
            )
        ]
        if len(pids) == count:
            return pids
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(pids)} imports wait their turn, not {count}")
