"""SQL for the small maps that say who is asking: tenants, people, numbers, networks, keys."""

from __future__ import annotations

import asyncpg

from cnamd.model import ContextRows

Connection = asyncpg.Connection

_KEYS = """
SELECT k.key_id, encode(k.secret_hash, 'hex') AS secret_hash, k.role, k.tenant_id, k.user_id,
       extract(epoch FROM k.expires_at)::float8 AS expires,
       coalesce(array_agg(g.tenant_id) FILTER (WHERE g.key_id IS NOT NULL), '{}') AS g_tenants,
       coalesce(array_agg(g.usergroup_id) FILTER (WHERE g.key_id IS NOT NULL), '{}') AS g_groups
  FROM api_keys k LEFT JOIN api_key_grants g ON g.key_id = k.key_id
 WHERE k.revoked_at IS NULL
 GROUP BY k.key_id
"""


async def load_context_rows(conn: Connection) -> ContextRows:
    """All context rows; call inside the same snapshot as the entry load."""
    tenants = await conn.fetch("SELECT id, slug, region FROM tenants")
    groups = await conn.fetch("SELECT id, tenant_id, slug FROM usergroups")
    users = await conn.fetch("SELECT id, tenant_id, usergroup_id, slug FROM users")
    numbers = await conn.fetch("SELECT number, tenant_id, user_id FROM phone_numbers")
    networks = await conn.fetch("SELECT network::text, tenant_id FROM tenant_networks")
    keys = await conn.fetch(_KEYS)
    return ContextRows(
        tenants=[(r[0], r[1], r[2]) for r in tenants],
        usergroups=[(r[0], r[1], r[2]) for r in groups],
        users=[(r[0], r[1], r[2], r[3]) for r in users],
        numbers=[(r[0], r[1], r[2]) for r in numbers],
        networks=[(r[0], r[1]) for r in networks],
        keys=[
            (
                r["key_id"],
                r["secret_hash"],
                r["role"],
                r["tenant_id"],
                r["user_id"],
                r["expires"],
                list(zip(r["g_tenants"], r["g_groups"], strict=True)),
            )
            for r in keys
        ],
    )
