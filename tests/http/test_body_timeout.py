"""A body that stops arriving is answered 408 at http.body_timeout: a CSV upload (nothing of
it stored, its transaction and database connection let go: they were held for as long as it
stalled), a JSON body behind a key, and a vendor's login, which reads its body before anyone
is authenticated (answered in the vendor's own error shape)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from api_client import Api

from cnamd.model import Role

ENTERPRISE = "/api/partner/enterprise/demo"


@pytest.fixture
def api_settings() -> list[str]:
    return ["http.body_timeout=1"]


def rows(block: int) -> bytes:
    return "".join(f"+1212556{block}{i:03d},Stalled {i}\n" for i in range(1000)).encode()


async def test_an_upload_that_stops_is_answered_408_and_stores_nothing(api: Api) -> None:
    partner = await api.key(Role.PARTNER, enterprises=["demo"])
    never = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield b"phone,name\n" + rows(0)
        # the sender stops; the generator is cancelled once the answer has come
        await asyncio.wait_for(never.wait(), timeout=20)
        yield rows(1)

    started = asyncio.get_running_loop().time()
    reply = await api.call(
        "POST",
        ENTERPRISE + "/cnam-import",
        partner,
        data=stalls(),
        headers={"Content-Type": "text/csv"},
    )
    waited = asyncio.get_running_loop().time() - started
    assert reply.status == 408, reply.body
    assert (reply.body["status"], reply.body["field"]) == ("body-timeout", "body")
    assert "http.body_timeout" in reply.body["message"]
    assert 0.9 < waited < 10
    async with api.pool.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT count(*) FROM cnam_entries WHERE key LIKE '+12125560%'"
        )
        open_transactions = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state LIKE 'idle in transaction%'"
        )
    assert (stored, open_transactions) == (0, 0)


async def test_an_upload_that_keeps_sending_is_not_cut_off(api: Api) -> None:
    """The deadline is between reads: 1.6 s of sending in pieces 0.4 s apart is imported."""
    partner = await api.key(Role.PARTNER, enterprises=["demo"])

    async def steadily() -> AsyncIterator[bytes]:
        yield b"phone,name\n"
        for block in range(4):
            await asyncio.sleep(0.4)  # the sender's pace, under the 1 s between reads
            yield rows(block)

    reply = await api.call(
        "POST",
        ENTERPRISE + "/cnam-import",
        partner,
        data=steadily(),
        headers={"Content-Type": "text/csv"},
    )
    assert (reply.status, reply.body["inserted"]) == (200, 4000), reply.body


async def stalled_body(api: Api, path: str, token: str | None = None) -> tuple[int, object, float]:
    """POST ``path`` with a JSON body that stops after 10 of its 200 bytes: the status and
    body of the answer, and how long it took."""
    url = urlsplit(api.base)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: cnamd\r\n{auth}Content-Type: application/json\r\n"
        "Content-Length: 200\r\n\r\n"
    )
    loop = asyncio.get_running_loop()
    writer.write(head.encode() + b'{"name": "')
    started = loop.time()
    try:
        status_line = await asyncio.wait_for(reader.readline(), timeout=20)
        waited = loop.time() - started
        headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        length = next(
            int(line.split(b":")[1])
            for line in headers.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        body = json.loads(await asyncio.wait_for(reader.readexactly(length), timeout=5))
    finally:
        writer.close()
    return int(status_line.split()[1]), body, waited


async def test_a_json_body_that_stops_is_answered_408(api: Api) -> None:
    operator = await api.key(Role.OPERATOR)
    status, body, waited = await stalled_body(api, "/api/operator/tenants", operator)
    assert status == 408, body
    assert isinstance(body, dict) and (body["status"], body["field"]) == ("body-timeout", "body")
    assert 0.9 < waited < 10


async def test_a_vendor_login_whose_body_stops_is_answered_408_in_its_shape(api: Api) -> None:
    status, body, waited = await stalled_body(api, "/_rest/v4/authenticate")
    assert status == 408
    assert isinstance(body, dict) and set(body) == {"code", "error"} and body["code"] == 408
    assert 0.9 < waited < 10
