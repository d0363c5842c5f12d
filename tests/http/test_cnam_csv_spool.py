"""Where an upload waits for its import (http/cnam_csv.py): in memory up to 1 MiB, then in
a file in ``http.spool_dir``; a spool that cannot be written is a 503 naming ``body``."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from api_client import Api, Reply

from cnamd.model import Role

ENTERPRISE = "/api/partner/enterprise/demo"


@pytest.fixture
def api_settings(tmp_path: Path) -> list[str]:
    return [f"http.spool_dir={tmp_path / 'not-made'}"]  # a directory that is not there


def rows(count: int, name: str) -> bytes:
    lines = (f"+12135{i:06d},{name} {i}\n" for i in range(count))
    return ("phone,name\n" + "".join(lines)).encode()


#: over 1 MiB: it goes to a file
LARGE = rows(20000, "A name long enough to pass one mebibyte in all")


async def upload(api: Api, key: str, data: bytes | io.BytesIO) -> Reply:
    return await api.call(
        "POST", ENTERPRISE + "/cnam-import", key, data=data, headers={"Content-Type": "text/csv"}
    )


async def stored(api: Api) -> int:
    """The uploads' numbers in the database."""
    async with api.pool.acquire() as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM cnam_entries WHERE key LIKE '+12135%'"
        )
    return count


async def test_an_upload_the_spool_cannot_hold_is_a_503_and_stores_nothing(api: Api) -> None:
    partner = await api.key(Role.PARTNER, enterprises=["demo"])
    assert len(LARGE) > 1 << 20, len(LARGE)
    reply = await upload(api, partner, io.BytesIO(LARGE))
    assert reply.status == 503, reply.body
    assert (reply.body["status"], reply.body["field"]) == ("store-unavailable", "body")
    assert "No such file or directory" in reply.body["message"]
    assert await stored(api) == 0
    # under 1 MiB it stays in memory: the same setting does not matter
    reply = await upload(api, partner, rows(100, "Kept"))
    assert (reply.status, reply.body["inserted"]) == (200, 100), reply.body


async def test_uploads_the_spool_cannot_hold_fail_alone_while_lookups_go_on(api: Api) -> None:
    """Under load: three uploads over 1 MiB at once, each failing on the spool's own
    thread, are each a 503, and the lookups sent meanwhile all answer."""
    partner = await api.key(Role.PARTNER, enterprises=["demo"])

    async def refused() -> int:
        reply = await upload(api, partner, io.BytesIO(LARGE))
        assert reply.body["field"] == "body", reply.body
        return reply.status

    async def lookups() -> list[int]:
        answered = []
        for _ in range(30):
            reply = await api.call("GET", "/v1/lookup/+492216698712?tenant=demo")
            assert reply.body["name"] == "John Doe", reply.body
            answered.append(reply.status)
        return answered

    statuses = await asyncio.gather(refused(), refused(), refused(), lookups(), lookups())
    assert list(statuses[:3]) == [503, 503, 503]
    assert statuses[3] == statuses[4] == [200] * 30
    assert await stored(api) == 0
