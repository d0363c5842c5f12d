"""Bulk import and export of a phone book against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

import asyncpg
import pytest

from cnamd.errors import InvalidRequest
from cnamd.model import CnamEntry, Owner, Scope
from cnamd.phonebook_csv import HEADER, Rejected, format_entry, read_lines, read_lines_async
from cnamd.store import imports
from cnamd.store.imports import ImportReport, export_entries, import_entries
from cnamd.store.owners import owner_from_spec
from import_turns import import_turn_held, turn_backends, waiting_for_a_turn

Conn = Any
MAX = 15


@pytest.fixture
async def acme(conn: Conn) -> Owner:
    """Enterprise ``acme`` in region DE, with usergroup ``sales`` and user ``alice``."""
    tenant = await conn.fetchval(
        "INSERT INTO tenants (slug, name, region) VALUES ('acme', 'Acme', 'DE') RETURNING id"
    )
    group = await conn.fetchval(
        "INSERT INTO usergroups (tenant_id, slug) VALUES ($1, 'sales') RETURNING id", tenant
    )
    await conn.execute(
        "INSERT INTO users (tenant_id, usergroup_id, slug) VALUES ($1, $2, 'alice')", tenant, group
    )
    return await owner_from_spec(conn, "enterprise:acme")


async def run(
    conn: Conn, owner: Owner, *lines: str, replace: bool = False, executor: Executor | None = None
) -> tuple[ImportReport, list[Rejected]]:
    rejected: list[Rejected] = []
    report = await import_entries(
        conn,
        owner,
        read_lines(lines),
        max_name_length=MAX,
        replace=replace,
        on_reject=rejected.append,
        executor=executor,
    )
    return report, rejected


async def book(conn: Conn, owner: Owner) -> dict[str, tuple[str, bool]]:
    rows = await conn.fetch(
        "SELECT key, name, is_prefix FROM cnam_entries WHERE scope = $1 AND owner_id = $2",
        owner.scope.label,
        owner.owner_id,
    )
    return {r["key"]: (r["name"], r["is_prefix"]) for r in rows}


async def log_after(conn: Conn, after: int) -> list[tuple[str, str | None, str | None]]:
    rows = await conn.fetch(
        "SELECT key, name, old_name FROM change_log WHERE id > $1 AND kind = 'entry' ORDER BY id",
        after,
    )
    return sorted((r["key"], r["name"], r["old_name"]) for r in rows)


async def last_change(conn: Conn) -> int:
    value: int = await conn.fetchval("SELECT coalesce(max(id), 0) FROM change_log")
    return value


async def test_good_rows_go_in_approved_with_national_numbers_read_in_the_tenants_region(
    conn: Conn, acme: Owner
) -> None:
    start = await last_change(conn)
    report, rejected = await run(
        conn,
        acme,
        "phone,name,prefix",
        "+492216698712,John Doe,false",
        "0221 6698713,Jane Doe,",
        "+4922166987,ACME Cologne,true",
        '0049 30 901820,"Doe, Max",0',
    )
    assert (report, rejected) == (ImportReport(inserted=4), [])
    assert await book(conn, acme) == {
        "+492216698712": ("John Doe", False),
        "+492216698713": ("Jane Doe", False),
        "+4922166987": ("ACME Cologne", True),
        "+4930901820": ("Doe, Max", False),
    }
    approved = await conn.fetchval(
        "SELECT bool_and(approval = 'approved' AND approved_at IS NOT NULL) FROM cnam_entries"
    )
    assert approved
    assert await log_after(conn, start) == [
        ("+4922166987", "ACME Cologne", None),
        ("+492216698712", "John Doe", None),
        ("+492216698713", "Jane Doe", None),
        ("+4930901820", "Doe, Max", None),
    ]


async def test_changed_names_are_updated_and_same_names_count_as_unchanged(
    conn: Conn, acme: Owner
) -> None:
    await run(conn, acme, "phone,name", "+492216698712,John", "+492216698713,Jane")
    start = await last_change(conn)
    report, _ = await run(
        conn,
        acme,
        "name,phone,prefix",  # columns in any order
        "John,+492216698712,",
        "Janet,+492216698713,",
        "Max,+4930901820,",
    )
    assert report == ImportReport(inserted=1, updated=1, unchanged=1)
    # the unchanged row logs nothing
    assert await log_after(conn, start) == [
        ("+492216698713", "Janet", "Jane"),
        ("+4930901820", "Max", None),
    ]


async def test_a_flag_change_alone_is_an_update(conn: Conn, acme: Owner) -> None:
    await run(conn, acme, "phone,name,prefix", "+4930901820,Berlin,false")
    report, _ = await run(conn, acme, "phone,name,prefix", "+4930901820,Berlin,true")
    assert report == ImportReport(updated=1)
    assert await book(conn, acme) == {"+4930901820": ("Berlin", True)}


@pytest.mark.parametrize("pool", [None, "process"])
async def test_bad_rows_are_reported_by_line_and_the_good_rows_committed(
    conn: Conn, acme: Owner, pool: str | None
) -> None:
    executor = ProcessPoolExecutor(1) if pool else None
    report, rejected = await run(
        conn,
        acme,
        "phone,name,prefix",
        "+492216698712,John Doe,false",
        "12,Too Short,",
        "",  # blank lines are skipped but counted
        "+492216698713,J\u00f6rg,",
        "+492216698714,A Name Much Too Long,",
        "+492216698715,Flag,maybe",
        "+492216698716",
        '+492216698717,"Unclosed,',
        "+49221669871,Prefix with a bad flag,yes",
        "+492216698718,Last Good,1",
        executor=executor,
    )
    if executor:
        executor.shutdown()
    assert [(r.line, r.phone, r.name) for r in rejected] == [
        (3, "12", "Too Short"),
        (5, "+492216698713", "J\u00f6rg"),
        (6, "+492216698714", "A Name Much Too Long"),
        (7, "+492216698715", "Flag"),
        (8, "+492216698716", ""),
        (9, "", ""),
        (10, "+49221669871", "Prefix with a bad flag"),
    ]
    reasons = [r.reason for r in rejected]
    assert reasons[0] == "phone: '12' is a local number; add its area code"
    assert reasons[1].startswith("name: 'J\u00f6rg' has '\u00f6'")
    assert reasons[2] == "name: 'A Name Much Too Long' is 20 characters long; the limit is 15"
    assert reasons[3] == "prefix: 'maybe' is not a prefix flag: true, false, 1, 0 or empty"
    assert reasons[4] == "line: 1 field; the header has 3 (phone,name,prefix)"
    assert reasons[5] == "line: unbalanced quotes"
    assert report == ImportReport(inserted=2, rejected=7)
    assert set(await book(conn, acme)) == {"+492216698712", "+492216698718"}


async def test_a_file_of_only_bad_rows_commits_nothing(conn: Conn, acme: Owner) -> None:
    await run(conn, acme, "phone,name", "+492216698712,John")
    start = await last_change(conn)
    report, rejected = await run(conn, acme, "phone,name", "nope,John", "+492216698712,")
    assert report == ImportReport(rejected=2)
    assert [r.line for r in rejected] == [2, 3]
    assert await book(conn, acme) == {"+492216698712": ("John", False)}
    assert await last_change(conn) == start


async def test_the_last_row_for_a_phone_wins_and_earlier_ones_are_superseded(
    conn: Conn, acme: Owner
) -> None:
    report, rejected = await run(
        conn,
        acme,
        "phone,name,prefix",
        "+492216698712,First,",
        "0221 6698712,Second,",
        "+4930901820,Other,",
        "+49 221 6698712,Third,",
    )
    assert report == ImportReport(inserted=2, superseded=2)
    assert rejected == [
        Rejected(2, "+492216698712", "First", "phone: superseded by line 5"),
        Rejected(3, "+492216698712", "Second", "phone: superseded by line 5"),
    ]
    assert (await book(conn, acme))["+492216698712"] == ("Third", False)


async def test_a_repeated_phone_counts_once_against_the_book_before(
    conn: Conn, acme: Owner
) -> None:
    await run(conn, acme, "phone,name", "+492216698712,Old", "+492216698713,Kept")
    report, rejected = await run(
        conn,
        acme,
        "phone,name",
        "+492216698712,New",
        "+4930901820,Max",
        "+492216698712,Old",  # back to what the book held
        "+4930901820,Maximilian",
        "+492216698713,Kept",
        "+4930901820,Max",
    )
    assert report == ImportReport(inserted=1, unchanged=2, superseded=3)
    assert sorted((r.line, r.reason) for r in rejected) == [
        (2, "phone: superseded by line 4"),
        (3, "phone: superseded by line 7"),
        (5, "phone: superseded by line 7"),
    ]
    assert await book(conn, acme) == {
        "+492216698712": ("Old", False),
        "+492216698713": ("Kept", False),
        "+4930901820": ("Max", False),
    }


async def test_a_first_load_with_repeats_inserts_and_logs_each_phone_once(
    conn: Conn, acme: Owner
) -> None:
    start = await last_change(conn)
    report, rejected = await run(
        conn,
        acme,
        "phone,name",
        "+492216698712,One",
        "+492216698713,Two",
        "+492216698712,Three",
    )
    assert report == ImportReport(inserted=2, superseded=1)
    assert [(r.line, r.reason) for r in rejected] == [(2, "phone: superseded by line 4")]
    assert await book(conn, acme) == {
        "+492216698712": ("Three", False),
        "+492216698713": ("Two", False),
    }
    assert await log_after(conn, start) == [
        ("+492216698712", "Three", None),
        ("+492216698713", "Two", None),
    ]


async def test_replace_keeps_every_listed_phone_in_a_big_book(conn: Conn, acme: Owner) -> None:
    """Thousands of rows on both sides: the delete's plan must not scan the file per entry."""
    await run(conn, acme, "phone,name", *(f"+4930{n:08d},N{n}" for n in range(0, 6000)))
    report, _ = await run(
        conn, acme, "phone,name", *(f"+4930{n:08d},N{n}" for n in range(3000, 9000)), replace=True
    )
    assert report == ImportReport(inserted=3000, unchanged=3000, deleted=3000)
    assert len(await book(conn, acme)) == 6000


async def test_replace_deletes_the_entries_the_file_does_not_list(conn: Conn, acme: Owner) -> None:
    await run(conn, acme, "phone,name", "+492216698712,John", "+492216698713,Jane")
    other = await owner_from_spec(conn, "usergroup:acme:sales")
    await run(conn, other, "phone,name", "+492216698713,Jane")
    start = await last_change(conn)
    report, _ = await run(conn, acme, "phone,name", "+492216698712,John", replace=True)
    assert report == ImportReport(unchanged=1, deleted=1)
    assert await book(conn, acme) == {"+492216698712": ("John", False)}
    assert await book(conn, other) == {"+492216698713": ("Jane", False)}  # another owner's
    assert await log_after(conn, start) == [("+492216698713", None, "Jane")]


async def test_replace_deletes_nothing_when_a_row_is_rejected(conn: Conn, acme: Owner) -> None:
    await run(conn, acme, "phone,name", "+492216698712,John", "+492216698713,Jane")
    report, _ = await run(
        conn, acme, "phone,name", "+492216698712,John", "+492216698713,J@ne!", replace=True
    )
    assert report == ImportReport(unchanged=1, rejected=1, replace_refused=True)
    assert set(await book(conn, acme)) == {"+492216698712", "+492216698713"}


async def test_each_scope_writes_its_own_owner_columns(conn: Conn, acme: Owner) -> None:
    for spec in ("global", "enterprise:acme", "usergroup:acme:sales", "user:acme:alice"):
        owner = await owner_from_spec(conn, spec)
        report, _ = await run(conn, owner, "phone,name", f"+1212555000{owner.scope},Name")
        assert report == ImportReport(inserted=1)
    rows = await conn.fetch(
        "SELECT scope, tenant_id IS NOT NULL AS t, usergroup_id IS NOT NULL AS g,"
        " user_id IS NOT NULL AS u FROM cnam_entries ORDER BY key"
    )
    assert [tuple(r) for r in rows] == [
        ("user", True, False, True),
        ("usergroup", True, True, False),
        ("enterprise", True, False, False),
        ("global", False, False, False),
    ]


async def test_global_national_numbers_are_rejected_for_want_of_a_region(conn: Conn) -> None:
    owner = await owner_from_spec(conn, "global")
    report, [rejected] = await run(conn, owner, "phone,name", "0221 6698712,John")
    assert report == ImportReport(rejected=1)
    assert "no default region" in rejected.reason


async def test_export_then_import_changes_nothing(conn: Conn, acme: Owner) -> None:
    await run(
        conn,
        acme,
        "phone,name,prefix",
        "+492216698712,John Doe,",
        '+492216698713,"Doe, Jane",',
        "+4922166987,ACME Cologne,true",
    )
    await conn.execute("UPDATE cnam_entries SET approval = 'pending', approved_at = NULL")
    exported = [HEADER] + [format_entry(e) async for e in export_entries(conn, acme)]
    assert exported == [
        "phone,name,prefix\n",
        "+4922166987,ACME Cologne,true\n",
        "+492216698712,John Doe,false\n",
        '+492216698713,"Doe, Jane",false\n',
    ]
    start = await last_change(conn)
    report, _ = await run(conn, acme, *exported, replace=True)
    assert report == ImportReport(unchanged=3)
    assert await last_change(conn) == start


async def test_export_of_an_empty_book_is_empty(conn: Conn, acme: Owner) -> None:
    assert [e async for e in export_entries(conn, acme)] == []


async def test_rows_stream_from_an_async_byte_source(conn: Conn, acme: Owner) -> None:
    """What an HTTP handler feeds: ``request.content`` yields lines of bytes."""

    async def body() -> AsyncIterator[bytes]:
        for line in (b"phone,name\r\n", b"+492216698712,John\r\n", b"+492216698713,J\xff\r\n"):
            yield line

    rejected: list[Rejected] = []
    report = await import_entries(
        conn, acme, read_lines_async(body()), max_name_length=MAX, on_reject=rejected.append
    )
    assert report == ImportReport(inserted=1, rejected=1)
    assert rejected[0].line == 3 and "U+FFFD" in rejected[0].reason


async def test_a_bad_header_fails_the_import_and_rolls_back(conn: Conn, acme: Owner) -> None:
    with pytest.raises(InvalidRequest, match="unknown column 'number'"):
        await run(conn, acme, "number,name", "+492216698712,John")
    with pytest.raises(InvalidRequest, match="no header line"):
        await run(conn, acme)
    # the connection is clean: the staging table went with the rollback
    assert (await run(conn, acme, "phone,name", "+492216698712,John"))[0].inserted == 1


async def test_a_failure_after_rows_were_copied_leaves_the_book_as_it_was(
    conn: Conn, acme: Owner
) -> None:
    await run(conn, acme, "phone,name", "+492216698712,John")
    start = await last_change(conn)

    async def failing() -> AsyncIterator[tuple[int, str, str, str]]:
        yield (2, "+492216698712", "Johnny", "")
        yield (3, "+492216698713", "Jane", "")
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await import_entries(conn, acme, failing(), max_name_length=MAX)
    assert await book(conn, acme) == {"+492216698712": ("John", False)}
    assert await last_change(conn) == start


async def test_export_reads_through_a_cursor_in_batches(conn: Conn, acme: Owner) -> None:
    lines = ["phone,name"] + [f"+4930901{n:04d},N{n}" for n in range(25)]
    await run(conn, acme, *lines)
    entries = [e async for e in export_entries(conn, acme, batch=10)]
    assert len(entries) == 25
    assert entries[0] == CnamEntry("+49309010000", "N0")


async def test_an_owner_in_another_tenant_is_untouched(conn: Conn, acme: Owner) -> None:
    tenant = await conn.fetchval(
        "INSERT INTO tenants (slug, name, region) VALUES ('beta', 'Beta', 'US') RETURNING id"
    )
    beta = Owner(Scope.ENTERPRISE, tenant, tenant, "US")
    await run(conn, beta, "phone,name", "(212) 555-0101,Pizza")
    await run(conn, acme, "phone,name", "+492216698712,John", replace=True)
    assert await book(conn, beta) == {"+12125550101": ("Pizza", False)}


async def test_connection_stays_usable_after_an_import(conn: asyncpg.Connection) -> None:
    owner = await owner_from_spec(conn, "global")
    await run(conn, owner, "phone,name", "+12125550101,Pizza")
    await run(conn, owner, "phone,name", "+12125550102,Pasta")  # temp table name is free again
    assert await conn.fetchval("SELECT count(*) FROM cnam_entries") == 2


async def test_an_import_waits_for_the_turn_another_holds_before_its_copy(
    conn: Conn, acme: Owner, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One import at a time per database, its COPY included: the second waits before it
    reads a row, and the wait is logged (only when there is one)."""
    caplog.set_level("INFO", logger="cnamd.store.imports")
    waiting = "waiting for another import to end"
    importer = await asyncpg.connect(db_url)
    read: list[str] = []

    def lines() -> Iterator[str]:
        for line in ("phone,name", "+492216698712,John"):
            read.append(line)
            yield line

    try:
        async with import_turn_held(db_url):
            task = asyncio.ensure_future(
                import_entries(importer, acme, read_lines(lines()), max_name_length=MAX)
            )
            await waiting_for_a_turn(conn, 1)
            assert read == [] and not task.done()  # not a row read, let alone staged
            assert await book(conn, acme) == {}
        report = await asyncio.wait_for(task, 10)
        assert report == ImportReport(inserted=1)
        assert await book(conn, acme) == {"+492216698712": ("John", False)}
        assert caplog.text.count(waiting) == 1
        await run(importer, acme, "phone,name", "+492216698713,Jane")  # nobody ahead of it
        assert caplog.text.count(waiting) == 1
        assert not await turn_backends(conn, granted=True)
    finally:
        await importer.close()


async def test_an_import_keeps_its_turn_until_its_changes_are_served(
    conn: Conn, acme: Owner, db_url: str
) -> None:
    """``settled`` is asked for the import's last change id after the commit, and the
    next import waits until it returns: a cache's reload of the one does not run beside
    the other's parsing and merge."""
    first, second = await asyncpg.connect(db_url), await asyncpg.connect(db_url)
    asked: list[int] = []
    was_asked, served = asyncio.Event(), asyncio.Event()

    async def settled(change_id: int) -> None:
        asked.append(change_id)
        was_asked.set()
        await served.wait()

    try:
        settling = asyncio.ensure_future(
            import_entries(
                first,
                acme,
                read_lines(["phone,name", "+492216698712,John", "+492216698713,Jane"]),
                max_name_length=MAX,
                settled=settled,
            )
        )
        await asyncio.wait_for(was_asked.wait(), 5)
        assert asked == [await last_change(conn)]  # committed: visible, its last change
        assert await book(conn, acme) != {}
        after = asyncio.ensure_future(run(second, acme, "phone,name", "+492216698714,Joe"))
        await waiting_for_a_turn(conn, 1)
        assert not settling.done() and not after.done()
        served.set()
        assert (await asyncio.wait_for(settling, 10)).inserted == 2
        assert (await asyncio.wait_for(after, 10))[0].inserted == 1
        assert not await turn_backends(conn, granted=True)
    finally:
        await first.close()
        await second.close()


async def test_an_import_that_changes_nothing_does_not_wait_to_be_served(
    conn: Conn, acme: Owner
) -> None:
    await run(conn, acme, "phone,name", "+492216698712,John")

    async def settled(change_id: int) -> None:
        raise AssertionError(f"asked to wait for change {change_id}")

    report = await import_entries(
        conn,
        acme,
        read_lines(["phone,name", "+492216698712,John"]),
        max_name_length=MAX,
        settled=settled,
    )
    assert report == ImportReport(unchanged=1)


async def test_a_cache_that_never_serves_the_import_holds_the_turn_for_a_bound(
    conn: Conn, acme: Owner, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A feed reloading from scratch or cut off from the database: the import is
    answered and the turn given up after _SETTLE_TIMEOUT, with a warning."""
    monkeypatch.setattr(imports, "_SETTLE_TIMEOUT", 0.2)
    never = asyncio.Event()

    async def settled(change_id: int) -> None:
        await never.wait()

    report = await asyncio.wait_for(
        import_entries(
            conn,
            acme,
            read_lines(["phone,name", "+492216698712,John"]),
            max_name_length=MAX,
            settled=settled,
        ),
        10,
    )
    assert report == ImportReport(inserted=1)
    assert "were not served here in time" in caplog.text
    assert not await turn_backends(conn, granted=True)


async def test_a_failed_import_gives_its_turn_up(conn: Conn, acme: Owner) -> None:
    """A session lock outlives a rollback: the turn is given up whatever happened."""
    with pytest.raises(InvalidRequest):
        await run(conn, acme, "number,name", "+492216698712,John")  # an unknown column
    assert not await turn_backends(conn, granted=True)
    assert (await run(conn, acme, "phone,name", "+492216698712,John"))[0].inserted == 1


async def test_concurrent_replacing_imports_leave_one_listing_not_their_union(
    conn: Conn, acme: Owner, db_url: str
) -> None:
    """Two replacing imports into an empty book, both staged before either merges: the
    second to merge must see the first's rows and delete them, as if they ran in turn."""
    first, second = await asyncpg.connect(db_url), await asyncpg.connect(db_url)
    try:
        async with import_turn_held(db_url):
            tasks = [
                asyncio.ensure_future(run(importer, acme, "phone,name", *lines, replace=True))
                for importer, lines in (
                    (first, [f"+4930{n:08d},A{n}" for n in range(0, 300)]),
                    (second, [f"+4930{n:08d},B{n}" for n in range(200, 500)]),
                )
            ]
            await waiting_for_a_turn(conn, 2)
        reports = [report for report, _ in await asyncio.wait_for(asyncio.gather(*tasks), 10)]
        names = {name[0] for name, _ in (await book(conn, acme)).values()}
        assert len(await book(conn, acme)) == 300
        assert names in ({"A"}, {"B"})  # one listing whole, whichever merged last
        earlier, later = reports if names == {"B"} else reports[::-1]
        assert earlier == ImportReport(inserted=300)
        assert later == ImportReport(inserted=200, updated=100, deleted=200)
    finally:
        await first.close()
        await second.close()


async def test_an_import_whose_client_left_stops_waiting_for_its_turn(
    conn: Conn, acme: Owner, db_url: str
) -> None:
    """A client killed while its import waits its turn frees the wait within the
    connection check's second, not when the merge ahead of it ends."""
    importer = await asyncpg.connect(db_url)
    async with import_turn_held(db_url):
        task = asyncio.ensure_future(run(importer, acme, "phone,name", "+492216698712,John"))
        await waiting_for_a_turn(conn, 1)
        importer.terminate()
        with pytest.raises(asyncpg.InterfaceError):
            await task
        await waiting_for_a_turn(conn, 0)
    assert await book(conn, acme) == {}
