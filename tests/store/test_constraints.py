"""The schema itself refuses bad data, whatever code writes it."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

Conn = Any


async def _tenant(conn: Conn, slug: str = "acme") -> int:
    tid: int = await conn.fetchval(
        "INSERT INTO tenants (slug, name, region) VALUES ($1, 'Acme', 'DE') RETURNING id", slug
    )
    return tid


async def _entry(
    conn: Conn,
    tenant: int,
    key: str,
    name: str = "John Doe",
    *,
    scope: str = "enterprise",
    approval: str = "approved",
) -> None:
    await conn.execute(
        "INSERT INTO cnam_entries (scope, tenant_id, key, name, approval, approved_at)"
        " VALUES ($1, $2, $3, $4, $5, CASE WHEN $5 = 'approved' THEN now() END)",
        scope,
        tenant,
        key,
        name,
        approval,
    )


async def test_duplicate_key_in_one_scope_is_refused(conn: Conn) -> None:
    tenant = await _tenant(conn)
    await _entry(conn, tenant, "+492216698712")
    with pytest.raises(asyncpg.UniqueViolationError):
        await _entry(conn, tenant, "+492216698712", "Other")


async def test_same_key_in_two_tenants_is_allowed(conn: Conn) -> None:
    a, b = await _tenant(conn, "a"), await _tenant(conn, "b")
    await _entry(conn, a, "+492216698712")
    await _entry(conn, b, "+492216698712")
    assert await conn.fetchval("SELECT count(*) FROM cnam_entries") == 2


async def test_second_main_number_is_refused(conn: Conn) -> None:
    tenant = await _tenant(conn)
    insert = (
        "INSERT INTO phone_numbers (tenant_id, number, main, shared) VALUES ($1, $2, true, true)"
    )
    await conn.execute(insert, tenant, "+492216698700")
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(insert, tenant, "+492216698701")


async def test_main_number_must_be_shared(conn: Conn) -> None:
    tenant = await _tenant(conn)
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(
            "INSERT INTO phone_numbers (tenant_id, number, main, shared)"
            " VALUES ($1, '+4930', true, false)",
            tenant,
        )


@pytest.mark.parametrize("column,value", [("approval", "maybe"), ("scope", "planet")])
async def test_bad_status_values_are_refused(conn: Conn, column: str, value: str) -> None:
    tenant = await _tenant(conn)
    values = {"approval": "approved", "scope": "enterprise", column: value}
    with pytest.raises(asyncpg.CheckViolationError):
        await _entry(conn, tenant, "+4930", scope=values["scope"], approval=values["approval"])


async def test_bulk_order_status_is_checked(conn: Conn) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("INSERT INTO bulk_orders (kind, status) VALUES ('import', 'exploded')")


@pytest.mark.parametrize("key", ["492216698712", "+", "+1234567890123456", "+49 221", "+49a"])
async def test_malformed_keys_are_refused(conn: Conn, key: str) -> None:
    tenant = await _tenant(conn)
    with pytest.raises(asyncpg.CheckViolationError):
        await _entry(conn, tenant, key)


async def test_entry_of_unknown_tenant_is_refused(conn: Conn) -> None:
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await _entry(conn, 424242, "+4930")


async def test_user_in_another_tenants_group_is_refused(conn: Conn) -> None:
    a, b = await _tenant(conn, "a"), await _tenant(conn, "b")
    group = await conn.fetchval(
        "INSERT INTO usergroups (tenant_id, slug) VALUES ($1, 'g') RETURNING id", a
    )
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await conn.execute(
            "INSERT INTO users (tenant_id, usergroup_id, slug) VALUES ($1, $2, 'bob')", b, group
        )


async def test_api_key_secret_must_be_a_hash(conn: Conn) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(
            "INSERT INTO api_keys (key_id, role, secret_hash) VALUES ('operator1', 'operator', $1)",
            b"short",
        )


async def test_approved_entry_needs_approval_time(conn: Conn) -> None:
    tenant = await _tenant(conn)
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(
            "INSERT INTO cnam_entries (scope, tenant_id, key, name, approval)"
            " VALUES ('enterprise', $1, '+4930', 'X', 'approved')",
            tenant,
        )
