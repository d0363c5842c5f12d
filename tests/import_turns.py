"""Imports' turns (store/imports.py, ``IMPORT_TURN``), as tests hold and watch them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg

from cnamd.store.imports import IMPORT_TURN


@contextlib.asynccontextmanager
async def import_turn_held(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection holding the import turn until the block ends: imports started
    inside wait before they read a row."""
    holder = await asyncpg.connect(db_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock($1)", IMPORT_TURN)
            yield holder
    finally:
        await holder.close()


async def turn_backends(conn: asyncpg.Connection, *, granted: bool) -> list[int]:
    """The backends holding the import turn (``granted``), or waiting for it."""
    rows = await conn.fetch(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted = $2"
        " AND (classid::bigint << 32 | objid::bigint) = $1",
        IMPORT_TURN,
        granted,
    )
    return [row["pid"] for row in rows]


async def waiting_for_a_turn(conn: asyncpg.Connection, count: int) -> list[int]:
    """The backends waiting for their import turn, once there are ``count`` of them
    (bounded: ten seconds)."""
    pids: list[int] = []
    for _ in range(1000):
        pids = await turn_backends(conn, granted=False)
        if len(pids) == count:
            return pids
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(pids)} imports wait their turn, not {count}")


async def a_turn_held(conn: asyncpg.Connection) -> None:
    """Returns once some backend holds the import turn (bounded: twenty seconds)."""
    for _ in range(2000):
        if await turn_backends(conn, granted=True):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no import took its turn")
