"""Demo data for ``cnamd serve --demo``: small, fixed, and safe to load twice.

The ids (tenant ``demo``, usergroup ``sales``, user ``alice``) and numbers are
what the README, scripts and tests use.
"""

from __future__ import annotations

import asyncpg

DEMO_TENANT = "demo"
DEMO_USERGROUP = "sales"
DEMO_USER = "alice"

ENTERPRISE_NAMES = [
    ("+492216698712", False, "John Doe"),
    ("+492216698713", False, "Jane Doe"),
    ("+4922166987", True, "ACME Cologne"),
]
USERGROUP_NAMES = [("+4930901820", False, "Sales Lead Berlin")]
USER_NAMES = [("+492216698713", False, "Jane (mobile)")]
GLOBAL_NAMES = [("+12125550001", False, "NYC Pizza"), ("+1800", True, "US Toll Free")]
PHONE_NUMBERS = [
    ("+492216698700", None, "ACME Cologne", True),
    ("+492216698701", DEMO_USER, "Alice", False),
]
NETWORKS = ["127.0.0.0/8", "::1/128"]


async def load_demo(conn: asyncpg.Connection) -> None:
    """Insert the demo tenant and its names unless they are there already."""
    async with conn.transaction():
        tenant = await conn.fetchval(
            "INSERT INTO tenants (slug, name, region) VALUES ($1, 'Demo Enterprise', 'DE')"
            " ON CONFLICT (slug) DO UPDATE SET slug = EXCLUDED.slug RETURNING id",
            DEMO_TENANT,
        )
        group = await conn.fetchval(
            "INSERT INTO usergroups (tenant_id, slug) VALUES ($1, $2) ON CONFLICT (tenant_id, slug)"
            " DO UPDATE SET slug = EXCLUDED.slug RETURNING id",
            tenant,
            DEMO_USERGROUP,
        )
        user = await conn.fetchval(
            "INSERT INTO users (tenant_id, usergroup_id, slug) VALUES ($1, $2, $3)"
            " ON CONFLICT (tenant_id, slug) DO UPDATE SET slug = EXCLUDED.slug RETURNING id",
            tenant,
            group,
            DEMO_USER,
        )
        await conn.executemany(
            "INSERT INTO tenant_networks (tenant_id, network) VALUES ($1, $2::cidr)"
            " ON CONFLICT DO NOTHING",
            [(tenant, n) for n in NETWORKS],
        )
        insert = (
            "INSERT INTO cnam_entries (scope, tenant_id, usergroup_id, user_id, key, is_prefix,"
            " name, approval, approved_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'approved', now())"
            " ON CONFLICT (scope, owner_id, key) DO NOTHING"
        )
        rows = (
            [("enterprise", tenant, None, None, *e) for e in ENTERPRISE_NAMES]
            + [("usergroup", tenant, group, None, *e) for e in USERGROUP_NAMES]
            + [("user", tenant, None, user, *e) for e in USER_NAMES]
            + [("global", None, None, None, *e) for e in GLOBAL_NAMES]
        )
        await conn.executemany(insert, rows)
        await conn.executemany(
            "INSERT INTO phone_numbers (tenant_id, user_id, number, caller_id_name, main, shared)"
            " VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (tenant_id, number) DO NOTHING",
            [
                (tenant, user if owner else None, number, name, main)
                for number, owner, name, main in PHONE_NUMBERS
            ],
        )
