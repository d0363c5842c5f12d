"""http.max_upload_bytes: a CSV upload past it is 413 naming the body, and changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from api_client import Api

from cnamd.model import Role

IMPORT = "/api/partner/enterprise/demo/cnam-import"


@pytest.fixture
def api_settings() -> list[str]:
    return ["http.max_upload_bytes=4096"]


@pytest.mark.parametrize("chunked", [False, True])
async def test_an_upload_past_the_limit_is_413_and_changes_nothing(api: Api, chunked: bool) -> None:
    partner = await api.key(Role.PARTNER, enterprises=["demo"])
    body = ("phone,name\n" + "".join(f"+1212555{i:04d},N\n" for i in range(300))).encode()
    assert len(body) > 4096

    async def stream() -> AsyncIterator[bytes]:
        yield body

    async with api.pool.acquire() as conn:
        before = await conn.fetchval("SELECT max(id) FROM change_log")
    reply = await api.call(
        "POST",
        IMPORT,
        partner,
        data=stream() if chunked else body,
        headers={"Content-Type": "text/csv"},
    )
    assert (reply.status, reply.body["field"]) == (413, "body"), reply.body
    assert "4096 bytes" in reply.body["message"]
    async with api.pool.acquire() as conn:
        assert await conn.fetchval("SELECT max(id) FROM change_log") == before
