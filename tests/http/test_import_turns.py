"""Uploads take turns (store/imports.py, ``IMPORT_TURN``; http/cnam_csv.py).

Several uploads waiting their turn while lookups go on, one of them losing its
database connection while it waits: that one is answered 503 and stores nothing,
the others import in turn, each whole. An upload is answered once its names are
served. A sender that stalls holds neither the turn nor a database connection:
its body is spooled before either is taken."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from api_client import Api

from cnamd.model import Role
from import_turns import import_turn_held, waiting_for_a_turn

ENTERPRISE = "/api/partner/enterprise/demo"
UPLOADS = 3
ROWS = 2000  # over the inline limit: the bulk workers parse them, as for a real upload


@pytest.fixture
def api_settings() -> list[str]:
    # an upload of ROWS is a transaction too large to apply live: the cache loads it
    # whole, as it would a 10 MB upload with the default threshold
    return ["cache.compact_threshold=1000"]


def rows(upload: int) -> bytes:
    lines = (f"+121255{upload}{i:04d},Turn {upload} {i}\n" for i in range(ROWS))
    return ("phone,name\n" + "".join(lines)).encode()


async def test_an_upload_cut_off_while_waiting_its_turn_is_a_503_and_the_rest_merge(
    api: Api, db_url: str
) -> None:
    partner = await api.key(Role.PARTNER, enterprises=["demo"])
    await api.until_key(partner.split(".")[0])  # the lookups' key known to the cache
    lookups_done = asyncio.Event()

    async def lookups() -> list[int]:
        statuses = []
        while not lookups_done.is_set():
            reply = await api.call("GET", "/v1/lookup/+492216698712?tenant=demo", partner)
            statuses.append(reply.status)
            await asyncio.sleep(0.005)
        return statuses

    looking = asyncio.gather(*(lookups() for _ in range(3)))
    try:
        async with import_turn_held(db_url) as holder:
            uploads = [
                asyncio.ensure_future(
                    api.call(
                        "POST",
                        ENTERPRISE + "/cnam-import",
                        partner,
                        data=rows(i),
                        headers={"Content-Type": "text/csv"},
                    )
                )
                for i in range(UPLOADS)
            ]
            waiting = await waiting_for_a_turn(holder, UPLOADS)
            await holder.execute("SELECT pg_terminate_backend($1)", waiting[0])
            await waiting_for_a_turn(holder, UPLOADS - 1)
            assert not any(upload.done() and upload.result().status == 200 for upload in uploads)
        replies = await asyncio.wait_for(asyncio.gather(*uploads), 60)
    finally:
        lookups_done.set()
        statuses = await looking

    assert sorted(reply.status for reply in replies) == [200] * (UPLOADS - 1) + [503]
    async with api.pool.acquire() as conn:
        for i, reply in enumerate(replies):
            stored = await conn.fetchval(
                "SELECT count(*) FROM cnam_entries WHERE key LIKE $1", f"+121255{i}%"
            )
            if reply.status == 200:
                assert reply.body["inserted"] == ROWS and stored == ROWS
            else:
                answer = (reply.body["status"], reply.body["field"])
                assert answer == ("store-unavailable", "database"), reply.body
                assert stored == 0
    looked = [status for each in statuses for status in each]
    assert looked and set(looked) == {200}


async def test_an_upload_is_answered_once_its_names_are_served(api: Api) -> None:
    """The upload's transaction is loaded whole (a reload in a child process, hundreds
    of milliseconds): a lookup sent as soon as the upload is answered finds its names."""
    partner = await api.key(Role.PARTNER, enterprises=["demo"])
    await api.until_key(partner.split(".")[0])
    for upload in range(2):
        reply = await api.call(
            "POST",
            ENTERPRISE + "/cnam-import",
            partner,
            data=rows(upload),
            headers={"Content-Type": "text/csv"},
        )
        assert (reply.status, reply.body["inserted"]) == (200, ROWS), reply.body
        last = f"+121255{upload}{ROWS - 1:04d}"
        found = await api.call("GET", f"/v1/lookup/{last}?tenant=demo", partner)
        assert (found.status, found.body["name"]) == (200, f"Turn {upload} {ROWS - 1}")


async def test_a_stalled_sender_holds_neither_the_turn_nor_a_connection(api: Api) -> None:
    """An upload whose sender stops half way waits in the spool: no backend is in its
    transaction, and another upload goes through meanwhile; then it completes."""
    partner = await api.key(Role.PARTNER, enterprises=["demo"])
    resume, sent_half = asyncio.Event(), asyncio.Event()
    body = rows(0)
    half = body.rfind(b"\n", 0, len(body) // 2) + 1

    async def stalling() -> AsyncIterator[bytes]:
        yield body[:half]
        sent_half.set()
        await resume.wait()
        yield body[half:]

    stalled = asyncio.ensure_future(
        api.call(
            "POST",
            ENTERPRISE + "/cnam-import",
            partner,
            data=stalling(),
            headers={"Content-Type": "text/csv"},
        )
    )
    try:
        await asyncio.wait_for(sent_half.wait(), 10)
        async with api.pool.acquire() as conn:
            for _ in range(50):  # streamed into a transaction, it would show within ms
                busy = await conn.fetch(
                    "SELECT state, query FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
                    " AND datname = current_database()"
                    " AND (state LIKE 'idle in transaction%' OR query LIKE '%cnamd_import%')"
                )
                assert busy == [], busy
                await asyncio.sleep(0.01)
        other = await api.call(
            "POST",
            ENTERPRISE + "/cnam-import",
            partner,
            data=rows(1),
            headers={"Content-Type": "text/csv"},
        )
        assert (other.status, other.body["inserted"]) == (200, ROWS), other.body
        assert not stalled.done()
    finally:
        resume.set()
    reply = await asyncio.wait_for(stalled, 30)
    assert (reply.status, reply.body["inserted"]) == (200, ROWS), reply.body
