"""SQL for served names (cnam_entries) and the change log that follows them."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeAlias

import asyncpg

from cnamd.model import Scope

SCOPE_BY_LABEL = {scope.label: scope for scope in Scope}

# An explicit alias: mypyc's build checks this module without asyncpg installed.
Connection: TypeAlias = asyncpg.Connection


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


@dataclass(frozen=True, slots=True)
class Digest:
    """Count and XOR of entry hashes of served entries, as of change ``last_change_id``.

    PostgreSQL computes it in one scan (~0.7 s per million rows); the feed keeps
    its own in step with each applied change (XOR out the old, XOR in the new),
    so a missed, doubled or misapplied change shows as a difference.
    """

    count: int
    hash_xor: int
    last_change_id: int


def entry_hash(scope: Scope, owner: int, key: str, name: str) -> int:
    """Twin of SQL ``cnamd_entry_hash``: the first 64 bits of md5, as a signed bigint."""
    text = f"{scope.label}:{owner}:{key}:{name}".encode()
    value = int(hashlib.md5(text, usedforsecurity=False).hexdigest()[:16], 16)
    return value - (1 << 64) if value >= 1 << 63 else value


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


async def stream_served(
    conn: Connection, batch: int = 20000
) -> AsyncIterator[list[tuple[Scope, int, str, str]]]:
    """Every served entry in batches, through a server-side cursor.

    Must run inside a REPEATABLE READ transaction together with
    ``last_change_id`` so the load and its change id are one snapshot.
    """
    cursor = await conn.cursor(SERVED)
    while True:
        rows = await cursor.fetch(batch)
        if not rows:
            return
        yield [(SCOPE_BY_LABEL[r[0]], r[1], r[2], r[3]) for r in rows]


async def changes_after(
    conn: Connection, after: int, upto: int | None = None, limit: int = 5000
) -> list[Change]:
    """Change-log rows with id > after (and <= upto), in id order."""
    rows = await conn.fetch(
        "SELECT id, at, kind, scope, owner_id, key, name, old_name FROM change_log"
        " WHERE id > $1 AND ($2::bigint IS NULL OR id <= $2) ORDER BY id LIMIT $3",
        after,
        upto,
        limit,
    )
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
        )
        for r in rows
    ]


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
