"""SQL for the small maps that say who is asking: tenants, people, numbers, networks."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

Connection = asyncpg.Connection


@dataclass(frozen=True, slots=True)
class ContextRows:
    """Raw rows; ``cache.contexts`` turns them into lookup maps."""

    tenants: list[tuple[int, str, str]]  # id, slug, region
    usergroups: list[tuple[int, int, str]]  # id, tenant_id, slug
    users: list[tuple[int, int, int | None, str]]  # id, tenant_id, usergroup_id, slug
    numbers: list[tuple[str, int, int | None]]  # number, tenant_id, user_id
    networks: list[tuple[str, int]]  # cidr, tenant_id


async def load_context_rows(conn: Connection) -> ContextRows:
    """All context rows; call inside the same snapshot as the entry load."""
    tenants = await conn.fetch("SELECT id, slug, region FROM tenants")
    groups = await conn.fetch("SELECT id, tenant_id, slug FROM usergroups")
    users = await conn.fetch("SELECT id, tenant_id, usergroup_id, slug FROM users")
    numbers = await conn.fetch("SELECT number, tenant_id, user_id FROM phone_numbers")
    networks = await conn.fetch("SELECT network::text, tenant_id FROM tenant_networks")
    return ContextRows(
        tenants=[(r[0], r[1], r[2]) for r in tenants],
        usergroups=[(r[0], r[1], r[2]) for r in groups],
        users=[(r[0], r[1], r[2], r[3]) for r in users],
        numbers=[(r[0], r[1], r[2]) for r in numbers],
        networks=[(r[0], r[1]) for r in networks],
    )
