"""Digits without ``+``: one rule across the HTTP families (cnamd/numbers.py's docstring).

The demo tenant's region is DE. ``492216698755`` reads as the German national
number +49 4922 16698755 and as +49 221 6698755 with its ``+`` left out: both
are valid, so a write of it is refused and a lookup asks both. A string whose
national reading is not valid (``12125550001`` in DE) is refused for writes
and read as E.164 by lookups; a valid national number with nothing else to
mean (``2216698799``) is written and read the same everywhere.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from api_client import Api, Reply

from cnamd.model import Role

BOOK = "/api/partner/enterprise/demo/cnam"


@pytest.fixture
async def partner(api: Api) -> str:
    return await api.key(Role.PARTNER, enterprises=["demo"])


async def write(api: Api, token: str, phone: str, name: str) -> Reply:
    return await api.call("POST", f"{BOOK}/{phone}", token, json={"name": name})


async def read(api: Api, token: str, path: str) -> tuple[int, Any]:
    """The lookup families: cnamd's own JSON, OpenCNAM's JSON, OpenCNAM's v2 path."""
    reply = await api.call("GET", path, token)
    return reply.status, reply.body


LOOKUPS = ["/v1/lookup/{}", "/v3/phone/{}", "/v2/phone/{}"]


async def until_named(api: Api, token: str, raw: str, name: str) -> None:
    for _ in range(200):
        status, body = await read(api, token, f"/v1/lookup/{raw}")
        if status == 200 and body.get("name") == name:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"{raw} never named {name!r}")


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (
            "492216698755",
            "is ambiguous: the national number +49492216698755 in DE or +492216698755",
        ),
        ("12125550001", "is not a valid national number in DE; if +12125550001 is meant"),
        ("5", "is too short for its country"),
    ],
)
async def test_a_write_of_digits_that_are_not_one_national_number_is_400(
    api: Api, partner: str, raw: str, says: str
) -> None:
    reply = await write(api, partner, raw, "Nobody")
    assert reply.status == 400 and reply.body["field"] == "phone", reply.body
    assert says in reply.body["message"]
    async with api.pool.acquire() as conn:
        stored = await conn.fetchval("SELECT count(*) FROM cnam_entries WHERE name = 'Nobody'")
    assert stored == 0
    ranged = await api.call(
        "POST",
        f"{BOOK}-ranges",
        partner,
        json={"start": raw, "end": "+492216698799", "name": "Nobody"},
    )
    assert ranged.status == 400 and ranged.body["field"] == "start"
    deleted = await api.call("DELETE", f"{BOOK}/{raw}", partner)
    assert deleted.status == 400 and deleted.body["field"] == "phone"


@pytest.mark.parametrize("lookup", LOOKUPS)
async def test_every_lookup_reads_what_the_write_stored(
    api: Api, partner: str, lookup: str
) -> None:
    """A national number written bare, or with its trunk prefix, is found under either
    form by every lookup family, as the same E.164 number."""
    assert (await write(api, partner, "2216698799", "Bare National")).status == 200
    assert (await write(api, partner, "0221 6698798", "Trunk National")).status == 200
    await until_named(api, partner, "%2B492216698798", "Trunk National")
    for raw, number, name in [
        ("2216698799", "+492216698799", "Bare National"),
        ("02216698799", "+492216698799", "Bare National"),
        ("2216698798", "+492216698798", "Trunk National"),
        ("12125550001", "+12125550001", "NYC Pizza"),  # not national in DE: E.164
    ]:
        status, body = await read(api, partner, lookup.format(raw))
        assert status == 200, (raw, body)
        assert (body["number"], body["name"]) == (number, name)


@pytest.mark.parametrize("lookup", LOOKUPS)
async def test_an_ambiguous_lookup_answers_the_reading_that_holds_a_name(
    api: Api, partner: str, lookup: str
) -> None:
    assert (await write(api, partner, "+492216698755", "E164 Written")).status == 200
    await until_named(api, partner, "%2B492216698755", "E164 Written")
    status, body = await read(api, partner, lookup.format("492216698755"))
    assert status == 200 and (body["number"], body["name"]) == ("+492216698755", "E164 Written")

    assert (await write(api, partner, "+49492216698755", "Borkum Written")).status == 200
    await until_named(api, partner, "%2B49492216698755", "Borkum Written")
    status, body = await read(api, partner, lookup.format("492216698755"))
    assert status == 400, body
    assert "is ambiguous: +49492216698755 and +492216698755 both have a name" in str(body)


async def test_wazo_numbers_are_kept_as_given_and_only_plus_numbers_publish(
    api: Api, partner: str
) -> None:
    """wazo-confd accepts any digit string; cnamd stores it as given and publishes only
    ``+`` numbers, so a bare number is never read as some other number's name."""
    created = await api.call(
        "POST",
        "/api/confd/1.1/phone-numbers",
        partner,
        json={"number": "2216699797", "caller_id_name": "Kept Bare"},
    )
    assert created.status == 201 and created.body["number"] == "2216699797"
    assert created.body["cnam"]["status"] == "not-e164"
    await until_named(api, partner, "%2B492216698712", "John Doe")  # the key is in the cache
    status, _ = await read(api, partner, "/v1/lookup/2216699797")
    assert status == 404
