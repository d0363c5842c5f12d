"""Retention of the change log: its oldest rows deleted in small batches, one pruner at a time.

Ids are gapless while rows are kept, so a follower that had not read the pruned
rows sees a jump and reloads whole (replica/feed.py); the newest rows are never
pruned, so ``max(id) + 1`` (the next id) never goes back.
"""

from __future__ import annotations

from typing import TypeAlias

import asyncpg

Connection: TypeAlias = asyncpg.Connection

#: pg_try_advisory_lock key: one pruner per database, whichever daemon's loader it is
PRUNE_LOCK = 7210315377642189602

#: the oldest rows of one batch and whether each is past the age bound; ``at`` grows
#: with ``id`` (ids are handed out under a lock held to commit), so those past it
#: are a prefix, and a look never reads more than one batch of the index
_BATCH = """
SELECT id, at < clock_timestamp() - make_interval(secs => $2) AS old
  FROM change_log WHERE id <= $1 ORDER BY id LIMIT $3
"""


async def prune_batch(conn: Connection, *, keep_rows: int, max_age: float, batch: int) -> int:
    """Delete up to ``batch`` of the oldest rows that are older than ``max_age`` seconds
    and not among the newest ``keep_rows``; how many were deleted (0: nothing left).

    One short transaction: row locks on the deleted rows only, so writers and
    followers never wait on it for long.
    """
    async with conn.transaction():
        head: int = await conn.fetchval("SELECT coalesce(max(id), 0) FROM change_log")
        rows = await conn.fetch(_BATCH, head - keep_rows, float(max_age), batch)
        last = None
        for row in rows:
            if not row["old"]:
                break
            last = row["id"]
        if last is None:
            return 0
        status: str = await conn.execute(
            "DELETE FROM change_log WHERE id >= $1 AND id <= $2", rows[0]["id"], last
        )
    return int(status.rsplit(maxsplit=1)[-1])


async def change_log_size(conn: Connection) -> tuple[int, int]:
    """Rows in the change log, and its size on disk (table, indexes, TOAST) in bytes."""
    row = await conn.fetchrow(
        "SELECT count(*), pg_total_relation_size('change_log') FROM change_log"
    )
    assert row is not None
    return int(row[0]), int(row[1])
