"""A CSV upload outlasting database.statement_timeout: the body is spooled before the
import's bulk statements, which are not API steps, begin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from api_client import Api

from cnamd.model import Role

ENTERPRISE = "/api/partner/enterprise/demo"


@pytest.fixture
def api_settings() -> list[str]:
    return ["database.statement_timeout=0.2"]


async def test_an_upload_slower_than_the_statement_timeout_is_imported(api: Api) -> None:
    """The body takes over 1 s to arrive, against a 0.2 s statement timeout."""
    partner = await api.key(Role.PARTNER, enterprises=["demo"])

    async def slowly() -> AsyncIterator[bytes]:
        yield b"phone,name\n"
        for part in range(5):
            await asyncio.sleep(0.25)
            yield "".join(f"+1212555{part}{i:03d},Name {i}\n" for i in range(1000)).encode()

    reply = await api.call(
        "POST",
        ENTERPRISE + "/cnam-import",
        partner,
        data=slowly(),
        headers={"Content-Type": "text/csv"},
    )
    assert (reply.status, reply.body["inserted"]) == (200, 5000), reply.body
    await api.until_served("+12125554999", "Name 999", tenant="demo")
