"""A phone book's entries: list by phone, put, delete, and ranges stored as prefixes.

Writes only touch ``cnam_entries``; its triggers append to the change log in
the same transaction, which is how every cache hears of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from cnamd.model import CnamEntry, Owner, Scope

__all__ = ["delete_entry", "list_entries", "put_entries"]

_OWNER_COLUMNS = "scope, tenant_id, usergroup_id, user_id"


def _owner_values(owner: Owner) -> tuple[str, int | None, int | None, int | None]:
    """The owner columns of a new row; the generated owner_id follows from them."""
    tenant = None if owner.scope is Scope.GLOBAL else owner.tenant_id
    group = owner.usergroup_id if owner.scope is Scope.USERGROUP else None
    user = owner.user_id if owner.scope is Scope.USER else None
    return owner.scope.label, tenant, group, user


async def list_entries(
    conn: asyncpg.Connection, owner: Owner, start: str | None, count: int
) -> tuple[list[CnamEntry], str | None]:
    """Up to ``count`` entries from phone ``start`` on, in phone order, and the
    phone that starts the next page (None: this was the last).

    Keyset paging over the (scope, owner_id, key) index: an insert or delete
    between pages never shifts or repeats what a client has not read yet.
    """
    rows = await conn.fetch(
        "SELECT key, name, is_prefix FROM cnam_entries"
        " WHERE scope = $1 AND owner_id = $2 AND ($3::text IS NULL OR key >= $3)"
        " ORDER BY key LIMIT $4",
        owner.scope.label,
        owner.owner_id,
        start,
        count + 1,
    )
    entries = [CnamEntry(r["key"], r["name"], r["is_prefix"]) for r in rows[:count]]
    following = rows[count]["key"] if len(rows) > count else None
    return entries, following


async def put_entries(
    conn: asyncpg.Connection, owner: Owner, keys: Sequence[str], name: str, *, prefix: bool
) -> None:
    """Create or replace ``name`` under every key, in one statement (all or nothing).

    Rows that already hold that name are left alone, so a repeated request
    logs no change.
    """
    await conn.execute(
        f"INSERT INTO cnam_entries ({_OWNER_COLUMNS}, key, is_prefix, name, approval, approved_at)"
        " SELECT $1, $2, $3, $4, k, $6, $7, 'approved', now() FROM unnest($5::text[]) AS k"
        " ON CONFLICT (scope, owner_id, key) DO UPDATE"
        " SET name = EXCLUDED.name, is_prefix = EXCLUDED.is_prefix, updated_at = now()"
        " WHERE (cnam_entries.name, cnam_entries.is_prefix)"
        " IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.is_prefix)",
        *_owner_values(owner),
        list(keys),
        prefix,
        name,
    )


async def delete_entry(conn: asyncpg.Connection, owner: Owner, keys: Sequence[str]) -> bool:
    """Delete the entry under the first of ``keys`` that holds one; False if none does."""
    deleted = await conn.fetchval(
        "WITH hit AS (SELECT id FROM cnam_entries"
        "  WHERE scope = $1 AND owner_id = $2 AND key = ANY($3::text[])"
        "  ORDER BY array_position($3::text[], key) LIMIT 1)"
        " DELETE FROM cnam_entries WHERE id IN (SELECT id FROM hit) RETURNING key",
        owner.scope.label,
        owner.owner_id,
        list(keys),
    )
    return deleted is not None
