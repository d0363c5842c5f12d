"""Migrations on a real PostgreSQL: from empty, idempotent, and safe to race."""

from __future__ import annotations

import asyncio

import asyncpg

from cnamd.store.migrations import available, migrate, pending


async def test_migrations_apply_to_an_empty_database(empty_db_url: str) -> None:
    conn = await asyncpg.connect(empty_db_url)
    try:
        applied = await migrate(conn)
        assert [m.version for m in applied] == [m.version for m in available()]
        assert await pending(conn) == []
        tables = {
            r[0]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert {
            "tenants",
            "usergroups",
            "users",
            "cnam_entries",
            "phone_numbers",
            "api_keys",
            "change_log",
            "bulk_orders",
            "bulk_order_items",
            "tenant_networks",
            "schema_migrations",
        } <= tables
    finally:
        await conn.close()


async def test_migrating_twice_changes_nothing(empty_db_url: str) -> None:
    conn = await asyncpg.connect(empty_db_url)
    try:
        await migrate(conn)
        assert await migrate(conn) == []
        count = await conn.fetchval("SELECT count(*) FROM schema_migrations")
        assert count == len(available())
    finally:
        await conn.close()


async def test_concurrent_migrators_end_with_one_schema(empty_db_url: str) -> None:
    conns = [await asyncpg.connect(empty_db_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        # exactly one migrator applied each version; the others found nothing to do
        applied = sorted(m.version for result in results for m in result)
        assert applied == [m.version for m in available()]
        rows = await conns[0].fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in rows] == [m.version for m in available()]
    finally:
        for c in conns:
            await c.close()


async def test_failed_migration_leaves_nothing_behind(empty_db_url: str) -> None:
    conn = await asyncpg.connect(empty_db_url)
    try:
        await conn.execute("CREATE TABLE tenants (id int)")  # collides with migration 1
        try:
            await migrate(conn)
        except asyncpg.DuplicateTableError:
            pass
        else:  # pragma: no cover
            raise AssertionError("migration over a clashing table must fail")
        assert await conn.fetchval("SELECT to_regclass('cnam_entries')") is None
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 0
    finally:
        await conn.close()
