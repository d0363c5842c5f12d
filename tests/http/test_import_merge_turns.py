"""Uploads merge one at a time (store/imports.py, ``MERGE_LOCK``): several uploads staged
and waiting their turn while lookups go on, one of them losing its database connection
while it waits. That one is answered 503 and stores nothing; the others merge in turn,
each whole, once the turn comes."""

from __future__ import annotations

import asyncio

from api_client import Api

from cnamd.model import Role
from merge_turns import merge_turn_held, waiting_for_a_turn

ENTERPRISE = "/api/partner/enterprise/demo"
UPLOADS = 3
ROWS = 2000  # over the inline limit: the bulk workers parse them, as for a real upload


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
        async with merge_turn_held(db_url) as holder:
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
