"""A write that PostgreSQL rolls back for a deadlock is a 503 the client retries, not a 500.

The deadlock is made on purpose: a side transaction takes the change log's id lock
(the advisory lock every logged write takes, store/migrations 0001), a PUT of a
phone number locks the number's row and then waits for that lock, and the side
transaction then asks for the number's row. PostgreSQL aborts the PUT's transaction
(the one that waited first); the side transaction commits.
"""

from __future__ import annotations

import asyncio

import pytest
from api_client import Api

from cnamd.model import Role

BASE = "/api/confd/1.1/phone-numbers"
CHANGE_ID_LOCK = 7210315377642189601  # cnamd_next_change_id()'s advisory lock


async def waiting_on_the_id_lock(api: Api) -> bool:
    async with api.pool.acquire() as conn:
        found: bool = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)"
        )
        return found


@pytest.mark.timeout(60)
async def test_a_deadlocked_write_is_a_503_to_retry(api: Api) -> None:
    partner = await api.key(Role.PARTNER, enterprises=["demo"])
    created = await api.call("POST", BASE, partner, json={"number": "+492216698777"})
    assert created.status == 201, created.body
    number_uuid = created.body["uuid"]
    async with api.pool.acquire() as side:
        async with side.transaction():
            await side.execute("SELECT pg_advisory_xact_lock($1)", CHANGE_ID_LOCK)
            put = asyncio.create_task(
                api.call("PUT", f"{BASE}/{number_uuid}", partner, json={"caller_id_name": "X"})
            )
            for _ in range(200):  # bounded: until the PUT holds the row and waits on the lock
                if await waiting_on_the_id_lock(api):
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("the PUT never waited on the change log's lock")
            await side.execute(
                "SELECT 1 FROM phone_numbers WHERE uuid = $1::uuid FOR UPDATE", number_uuid
            )
        reply = await put
    assert reply.status == 503, reply.body
    assert reply.headers["Retry-After"] == "1"
    [message] = reply.body  # wazo-confd's shape: a list of messages
    assert "field 'database'" in message and "send it again" in message
    # sent again, it goes through
    again = await api.call("PUT", f"{BASE}/{number_uuid}", partner, json={"caller_id_name": "X"})
    assert again.status == 204, again.body
