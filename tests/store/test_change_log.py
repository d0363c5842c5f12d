"""Every write that changes what is served is logged, once, in commit order."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from cnamd.model import Scope
from cnamd.store.entries import (
    Transactions,
    changes_after,
    entry_hash,
    served_digest,
    transactions_after,
)

Conn = Any


async def _tenant(conn: Conn) -> int:
    tid: int = await conn.fetchval(
        "INSERT INTO tenants (slug, name, region) VALUES ('acme', 'Acme', 'DE') RETURNING id"
    )
    return tid


INSERT = (
    "INSERT INTO cnam_entries (scope, tenant_id, key, name, approval, approved_at)"
    " VALUES ('enterprise', $1, $2, $3, $4, CASE WHEN $4 = 'approved' THEN now() END)"
)


async def test_insert_update_delete_are_logged_with_old_and_new_name(conn: Conn) -> None:
    tenant = await _tenant(conn)
    start = (await changes_after(conn, 0))[-1].id
    await conn.execute(INSERT, tenant, "+4930", "Old", "approved")
    await conn.execute("UPDATE cnam_entries SET name = 'New' WHERE key = '+4930'")
    await conn.execute("DELETE FROM cnam_entries WHERE key = '+4930'")
    log = [(c.key, c.name, c.old_name) for c in await changes_after(conn, start)]
    assert log == [("+4930", "Old", None), ("+4930", "New", "Old"), ("+4930", None, "New")]


async def test_pending_names_are_not_served_until_approved(conn: Conn) -> None:
    tenant = await _tenant(conn)
    start = (await changes_after(conn, 0))[-1].id
    await conn.execute(INSERT, tenant, "+4930", "Wait", "pending")
    assert await changes_after(conn, start) == []
    await conn.execute(
        "UPDATE cnam_entries SET approval = 'approved', approved_at = now() WHERE key = '+4930'"
    )
    [change] = await changes_after(conn, start)
    assert (change.scope, change.owner, change.name, change.old_name) == (
        Scope.ENTERPRISE,
        tenant,
        "Wait",
        None,
    )


async def test_insert_skipped_by_on_conflict_logs_nothing(conn: Conn) -> None:
    tenant = await _tenant(conn)
    await conn.execute(INSERT, tenant, "+4930", "First", "approved")
    before = await changes_after(conn, 0)
    await conn.execute(
        INSERT + " ON CONFLICT (scope, owner_id, key) DO NOTHING",
        tenant,
        "+4930",
        "Second",
        "approved",
    )
    assert await changes_after(conn, 0) == before


async def test_moving_a_key_logs_removal_and_addition(conn: Conn) -> None:
    tenant = await _tenant(conn)
    await conn.execute(INSERT, tenant, "+4930", "Berlin", "approved")
    start = (await changes_after(conn, 0))[-1].id
    await conn.execute("UPDATE cnam_entries SET key = '+4940' WHERE key = '+4930'")
    log = [(c.key, c.name, c.old_name) for c in await changes_after(conn, start)]
    assert log == [("+4930", None, "Berlin"), ("+4940", "Berlin", None)]


async def test_context_tables_log_one_row_per_statement(conn: Conn) -> None:
    tenant = await _tenant(conn)
    start = (await changes_after(conn, 0))[-1].id
    await conn.executemany(
        "INSERT INTO tenant_networks (tenant_id, network) VALUES ($1, $2::cidr)",
        [(tenant, "10.0.0.0/8")],
    )
    await conn.execute(
        "INSERT INTO phone_numbers (tenant_id, number) VALUES ($1, '+491'), ($1, '+492')", tenant
    )
    kinds = [c.kind for c in await changes_after(conn, start)]
    assert kinds == ["contexts", "contexts"]


async def test_concurrent_writers_get_gapless_ids_in_commit_order(db_url: str) -> None:
    setup = await asyncpg.connect(db_url)
    tenant = await _tenant(setup)
    await setup.close()

    async def writer(n: int) -> None:
        conn = await asyncpg.connect(db_url)
        try:
            for i in range(10):
                async with conn.transaction():
                    await conn.execute(INSERT, tenant, f"+49{n}{i:02d}", f"W{n}", "approved")
        finally:
            await conn.close()

    await asyncio.gather(*(writer(n) for n in range(1, 6)))
    check = await asyncpg.connect(db_url)
    try:
        ids = [c.id for c in await changes_after(check, 0, limit=1000)]
        assert ids == list(range(1, len(ids) + 1))
        assert len([i for i in ids]) == 1 + 50  # the tenant row, then 50 names
    finally:
        await check.close()


async def test_rolled_back_write_leaves_no_change(conn: Conn) -> None:
    tenant = await _tenant(conn)
    before = await changes_after(conn, 0)
    tx = conn.transaction()
    await tx.start()
    await conn.execute(INSERT, tenant, "+4930", "Ghost", "approved")
    await tx.rollback()
    assert await changes_after(conn, 0) == before


async def test_entry_hash_twins_agree_on_awkward_names(conn: Conn) -> None:
    for owner, key, name in [
        (0, "+1", "A"),
        (2**40, "+999999999999999", "Ünïcödé & [x]_"),
        (7, "+4930", "O'Brien (Sales)"),
    ]:
        sql = await conn.fetchval("SELECT cnamd_entry_hash('global', $1, $2, $3)", owner, key, name)
        assert sql == entry_hash(Scope.GLOBAL, owner, key, name)


async def test_digest_matches_the_python_twin(conn: Conn) -> None:
    tenant = await _tenant(conn)
    await conn.execute(INSERT, tenant, "+4930", "Berlin", "approved")
    await conn.execute(INSERT, tenant, "+4940", "Hamburg", "approved")
    await conn.execute(INSERT, tenant, "+4950", "Pending", "pending")
    digest = await served_digest(conn)
    assert digest.count == 2
    assert digest.hash_xor == (
        entry_hash(Scope.ENTERPRISE, tenant, "+4930", "Berlin")
        ^ entry_hash(Scope.ENTERPRISE, tenant, "+4940", "Hamburg")
    )


async def test_one_statement_logs_each_row_with_consecutive_ids(conn: Conn) -> None:
    tenant = await _tenant(conn)
    start = (await changes_after(conn, 0))[-1].id
    await conn.execute(
        "INSERT INTO cnam_entries (scope, tenant_id, key, name, approval, approved_at)"
        " SELECT 'enterprise', $1, '+4930' || g, 'N' || g,"
        " CASE WHEN g % 2 = 0 THEN 'approved' ELSE 'pending' END,"
        " CASE WHEN g % 2 = 0 THEN now() END FROM generate_series(1, 1000) g",
        tenant,
    )
    log = await changes_after(conn, start)
    assert [c.id for c in log] == list(range(start + 1, start + 501))
    assert {c.key for c in log} == {f"+4930{g}" for g in range(2, 1001, 2)}


async def test_one_update_that_swaps_names_and_approvals_keeps_the_digest(conn: Conn) -> None:
    """Several rows changed by one statement: renames, approvals, a moved key.

    Replaying the log over the state before must give the state after.
    """
    tenant = await _tenant(conn)
    for key, name, approval in [
        ("+491", "One", "approved"),
        ("+492", "Two", "pending"),
        ("+493", "Three", "approved"),
        ("+494", "Four", "approved"),
    ]:
        await conn.execute(INSERT, tenant, key, name, approval)
    start = (await changes_after(conn, 0))[-1].id
    served = {
        r["key"]: r["name"]
        for r in await conn.fetch("SELECT key, name FROM cnam_entries WHERE approval = 'approved'")
    }
    await conn.execute(
        "UPDATE cnam_entries SET"
        " name = CASE key WHEN '+491' THEN 'Uno' ELSE name END,"
        " approval = CASE key WHEN '+492' THEN 'approved' WHEN '+493' THEN 'pending'"
        "   ELSE approval END,"
        " approved_at = CASE key WHEN '+492' THEN now() WHEN '+493' THEN NULL"
        "   ELSE approved_at END,"
        " key = CASE key WHEN '+494' THEN '+495' ELSE key END"
    )
    for change in await changes_after(conn, start):
        assert served.get(change.key) == change.old_name
        if change.name is None:
            served.pop(change.key)
        else:
            served[change.key] = change.name
    assert served == {"+491": "Uno", "+492": "Two", "+495": "Four"}
    assert served == {
        r["key"]: r["name"]
        for r in await conn.fetch("SELECT key, name FROM cnam_entries WHERE approval = 'approved'")
    }


async def test_deleting_a_tenant_logs_the_removal_of_its_served_names(conn: Conn) -> None:
    tenant = await _tenant(conn)
    await conn.execute(INSERT, tenant, "+4930", "Berlin", "approved")
    await conn.execute(INSERT, tenant, "+4940", "Hamburg", "pending")
    start = (await changes_after(conn, 0))[-1].id
    await conn.execute("DELETE FROM tenants WHERE id = $1", tenant)
    entries = [c for c in await changes_after(conn, start) if c.kind == "entry"]
    assert [(c.key, c.name, c.old_name) for c in entries] == [("+4930", None, "Berlin")]


class _Counting(asyncpg.Connection):
    """A real connection that counts the rows its fetches bring back."""

    fetched = 0

    async def fetch(self, *args: Any, **kwargs: Any) -> list[Any]:
        rows: list[Any] = await super().fetch(*args, **kwargs)
        self.fetched += len(rows)
        return rows


async def _many(conn: Conn, tenant: int, first: int, count: int) -> None:
    """One statement, one transaction: ``count`` entries logged as one transaction."""
    await conn.execute(
        "INSERT INTO cnam_entries (scope, tenant_id, key, name, approval, approved_at)"
        " SELECT 'enterprise', $1, '+4930' || n, 'N', 'approved', now()"
        " FROM generate_series($2::int, $2::int + $3::int - 1) AS n",
        tenant,
        first,
        count,
    )


async def test_an_oversized_transaction_is_counted_not_fetched(conn: Conn, db_url: str) -> None:
    """Every follower meets each big import: it must not decode thousands of its rows
    on its event loop only to find that the import is to be loaded whole."""
    tenant = await _tenant(conn)
    start = (await changes_after(conn, 0))[-1].id
    await _many(conn, tenant, 0, 3000)
    reader: _Counting = await asyncpg.connect(db_url, connection_class=_Counting)
    try:
        batch = await transactions_after(reader, start, limit=5000, max_rows=2000)
        assert batch == Transactions([], oversized=True)
        assert reader.fetched <= 64
    finally:
        await reader.close()


async def test_transactions_are_cut_whole_around_the_probe(conn: Conn) -> None:
    """Small transactions, then one that fills the probe but fits: each returned whole."""
    tenant = await _tenant(conn)
    start = (await changes_after(conn, 0))[-1].id
    for n in range(10):
        await conn.execute(INSERT, tenant, f"+4940{n}", "One", "approved")
    await _many(conn, tenant, 0, 150)
    await _many(conn, tenant, 1000, 30)
    # 10 singles, then the 150: past the limit, but a transaction is never cut
    batch = await transactions_after(conn, start, limit=100, max_rows=200)
    assert len(batch.changes) == 160 and not batch.oversized
    # from the 150 on: it fills the probe, is counted (fits), is read whole with what follows
    after = batch.changes[9].id
    batch = await transactions_after(conn, after, limit=5000, max_rows=200)
    assert len(batch.changes) == 180 and not batch.oversized
    # the limit ends inside a 150 over max_rows: the singles come, the big one is left
    batch = await transactions_after(conn, start, limit=100, max_rows=120)
    assert len(batch.changes) == 10 and batch.oversized is False
    assert [c.id for c in batch.changes] == list(range(start + 1, start + 11))
