"""SQL for the small maps that say who is asking: tenants, people, numbers, networks, keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

import asyncpg

# An explicit alias: mypyc's build checks this module without asyncpg installed.
Connection: TypeAlias = asyncpg.Connection


@dataclass(frozen=True, slots=True)
class ContextRows:
    """Raw rows; ``cache.contexts`` turns them into lookup maps."""

    tenants: list[tuple[int, str, str]]  # id, slug, region
    usergroups: list[tuple[int, int, str]]  # id, tenant_id, slug
    users: list[tuple[int, int, int | None, str]]  # id, tenant_id, usergroup_id, slug
    numbers: list[tuple[str, int, int | None]]  # number, tenant_id, user_id
    networks: list[tuple[str, int]]  # cidr, tenant_id
    # live API keys: key_id, secret hash (hex), role, tenant_id, user_id,
    # expiry (Unix seconds or None), grants [(tenant_id, usergroup_id or None)]
    keys: list[KeyRow] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain data for a snapshot's metadata, so a warm start knows who asks."""
        return {
            "tenants": self.tenants,
            "usergroups": self.usergroups,
            "users": self.users,
            "numbers": self.numbers,
            "networks": self.networks,
            "keys": self.keys,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContextRows:
        def rows(name: str) -> list[Any]:
            return [tuple(r) for r in data.get(name, [])]

        keys = [(*r[:6], [tuple(g) for g in r[6]]) for r in data.get("keys", [])]
        return cls(
            rows("tenants"),
            rows("usergroups"),
            rows("users"),
            rows("numbers"),
            rows("networks"),
            keys,
        )


KeyRow = tuple[str, str, str, int | None, int | None, float | None, list[tuple[int, int | None]]]

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
