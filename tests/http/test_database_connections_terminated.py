"""pg_terminate_backend on the API pool's connections while clients write and read.

Six clients write names (partner API), list them, list Flowroute CNAM records
and look up with their key while a loop terminates every pool connection every
50-100 ms. Every answer is a 2xx or a 503 (with Retry-After and the field
``database``), never a 500, and every write that got a 2xx is in the database.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random

import asyncpg
from api_client import Api, Reply

from cnamd.model import Role
from cnamd.store.pool import APPLICATION_NAME
from db_faults import terminate_backends

ENTERPRISE = "/api/partner/enterprise/demo/cnam"
CLIENTS = 6
SWEEPS = 40  # terminations, 50-100 ms apart: 2-4 s of storm
ROUNDS_PER_CLIENT = 400  # a bound; the clients stop when the storm does


async def _storm(db_url: str, done: asyncio.Event) -> int:
    """Terminate the pool's backends again and again; how many were terminated."""
    admin = await asyncpg.connect(db_url)
    terminated = 0
    try:
        for _ in range(SWEEPS):
            terminated += await terminate_backends(admin, only=APPLICATION_NAME)
            await asyncio.sleep(random.uniform(0.05, 0.1))
    finally:
        done.set()
        await admin.close()
    return terminated


async def _client(
    api: Api, token: str, index: int, done: asyncio.Event, written: dict[str, str]
) -> list[tuple[str, Reply]]:
    key_id, _, secret = token.partition(".")
    basic = base64.b64encode(f"{key_id}:{secret}".encode()).decode()
    replies: list[tuple[str, Reply]] = []
    for round_ in range(ROUNDS_PER_CLIENT):
        if done.is_set():
            break
        phone = f"+4922166{index}{round_:04d}"
        name = f"Storm {index} {round_}"
        reply = await api.call("POST", f"{ENTERPRISE}/{phone}", token, json={"name": name})
        replies.append(("write", reply))
        if 200 <= reply.status < 300:
            written[phone] = name
        replies.append(("list", await api.call("GET", f"{ENTERPRISE}?count=5", token)))
        flowroute = await api.call("GET", "/v2/cnams", headers={"Authorization": f"Basic {basic}"})
        replies.append(("flowroute", flowroute))
        lookup = await api.call("GET", "/v1/lookup/+492216698712?tenant=demo", token)
        replies.append(("lookup", lookup))
    return replies


async def test_terminated_connections_answer_2xx_or_503_and_lose_no_acknowledged_write(
    api: Api, db_url: str
) -> None:
    token = await api.key(Role.PARTNER, enterprises=["demo"])
    await api.until_key(token.split(".")[0])
    done = asyncio.Event()
    written: dict[str, str] = {}
    storm = asyncio.create_task(_storm(db_url, done))
    results = await asyncio.gather(
        *(_client(api, token, index, done, written) for index in range(CLIENTS))
    )
    terminated = await storm
    assert terminated > 0

    replies = [pair for replies in results for pair in replies]
    statuses = {(kind, reply.status) for kind, reply in replies}
    assert all(200 <= status < 300 or status == 503 for _, status in statuses), statuses
    for kind, reply in replies:
        if reply.status == 503:
            assert reply.headers["Retry-After"] == "1"
            if kind == "flowroute":  # its own error shape, as for every other error
                assert json.loads(reply.body)["errors"][0]["status"] == 503
            else:
                assert reply.body["field"] == "database", reply.body
    # lookups are answered from memory: the storm never reaches them
    assert {reply.status for kind, reply in replies if kind == "lookup"} == {200}
    assert written, "no write got through at all"

    async with api.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT key, name FROM cnam_entries WHERE key = ANY($1::text[])", list(written)
        )
    assert {row["key"]: row["name"] for row in rows} == written
