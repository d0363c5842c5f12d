"""SQL for served names (cnam_entries) and the change log that follows them."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg

from cnamd.model import Digest, Scope

SCOPE_BY_LABEL = {scope.label: scope for scope in Scope}

Connection = asyncpg.Connection


@dataclass(frozen=True, slots=True)
class Change:
    """One change-log row. ``name`` None: nothing is served under the key any more."""

    id: int
    at: dt.datetime
    kind: str
    scope: Scope | None
    owner: int
    key: str
    name: str | None
    old_name: str | None
    xact: int | None = None  # the writing transaction (None: logged before migration 5)
    # kind 'upstream' (migration 6): who answered (None: removed) and until when
    source: str | None = None
    expires_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Transactions:
    """Whole committed transactions from the change log, in commit order.

    ``oversized``: the next transaction has more changes than the caller may
    apply at once; ``changes`` then ends before it (and may be empty).
    """

    changes: list[Change]
    oversized: bool = False


def entry_hash(scope: Scope, owner: int, key: str, name: str) -> int:
    """Twin of SQL ``cnamd_entry_hash``: the first 64 bits of md5, as a signed bigint."""
    text = f"{scope.label}:{owner}:{key}:{name}".encode()
    value = int(hashlib.md5(text, usedforsecurity=False).hexdigest()[:16], 16)
    return value - (1 << 64) if value >= 1 << 63 else value


_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+(-[0-9]+)?")
SERVED = "SELECT scope, owner_id, key, name FROM cnam_entries WHERE approval = 'approved'"
DIGEST = (
    "SELECT count(*), coalesce(bit_xor(cnamd_entry_hash(scope, owner_id, key, name)), 0)"
    " FROM cnam_entries WHERE approval = 'approved'"
)


async def last_change_id(conn: Connection) -> int:
    value: int = await conn.fetchval("SELECT coalesce(max(id), 0) FROM change_log")
    return value


async def first_change_id(conn: Connection) -> int:
    """Lowest id still in the log (0 when empty): older changes were pruned."""
    value: int = await conn.fetchval("SELECT coalesce(min(id), 0) FROM change_log")
    return value


async def copy_served(conn: Connection, sink: Callable[[bytes], Coroutine[Any, Any, None]]) -> None:
    """Every served entry as (scope, owner_id, key, name) rows of a binary COPY stream,
    handed to ``sink`` in chunks (a row may straddle two; cache/copy_stream.py reads them).

    One COPY instead of a cursor's records: no Python object per row on this side,
    no text escaping to undo. Must run inside a REPEATABLE READ transaction together
    with ``digest_now`` so the load and its change id are one snapshot.
    """
    await conn.copy_from_query(SERVED, output=sink, format="binary")


async def export_snapshot(conn: Connection) -> str:
    """This transaction's snapshot, for ``share_snapshot`` on another connection."""
    snapshot: str = await conn.fetchval("SELECT pg_export_snapshot()")
    return snapshot


async def share_snapshot(conn: Connection, snapshot: str) -> None:
    """Make this (just begun, REPEATABLE READ) transaction see ``export_snapshot``'s data,
    so a digest can run beside the stream instead of after it."""
    if _SNAPSHOT_ID.fullmatch(snapshot) is None:
        raise ValueError(f"not a snapshot id: {snapshot!r}")
    # SET TRANSACTION SNAPSHOT takes no parameter; the id was just checked
    await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")


#: changes read first: a notification's catch-up fits in them; a transaction that fills
#: them is counted before more of it is fetched
_PROBE = 64

_CHANGE_COLUMNS = (
    "id, at, kind, scope, owner_id, key, name, old_name, xact::text::bigint AS xact,"
    " source, expires_at"
)


def _changes(rows: list[asyncpg.Record]) -> list[Change]:
    return [
        Change(
            r["id"],
            r["at"],
            r["kind"],
            SCOPE_BY_LABEL.get(r["scope"] or ""),
            r["owner_id"] or 0,
            r["key"] or "",
            r["name"],
            r["old_name"],
            r["xact"],
            r["source"],
            r["expires_at"],
        )
        for r in rows
    ]


async def changes_after(
    conn: Connection, after: int, upto: int | None = None, limit: int = 5000
) -> list[Change]:
    """Change-log rows with id > after (and <= upto), in id order."""
    rows = await conn.fetch(
        f"SELECT {_CHANGE_COLUMNS} FROM change_log"
        " WHERE id > $1 AND ($2::bigint IS NULL OR id <= $2) ORDER BY id LIMIT $3",
        after,
        upto,
        limit,
    )
    return _changes(rows)


async def _rest_of(conn: Connection, last: Change, bound: int) -> int:
    """How many changes of ``last``'s transaction follow it, counted up to ``bound``."""
    more: int = await conn.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM change_log"
        " WHERE id > $1 AND id <= $1 + $2 AND xact = $3::text::xid8) AS t",
        last.id,
        bound,
        str(last.xact),
    )
    return more


async def transactions_after(
    conn: Connection,
    after: int,
    upto: int | None = None,
    *,
    limit: int = 5000,
    max_rows: int = 20000,
) -> Transactions:
    """About ``limit`` changes after ``after``, cut at a transaction's end, never inside one.

    A transaction's ids are contiguous (``cnamd_next_change_id`` holds its lock
    to commit), so the one the first ``limit`` rows end in continues at the ids
    right after them; a transaction of more than ``max_rows`` changes is not
    returned at all (``oversized``): the caller loads it whole instead.
    ``upto`` must be a transaction boundary (a snapshot's last change id).
    """
    # Counted before fetched: an oversized transaction's rows are not wanted, and
    # fetching and decoding max_rows of them cost every worker's event loop ~0.1-1 s
    # each time it met one (bench/README.md, "CSV uploads beside dips and lookups").
    # A probe first, for the same reason: the ``limit`` rows of a big import that
    # will be loaded whole cost each follower ~10-20 ms of its loop per look.
    changes = await changes_after(conn, after, upto, min(limit, _PROBE))
    if len(changes) == _PROBE < limit:
        head, tail = changes[0], changes[-1]
        one = head.xact is not None and tail.xact == head.xact  # all one transaction so far
        if one and _PROBE + await _rest_of(conn, tail, max_rows + 1) > max_rows:
            return Transactions([], oversized=True)
        changes += await changes_after(conn, tail.id, upto, limit - _PROBE)
    if not changes or changes[-1].xact is None:
        return Transactions(changes)
    last = changes[-1]
    first = next(i for i, c in enumerate(changes) if c.xact == last.xact)
    more = await _rest_of(conn, last, max_rows + 1)
    if len(changes) - first + more > max_rows:
        return Transactions(changes[:first], oversized=first == 0)
    if not more:
        return Transactions(changes)
    rest = _changes(
        await conn.fetch(
            f"SELECT {_CHANGE_COLUMNS} FROM change_log"
            " WHERE id > $1 AND id <= $1 + $2 AND xact = $3::text::xid8 ORDER BY id",
            last.id,
            more,
            str(last.xact),
        )
    )
    return Transactions(changes + rest)


async def digest_now(conn: Connection) -> Digest:
    """The digest of what is served; inside a snapshot, of that snapshot."""
    row = await conn.fetchrow(DIGEST)
    last = await last_change_id(conn)
    assert row is not None
    return Digest(row[0], int(row[1]), last)


async def served_digest(conn: Connection) -> Digest:
    """The digest of what should be served, in its own snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await digest_now(conn)
