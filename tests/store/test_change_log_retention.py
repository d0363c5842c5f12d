"""Retention prunes the oldest changes, in batches, and never the newest ones."""

from __future__ import annotations

from typing import Any

from cnamd.store.change_log import change_log_size, prune_batch

Conn = Any


async def _fill(conn: Conn, rows: int, age_seconds: float) -> None:
    await conn.execute(
        "INSERT INTO change_log (id, at, kind) SELECT"
        " coalesce((SELECT max(id) FROM change_log), 0) + g,"
        " clock_timestamp() - make_interval(secs => $2), 'contexts'"
        " FROM generate_series(1, $1) AS g",
        rows,
        age_seconds,
    )


async def test_prune_deletes_old_rows_in_batches_and_keeps_the_newest(conn: Conn) -> None:
    await _fill(conn, 100, 3600)  # an hour old
    await _fill(conn, 10, 0)  # just written
    head = await conn.fetchval("SELECT max(id) FROM change_log")
    assert await prune_batch(conn, keep_rows=5, max_age=60, batch=40) == 40
    assert await prune_batch(conn, keep_rows=5, max_age=60, batch=40) == 40
    assert await prune_batch(conn, keep_rows=5, max_age=60, batch=40) == 20
    assert await prune_batch(conn, keep_rows=5, max_age=60, batch=40) == 0
    # the young rows stay whatever keep_rows says; the log keeps its head (next id)
    rows, size = await change_log_size(conn)
    assert rows == 10 and size > 0
    assert await conn.fetchval("SELECT max(id) FROM change_log") == head
    assert await conn.fetchval("SELECT min(id) FROM change_log") == head - 9


async def test_prune_keeps_the_newest_rows_whatever_their_age(conn: Conn) -> None:
    await _fill(conn, 30, 3600)
    assert await prune_batch(conn, keep_rows=12, max_age=0, batch=1000) == 18
    assert await prune_batch(conn, keep_rows=12, max_age=0, batch=1000) == 0
    assert await conn.fetchval("SELECT count(*) FROM change_log") == 12
