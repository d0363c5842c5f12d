"""Phone books as CSV over HTTP: the importer's all-or-nothing merge, streamed."""

from __future__ import annotations

import asyncio

import psutil
import pytest
from api_client import Api

from cnamd.model import Role
from cnamd.phonebook_csv import PhonebookReader, RawRow, Rejected

ENTERPRISE = "/api/partner/enterprise/demo"
CSV = {"Content-Type": "text/csv"}


@pytest.fixture
async def partner(api: Api) -> str:
    return await api.key(Role.PARTNER, enterprises=["demo"])


async def test_import_reports_and_commits_the_good_rows(api: Api, partner: str) -> None:
    body = (
        "phone,name\n"
        "+492216698712,John Doe\n"  # unchanged
        "+492216698713,Jane Smith\n"  # updated
        "0221 6698777,Kiosk\n"  # new, national in the tenant's region (DE)
        "not-a-phone,Bad\n"
        "+492216698778,Bad\u00e9\n"
    )
    reply = await api.call(
        "POST", ENTERPRISE + "/cnam-import", partner, data=body.encode(), headers=CSV
    )
    assert reply.status == 200, reply.body
    assert {k: reply.body[k] for k in ("inserted", "updated", "unchanged", "rejected")} == {
        "inserted": 1,
        "updated": 1,
        "unchanged": 1,
        "rejected": 2,
    }
    assert [(r["line"], r["phone"]) for r in reply.body["rejected_rows"]] == [
        (5, "not-a-phone"),
        (6, "+492216698778"),
    ]
    assert "phone" in reply.body["rejected_rows"][0]["reason"]
    await api.until_served("+492216698777", "Kiosk", tenant="demo")
    await api.until_served("+492216698713", "Jane Smith", tenant="demo")


async def test_a_large_upload_is_validated_in_a_worker_process(api: Api, partner: str) -> None:
    rows = "".join(f"+1212555{i:04d},Name {i}\n" for i in range(6000))
    body = ("phone,name\n" + rows).encode()
    assert len(body) > 64 * 1024
    reply = await api.call("POST", ENTERPRISE + "/cnam-import", partner, data=body, headers=CSV)
    assert (reply.status, reply.body["inserted"], reply.body["rejected"]) == (200, 6000, 0)


async def test_export_reimports_as_unchanged(api: Api, partner: str) -> None:
    exported = await api.call("GET", ENTERPRISE + "/cnam-export", partner)
    assert exported.status == 200
    assert exported.headers["Content-Type"].startswith("text/csv")
    lines = exported.body.splitlines()
    assert lines[0] == "phone,name,prefix"
    assert "+4922166987,ACME Cologne,true" in lines
    again = await api.call(
        "POST", ENTERPRISE + "/cnam-import", partner, data=exported.body.encode(), headers=CSV
    )
    assert again.body["unchanged"] == len(lines) - 1
    assert again.body["inserted"] == again.body["updated"] == 0


async def test_replace_deletes_what_the_file_does_not_list(api: Api, partner: str) -> None:
    body = b"phone,name\n+492216698712,John Doe\n"
    reply = await api.call(
        "POST", ENTERPRISE + "/cnam-import?replace=true", partner, data=body, headers=CSV
    )
    assert reply.body["deleted"] == 2  # Jane Doe and the ACME Cologne prefix
    await api.until_served("+492216698713", None, tenant="demo")


@pytest.mark.parametrize(
    "case",
    [
        ("", b"number,name\n+492216698799,X\n", CSV, "header"),
        ("", b"phone,name\n", {"Content-Type": "application/json"}, "content-type"),
        ("?replace=maybe", b"phone,name\n", CSV, "replace"),
    ],
)
async def test_a_bad_upload_is_400_and_changes_nothing(
    api: Api, partner: str, case: tuple[str, bytes, dict[str, str], str]
) -> None:
    query, body, headers, field = case
    async with api.pool.acquire() as conn:
        before = await conn.fetchval("SELECT max(id) FROM change_log")
    reply = await api.call(
        "POST", ENTERPRISE + "/cnam-import" + query, partner, data=body, headers=headers
    )
    assert reply.status == 400 and reply.body["field"] == field, reply.body
    async with api.pool.acquire() as conn:
        assert await conn.fetchval("SELECT max(id) FROM change_log") == before


async def test_another_tenants_book_is_404(api: Api) -> None:
    async with api.pool.acquire() as conn:
        await conn.execute("INSERT INTO tenants (slug, name) VALUES ('other', 'Other')")
    token = await api.key(Role.PARTNER, enterprises=["other"])
    body = b"phone,name\n+492216698799,X\n"
    reply = await api.call("POST", ENTERPRISE + "/cnam-import", token, data=body, headers=CSV)
    assert reply.status == 404
    assert (await api.call("GET", ENTERPRISE + "/cnam-export", token)).status == 404


async def test_an_upload_cut_off_midway_leaves_the_book_as_it_was(api: Api, partner: str) -> None:
    """The client goes away after 100 KB of a 10 MB upload: the transaction rolls back."""
    async with api.pool.acquire() as conn:
        before = await conn.fetchval("SELECT max(id) FROM change_log")
        entries = await conn.fetchval("SELECT count(*) FROM cnam_entries")
    host, port = api.base.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    rows = "phone,name\n" + "".join(f"+1212555{i:04d},Name {i}\n" for i in range(5000))
    writer.write(
        f"POST {ENTERPRISE}/cnam-import HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {partner}\r\nContent-Type: text/csv\r\n"
        f"Content-Length: {10 * 2**20}\r\n\r\n".encode()
        + rows.encode()
    )
    await writer.drain()
    await asyncio.sleep(0.5)
    writer.close()
    await writer.wait_closed()
    for _ in range(100):  # the handler is cancelled and its transaction rolled back
        async with api.pool.acquire() as conn:
            idle = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state LIKE 'idle in transaction%'"
            )
        if not idle:
            break
        await asyncio.sleep(0.05)
    async with api.pool.acquire() as conn:
        assert await conn.fetchval("SELECT max(id) FROM change_log") == before
        assert await conn.fetchval("SELECT count(*) FROM cnam_entries") == entries
    assert (await api.call("GET", ENTERPRISE + "/cnam", partner)).status == 200


async def test_a_large_upload_is_parsed_outside_the_serving_process(
    api: Api, partner: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the header is read in the process whose loop answers dips and lookups.

    The rows are parsed, validated and encoded by the bulk worker processes
    (spawned: they run the real reader, not this test's recording one).
    """
    fed: list[str] = []
    feed = PhonebookReader.feed

    def recording(reader: PhonebookReader, text: str) -> RawRow | Rejected | None:
        fed.append(text)
        return feed(reader, text)

    monkeypatch.setattr(PhonebookReader, "feed", recording)
    rows = "".join(f"+1212555{i:04d},Name {i}\n" for i in range(6000))
    body = ("phone,name\n" + rows + "+1212556,Bad\u00e9\n").encode()
    reply = await api.call("POST", ENTERPRISE + "/cnam-import", partner, data=body, headers=CSV)
    assert (reply.status, reply.body["inserted"], reply.body["rejected"]) == (200, 6000, 1)
    assert reply.body["rejected_rows"][0]["line"] == 6002
    assert fed == ["phone,name"]


async def test_lookups_are_answered_while_the_bulk_workers_are_stopped_mid_upload(
    api: Api, partner: str
) -> None:
    """An upload waiting on its parsing holds up nothing on the serving loop."""
    warm = ("phone,name\n" + "".join(f"+1212555{i:04d},A\n" for i in range(500))).encode()
    reply = await api.call("POST", ENTERPRISE + "/cnam-import", partner, data=warm, headers=CSV)
    assert reply.status == 200  # the workers now exist
    workers = [
        p
        for p in psutil.Process().children()
        if "multiprocessing.spawn" in " ".join(p.cmdline())
        and "resource_tracker" not in " ".join(p.cmdline())
    ]
    assert workers
    rows = "".join(f"+1212556{i:04d},Name {i}\n" for i in range(9000))
    body = ("phone,name\n" + rows).encode()
    for worker in workers:
        worker.suspend()
    try:
        upload = asyncio.create_task(
            api.call("POST", ENTERPRISE + "/cnam-import", partner, data=body, headers=CSV)
        )
        for _ in range(20):  # lookups go on; the upload cannot end without its workers
            lookup = await api.call("GET", "/v1/lookup/+492216698712?tenant=demo")
            assert (lookup.status, lookup.body["name"]) == (200, "John Doe")
        assert not upload.done()
    finally:
        for worker in workers:
            worker.resume()
    reply = await upload
    assert (reply.status, reply.body["inserted"]) == (200, 9000)
