"""Seed 003's phone numbers (wazo-confd ``/phone-numbers``): real HTTP, the embedded PostgreSQL.

The demo tenant holds +492216698700 (main, shared) and +492216698701 (alice's).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid as uuidlib
from typing import Any, ClassVar

import asyncpg
import pytest
from api_client import Api, Reply

from cnamd.model import Role

BASE = "/api/confd/1.1/phone-numbers"
SEED_FIELDS = ["uuid", "tenant_uuid", "number", "caller_id_name", "main", "shared", "links"]


@pytest.fixture
async def partner(api: Api) -> str:
    """A partner key granted exactly the demo enterprise: its tenant needs no header."""
    return await api.key(Role.PARTNER, enterprises=["demo"])


@pytest.fixture
async def operator(api: Api) -> str:
    return await api.key(Role.OPERATOR)


@pytest.fixture
async def demo_uuid(api: Api) -> str:
    async with api.pool.acquire() as conn:
        return str(await conn.fetchval("SELECT uuid FROM tenants WHERE slug = 'demo'"))


@pytest.fixture
async def other(api: Api) -> dict[str, str]:
    """Tenant ``other`` with user bob and one number, +13125550100 "OTHER CO"."""
    async with api.pool.acquire() as conn:
        row = await conn.fetchrow(
            "INSERT INTO tenants (slug, name, region) VALUES ('other', 'Other', 'US')"
            " RETURNING id, uuid"
        )
        bob = await conn.fetchval(
            "INSERT INTO users (tenant_id, slug) VALUES ($1, 'bob') RETURNING uuid", row["id"]
        )
        number = await conn.fetchval(
            "INSERT INTO phone_numbers (tenant_id, number, caller_id_name)"
            " VALUES ($1, '+13125550100', 'OTHER CO') RETURNING uuid",
            row["id"],
        )
    return {"uuid": str(row["uuid"]), "bob": str(bob), "number": str(number)}


async def create(api: Api, token: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    reply = await api.call("POST", BASE, token, json=body, **kw)
    assert reply.status == 201, reply.body
    created: dict[str, Any] = reply.body
    return created


async def get(api: Api, token: str, number_uuid: str, **kw: Any) -> dict[str, Any]:
    reply = await api.call("GET", f"{BASE}/{number_uuid}", token, **kw)
    assert reply.status == 200, reply.body
    found: dict[str, Any] = reply.body
    return found


def message(reply: Reply) -> str:
    """wazo-confd's error body: a list of one message."""
    assert isinstance(reply.body, list) and len(reply.body) == 1, reply.body
    text: str = reply.body[0]
    assert isinstance(text, str)
    return text


def error(reply: Reply) -> tuple[int, str | None]:
    """The status and the field the message names (``... - field 'NAME': ...``)."""
    found = re.match(r"[A-Za-z ]+ - field '([^']+)': ", message(reply))
    return reply.status, found[1] if found else None


async def entry(api: Api, number_uuid: str) -> asyncpg.Record | None:
    """The global-directory entry published from a number, if any."""
    async with api.pool.acquire() as conn:
        row: asyncpg.Record | None = await conn.fetchrow(
            "SELECT scope, tenant_id, key, name, approval, approved_at FROM cnam_entries"
            " WHERE phone_number_uuid = $1",
            number_uuid,
        )
        return row


# --- the seed's endpoints, their status codes, headers and bodies ---


async def test_post_is_201_with_location_and_the_seeds_body(
    api: Api, partner: str, demo_uuid: str
) -> None:
    reply = await api.call("POST", BASE, partner, json={"number": "+18001234567"})
    assert reply.status == 201
    body = reply.body
    assert list(body)[: len(SEED_FIELDS)] == SEED_FIELDS
    href = f"{api.base}{BASE}/{body['uuid']}"
    assert reply.headers["Location"] == href
    assert body == {
        "uuid": body["uuid"],
        "tenant_uuid": demo_uuid,
        "number": "+18001234567",
        "caller_id_name": None,
        "main": False,
        "shared": False,
        "links": [{"rel": "phone_numbers", "href": href}],
        "user_uuid": None,
        "cnam": {
            "published": False,
            "status": "no-name",
            "reason": "the number has no caller_id_name",
        },
    }
    assert await get(api, partner, body["uuid"]) == body


async def test_seed_curl_bodies_work_without_a_json_content_type(api: Api, partner: str) -> None:
    """curl -d sends application/x-www-form-urlencoded; the body is still JSON."""
    headers = {"X-Auth-Token": partner, "Content-Type": "application/x-www-form-urlencoded"}
    raw = '\n{\n"number": "+18001234567"\n}'
    reply = await api.call("POST", BASE, data=raw, headers=headers)
    assert reply.status == 201 and reply.body["number"] == "+18001234567"


async def test_put_is_204_and_changes_only_what_it_sends(api: Api, partner: str) -> None:
    created = await create(api, partner, {"number": "+15551234567", "shared": True})
    path = f"{BASE}/{created['uuid']}"
    body = {"number": "+15551234570", "caller_id_name": "ACME INC."}
    reply = await api.call("PUT", path, partner, json=body)
    assert (reply.status, reply.body) == (204, "")
    found = await get(api, partner, created["uuid"])
    assert {k: found[k] for k in ("number", "caller_id_name", "shared")} == {
        "number": "+15551234570",
        "caller_id_name": "ACME INC.",
        "shared": True,
    }
    assert (await api.call("PUT", path, partner, json={"shared": False})).status == 204
    found = await get(api, partner, created["uuid"])
    assert (found["caller_id_name"], found["shared"]) == ("ACME INC.", False)
    # null clears the name
    assert (await api.call("PUT", path, partner, json={"caller_id_name": None})).status == 204
    assert (await get(api, partner, created["uuid"]))["caller_id_name"] is None


async def test_delete_is_204_then_404(api: Api, partner: str) -> None:
    created = await create(api, partner, {"number": "+15551234567"})
    path = f"{BASE}/{created['uuid']}"
    reply = await api.call("DELETE", path, partner)
    assert (reply.status, reply.body) == (204, "")
    assert error(await api.call("GET", path, partner)) == (404, "uuid")
    assert error(await api.call("DELETE", path, partner)) == (404, "uuid")
    assert error(await api.call("PUT", path, partner, json={})) == (404, "uuid")


async def test_a_malformed_uuid_is_404(api: Api, partner: str) -> None:
    for verb in ("GET", "PUT", "DELETE"):
        reply = await api.call(verb, f"{BASE}/not-a-uuid", partner, json={})
        assert error(reply) == (404, "uuid"), verb


async def test_list_gives_items_and_total(api: Api, partner: str) -> None:
    reply = await api.call("GET", BASE, partner)
    assert reply.status == 200
    assert reply.body["total"] == 2
    assert [(n["number"], n["main"], n["shared"]) for n in reply.body["items"]] == [
        ("+492216698700", True, True),
        ("+492216698701", False, False),
    ]


async def test_list_search_order_direction_limit_offset(api: Api, partner: str) -> None:
    for number, name in [
        ("+15555550101", "Bravo"),
        ("+15555550102", "alpha"),
        ("+15555550103", None),
        ("1111", "Front desk"),
    ]:
        await create(api, partner, {"number": number, "caller_id_name": name})

    async def numbers(query: str) -> tuple[int, list[str]]:
        reply = await api.call("GET", f"{BASE}?{query}", partner)
        assert reply.status == 200, reply.body
        return reply.body["total"], [n["number"] for n in reply.body["items"]]

    assert await numbers("search=55555") == (
        3,
        ["+15555550101", "+15555550102", "+15555550103"],
    )
    # the name is searched too, case-insensitively
    assert await numbers("search=ALPHA") == (1, ["+15555550102"])
    assert await numbers("search=%2B4922") == (2, ["+492216698700", "+492216698701"])
    # no name sorts last either way
    assert await numbers("search=5555&order=caller_id_name&direction=desc") == (
        3,
        ["+15555550101", "+15555550102", "+15555550103"],
    )
    assert await numbers("order=caller_id_name&direction=asc&limit=3") == (
        6,
        ["+492216698700", "+492216698701", "+15555550102"],
    )
    # numbers sort as text, byte by byte: '+' before the digits
    assert await numbers("order=number&direction=desc&limit=2&offset=1") == (
        6,
        ["+492216698701", "+492216698700"],
    )
    assert await numbers("limit=2&offset=10") == (6, [])
    assert await numbers("main=true") == (1, ["+492216698700"])
    assert await numbers("shared=false&search=%2B1") == (
        3,
        ["+15555550101", "+15555550102", "+15555550103"],
    )
    # wazo-confd-client's list sends recurse=False
    assert (await numbers("recurse=False"))[0] == 6


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("order=name", "order"),
        ("direction=up", "direction"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("offset=-5", "offset"),
        ("main=maybe", "main"),
        ("recurse=2", "recurse"),
    ],
)
async def test_bad_list_parameters_are_400_naming_them(
    api: Api, partner: str, query: str, field: str
) -> None:
    assert error(await api.call("GET", f"{BASE}?{query}", partner)) == (400, field)


# --- validation exactly as the seed ---


@pytest.mark.parametrize("number", ["1111", "+1414", "+15555550100", "5555550100"])
async def test_the_seeds_example_numbers_are_valid(api: Api, partner: str, number: str) -> None:
    created = await create(api, partner, {"number": number})
    assert created["number"] == number


@pytest.mark.parametrize(
    "number",
    [
        "",
        "abc",
        "+1555555O100",  # a letter O
        "555-555-0100",
        "+1 555 555 0100",
        "1+555",
        "++15555550100",
        "+",
        "1111\n",
        "\u0661\u0662\u0663",  # Arabic-Indic digits
        "1" * 33,
        "+" + "1" * 33,
        15555550100,
        None,
        ["+15555550100"],
        True,
    ],
)
async def test_invalid_numbers_are_400_naming_the_field(
    api: Api, partner: str, number: object
) -> None:
    reply = await api.call("POST", BASE, partner, json={"number": number})
    assert error(reply) == (400, "number")
    assert message(reply).startswith("Input Error - field 'number': ")


async def test_32_digits_are_the_longest_number(api: Api, partner: str) -> None:
    await create(api, partner, {"number": "+" + "1" * 32})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "number"),
        ({"number": "+15555550100", "caller_id_name": ""}, "caller_id_name"),
        ({"number": "+15555550100", "caller_id_name": "x" * 257}, "caller_id_name"),
        ({"number": "+15555550100", "caller_id_name": 5}, "caller_id_name"),
        ({"number": "+15555550100", "caller_id_name": ["A"]}, "caller_id_name"),
        ({"number": "+15555550100", "shared": "yes"}, "shared"),
        ({"number": "+15555550100", "shared": None}, "shared"),
        ({"number": "+15555550100", "user_uuid": 5}, "user_uuid"),
        ({"number": "+15555550100", "user_uuid": "alice"}, "user_uuid"),
    ],
)
async def test_invalid_bodies_are_400_naming_the_field(
    api: Api, partner: str, body: dict[str, Any], field: str
) -> None:
    assert error(await api.call("POST", BASE, partner, json=body)) == (400, field)


@pytest.mark.parametrize("raw", ["", "not json", "[1]", '"+15555550100"'])
async def test_a_body_that_is_no_json_object_is_400(api: Api, partner: str, raw: str) -> None:
    assert error(await api.call("POST", BASE, partner, data=raw)) == (400, "body")


async def test_caller_id_name_takes_1_to_256_characters(api: Api, partner: str) -> None:
    created = await create(api, partner, {"number": "1111", "caller_id_name": "x" * 256})
    assert created["caller_id_name"] == "x" * 256
    one = await create(api, partner, {"number": "1112", "caller_id_name": "x"})
    assert one["caller_id_name"] == "x"


async def test_put_validates_what_it_sends(api: Api, partner: str) -> None:
    created = await create(api, partner, {"number": "+15555550100"})
    path = f"{BASE}/{created['uuid']}"
    for body, field in [
        ({"number": "12a"}, "number"),
        ({"number": None}, "number"),
        ({"caller_id_name": ""}, "caller_id_name"),
        ({"shared": 1}, "shared"),
    ]:
        assert error(await api.call("PUT", path, partner, json=body)) == (400, field), body
    assert (await get(api, partner, created["uuid"]))["number"] == "+15555550100"


async def test_put_ignores_read_only_and_unknown_fields(api: Api, partner: str) -> None:
    """wazo-confd loads PUT bodies ignoring what it does not load, and its client's
    update() sends back the whole resource."""
    created = await create(api, partner, {"number": "+15555550100"})
    body = {**created, "main": True, "tenant_uuid": "x", "uuid": "y", "color": "blue"}
    body["caller_id_name"] = "ACME"
    reply = await api.call("PUT", f"{BASE}/{created['uuid']}", partner, json=body)
    assert reply.status == 204
    found = await get(api, partner, created["uuid"])
    assert (found["main"], found["tenant_uuid"], found["caller_id_name"]) == (
        False,
        created["tenant_uuid"],
        "ACME",
    )


async def test_a_duplicate_number_is_400_as_in_wazo_confd(api: Api, partner: str) -> None:
    reply = await api.call("POST", BASE, partner, json={"number": "+492216698700"})
    assert error(reply) == (400, "number")
    assert message(reply).startswith("Resource Error - field 'number': ")
    assert "exists already" in message(reply)
    created = await create(api, partner, {"number": "+15555550100"})
    moved = await api.call(
        "PUT", f"{BASE}/{created['uuid']}", partner, json={"number": "+492216698701"}
    )
    assert error(moved) == (400, "number")


# --- ranges ---


async def test_range_is_201_with_created_links_and_total(api: Api, partner: str) -> None:
    body = {"start_number": "+18001234560", "end_number": "+18001234569"}
    reply = await api.call("POST", f"{BASE}/ranges", partner, json=body)
    assert reply.status == 201
    assert list(reply.body) == ["created", "links", "total"]
    assert reply.body["total"] == 10
    uuids = [c["uuid"] for c in reply.body["created"]]
    assert len(set(uuids)) == 10
    assert all(set(c) == {"uuid"} for c in reply.body["created"])
    assert reply.body["links"] == [
        {"rel": "phone_numbers", "href": f"{api.base}{BASE}/{u}"} for u in uuids
    ]
    numbers = [(await get(api, partner, u))["number"] for u in uuids]
    assert numbers == [f"+1800123456{i}" for i in range(10)]


async def test_range_uuids_are_random_and_unrelated(api: Api, partner: str) -> None:
    """Each is its own version 4 uuid, as wazo-confd's: no shared prefix, no counter."""
    body = {"start_number": "+18001234500", "end_number": "+18001234599"}
    reply = await api.call("POST", f"{BASE}/ranges", partner, json=body)
    uuids = [uuidlib.UUID(c["uuid"]) for c in reply.body["created"]]
    assert len(uuids) == 100 and all(u.version == 4 for u in uuids)
    assert len({str(u)[:8] for u in uuids}) > 90  # 100 random 32-bit heads
    assert len({str(u)[-12:] for u in uuids}) == 100
    tails = sorted(int(str(u)[-12:], 16) for u in uuids)
    assert tails[-1] - tails[0] > 100  # not a counter


async def test_an_overlapping_range_creates_only_the_new_numbers(api: Api, partner: str) -> None:
    first = await api.call(
        "POST",
        f"{BASE}/ranges",
        partner,
        json={"start_number": "+18001234560", "end_number": "+18001234569"},
    )
    old = {c["uuid"] for c in first.body["created"]}
    reply = await api.call(
        "POST",
        f"{BASE}/ranges",
        partner,
        json={"start_number": "+18001234565", "end_number": "+18001234574"},
    )
    assert reply.status == 201
    created = {c["uuid"] for c in reply.body["created"]}
    assert len(created) == 5 and not created & old
    # total and links count every number of the range the tenant holds, as wazo-confd does
    assert reply.body["total"] == 10
    linked = {link["href"].rsplit("/", 1)[1] for link in reply.body["links"]}
    assert linked == created | (old & linked) and len(old & linked) == 5
    listed = await api.call("GET", f"{BASE}?search=%2B1800123&limit=100", partner)
    assert listed.body["total"] == 15


async def test_concurrent_overlapping_ranges_both_succeed_without_duplicates(
    api: Api, partner: str
) -> None:
    """Each statement skips what its snapshot shows; a number the other inserts
    meanwhile trips the unique index, and the retry skips it too."""

    async def post(start: int) -> Reply:
        body = {"start_number": f"+1800{start:07d}", "end_number": f"+1800{start + 1999:07d}"}
        return await api.call("POST", f"{BASE}/ranges", partner, json=body)

    for _ in range(3):
        replies = await asyncio.gather(post(0), post(1000), post(500))
        assert [r.status for r in replies] == [201] * 3, [r.body for r in replies]
    async with api.pool.acquire() as conn:
        count, distinct = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT number) FROM phone_numbers WHERE number LIKE '+1800%'"
        )
    assert count == distinct == 3000


async def test_range_keeps_leading_zeros_and_crosses_lengths(api: Api, partner: str) -> None:
    async def range_numbers(start: str, end: str) -> list[str]:
        body = {"start_number": start, "end_number": end}
        reply = await api.call("POST", f"{BASE}/ranges", partner, json=body)
        assert reply.status == 201, reply.body
        return [(await get(api, partner, c["uuid"]))["number"] for c in reply.body["created"]]

    assert await range_numbers("0098", "0102") == ["0098", "0099", "0100", "0101", "0102"]
    assert await range_numbers("98", "102") == ["98", "99", "100", "101", "102"]
    assert await range_numbers("+1414", "+1414") == ["+1414"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"end_number": "+18001234569"}, "start_number"),
        ({"start_number": "+18001234560"}, "end_number"),
        ({"start_number": 18001234560, "end_number": "+18001234569"}, "start_number"),
        ({"start_number": "+1800123456x", "end_number": "+18001234569"}, "start_number"),
        ({"start_number": "+18001234569", "end_number": "+18001234560"}, "end_number"),
        ({"start_number": "+18001234560", "end_number": "18001234569"}, "end_number"),
    ],
)
async def test_bad_ranges_are_400_naming_the_field(
    api: Api, partner: str, body: dict[str, Any], field: str
) -> None:
    reply = await api.call("POST", f"{BASE}/ranges", partner, json=body)
    assert error(reply) == (400, field)


class TestRangeLimit:
    @pytest.fixture
    def api_settings(self) -> list[str]:
        return ["ranges.max_span=100"]

    async def test_a_range_over_max_span_is_400_naming_the_limit(
        self, api: Api, partner: str
    ) -> None:
        body = {"start_number": "+18001234500", "end_number": "+18001234600"}
        reply = await api.call("POST", f"{BASE}/ranges", partner, json=body)
        assert error(reply) == (400, "end_number")
        assert "101 numbers; the limit is 100 (ranges.max_span)" in message(reply)
        body["end_number"] = "+18001234599"
        assert (await api.call("POST", f"{BASE}/ranges", partner, json=body)).status == 201


# --- the main number ---


async def mains(api: Api, tenant: str = "demo") -> list[tuple[str, bool]]:
    async with api.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT p.number, p.shared FROM phone_numbers p JOIN tenants t ON t.id = p.tenant_id"
            " WHERE t.slug = $1 AND p.main",
            tenant,
        )
    return [(r["number"], r["shared"]) for r in rows]


async def test_put_main_is_204_with_location_and_unflags_the_old_main(
    api: Api, partner: str
) -> None:
    first = await create(api, partner, {"number": "+15555550101"})
    second = await create(api, partner, {"number": "+15555550102"})
    assert await mains(api) == [("+492216698700", True)]
    for chosen in (first, second):
        body = {"phone_number_uuid": chosen["uuid"]}
        reply = await api.call("PUT", f"{BASE}/main", partner, json=body)
        assert (reply.status, reply.body) == (204, "")
        assert reply.headers["Location"] == chosen["links"][0]["href"]
        assert await mains(api) == [(chosen["number"], True)]
    # the old main stays shared; only the main flag moved
    old = await get(api, partner, first["uuid"])
    assert (old["main"], old["shared"]) == (False, True)
    main = await api.call("GET", f"{BASE}/main", partner)
    assert (main.status, main.body["uuid"], main.body["main"]) == (200, second["uuid"], True)
    # setting the main again is a no-op
    again = await api.call(
        "PUT", f"{BASE}/main", partner, json={"phone_number_uuid": second["uuid"]}
    )
    assert again.status == 204 and await mains(api) == [("+15555550102", True)]


async def test_concurrent_main_changes_leave_exactly_one_main(api: Api, partner: str) -> None:
    numbers = [await create(api, partner, {"number": f"+1555555010{i}"}) for i in range(4)]

    async def make_main(i: int) -> int:
        body = {"phone_number_uuid": numbers[i % 4]["uuid"]}
        return (await api.call("PUT", f"{BASE}/main", partner, json=body)).status

    assert await asyncio.gather(*(make_main(i) for i in range(16))) == [204] * 16
    assert len(await mains(api)) == 1


async def test_a_refused_main_change_keeps_the_old_main(api: Api, partner: str) -> None:
    missing = {"phone_number_uuid": "00000000-0000-4000-8000-000000000000"}
    assert error(await api.call("PUT", f"{BASE}/main", partner, json=missing)) == (
        404,
        "phone_number_uuid",
    )
    for body in ({}, {"phone_number_uuid": "nope"}, {"phone_number_uuid": 5}):
        reply = await api.call("PUT", f"{BASE}/main", partner, json=body)
        assert error(reply) == (400, "phone_number_uuid"), body
    assert await mains(api) == [("+492216698700", True)]


async def test_the_main_number_stays_shared_and_a_deleted_main_leaves_none(
    api: Api, partner: str
) -> None:
    listed = await api.call("GET", f"{BASE}?main=true", partner)
    main = listed.body["items"][0]
    path = f"{BASE}/{main['uuid']}"
    assert error(await api.call("PUT", path, partner, json={"shared": False})) == (400, "shared")
    assert (await api.call("DELETE", path, partner)).status == 204
    assert error(await api.call("GET", f"{BASE}/main", partner)) == (404, "main")


# --- tenants: from the key or Wazo-Tenant, and isolation ---


async def test_another_tenants_number_is_404_everywhere(
    api: Api, partner: str, other: dict[str, str]
) -> None:
    path = f"{BASE}/{other['number']}"
    assert error(await api.call("GET", path, partner)) == (404, "uuid")
    assert error(await api.call("PUT", path, partner, json={"caller_id_name": "X"})) == (
        404,
        "uuid",
    )
    assert error(await api.call("DELETE", path, partner)) == (404, "uuid")
    body = {"phone_number_uuid": other["number"]}
    assert error(await api.call("PUT", f"{BASE}/main", partner, json=body)) == (
        404,
        "phone_number_uuid",
    )
    listed = await api.call("GET", f"{BASE}?search=%2B1312", partner)
    assert listed.body == {"total": 0, "items": []}
    async with api.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT caller_id_name, main FROM phone_numbers WHERE uuid = $1", other["number"]
        )
    assert (row["caller_id_name"], row["main"]) == ("OTHER CO", False)


async def test_wazo_tenant_selects_the_tenant_by_uuid_or_slug(
    api: Api, operator: str, other: dict[str, str], demo_uuid: str
) -> None:
    for tenant in (other["uuid"], other["uuid"].upper(), "other"):
        found = await get(api, operator, other["number"], headers={"Wazo-Tenant": tenant})
        assert found["tenant_uuid"] == other["uuid"]
    # the same uuid asked in the demo tenant is another tenant's: 404
    reply = await api.call(
        "GET", f"{BASE}/{other['number']}", operator, headers={"Wazo-Tenant": demo_uuid}
    )
    assert error(reply) == (404, "uuid")
    created = await create(
        api, operator, {"number": "+13125550101"}, headers={"Wazo-Tenant": other["uuid"]}
    )
    assert created["tenant_uuid"] == other["uuid"]


async def test_a_tenant_the_key_does_not_reach_is_refused_like_a_missing_one(
    api: Api, partner: str, other: dict[str, str]
) -> None:
    replies = [
        await api.call("GET", BASE, partner, headers={"Wazo-Tenant": tenant})
        for tenant in (other["uuid"], "other", "00000000-0000-4000-8000-000000000000", "nosuch")
    ]
    assert {error(r) for r in replies} == {(403, "Wazo-Tenant")}
    assert {message(r).split(" - ")[0] for r in replies} == {"Forbidden"}
    assert [message(r).split("'")[4] for r in replies] == [" is not a tenant this key reaches"] * 4
    own = await api.call("GET", BASE, partner, headers={"Wazo-Tenant": "demo"})
    assert own.status == 200


async def test_who_needs_a_tenant_header_and_who_may_write(
    api: Api, operator: str, demo_uuid: str
) -> None:
    # an operator reaches every tenant: it must name one
    assert error(await api.call("GET", BASE, operator)) == (400, "Wazo-Tenant")
    sales = await api.key(Role.PARTNER, usergroups=["demo:sales"])
    assert error(await api.call("GET", BASE, sales)) == (403, "Wazo-Tenant")
    assert error(await api.call("GET", BASE, sales, headers={"Wazo-Tenant": demo_uuid})) == (
        403,
        "Wazo-Tenant",
    )
    # a user key reads its own tenant's numbers and writes none
    alice = await api.key(Role.USER, user="alice")
    listed = await api.call("GET", BASE, alice)
    assert (listed.status, listed.body["total"]) == (200, 2)
    for method, path, body in [
        ("POST", BASE, {"number": "+15555550100"}),
        ("PUT", f"{BASE}/{listed.body['items'][0]['uuid']}", {"caller_id_name": "X"}),
        ("DELETE", f"{BASE}/{listed.body['items'][0]['uuid']}", None),
        ("POST", f"{BASE}/ranges", {"start_number": "1000", "end_number": "1001"}),
        ("PUT", f"{BASE}/main", {"phone_number_uuid": listed.body["items"][1]["uuid"]}),
    ]:
        assert error(await api.call(method, path, alice, json=body)) == (
            403,
            "authorization",
        ), method
    assert (await api.call("GET", BASE)).status == 401


async def test_a_partner_of_several_tenants_names_one(
    api: Api, other: dict[str, str], demo_uuid: str
) -> None:
    both = await api.key(Role.PARTNER, enterprises=["demo", "other"])
    assert error(await api.call("GET", BASE, both)) == (400, "Wazo-Tenant")
    for tenant, total in ((demo_uuid, 2), (other["uuid"], 1)):
        listed = await api.call("GET", BASE, both, headers={"Wazo-Tenant": tenant})
        assert listed.body["total"] == total


# --- names published to the global directory ---


async def test_a_published_name_is_served_and_goes_with_the_number(api: Api, partner: str) -> None:
    created = await create(api, partner, {"number": "+15555550100", "caller_id_name": "ACME INC."})
    assert created["cnam"] == {"published": True, "status": "published", "reason": None}
    row = await entry(api, created["uuid"])
    assert row is not None
    assert (row["scope"], row["tenant_id"], row["key"], row["name"], row["approval"]) == (
        "global",
        None,
        "+15555550100",
        "ACME INC.",
        "approved",
    )
    await api.until_served("+15555550100", "ACME INC.")
    path = f"{BASE}/{created['uuid']}"
    assert (await api.call("DELETE", path, partner)).status == 204
    await api.until_served("+15555550100", None)
    assert await entry(api, created["uuid"]) is None


async def test_deleting_the_tenant_unpublishes_its_numbers_names(
    api: Api, operator: str, other: dict[str, str]
) -> None:
    headers = {"Wazo-Tenant": "other"}
    path = f"{BASE}/{other['number']}"
    assert (await api.call("PUT", path, operator, json={}, headers=headers)).status == 204
    await api.until_served("+13125550100", "OTHER CO")
    assert (await api.call("DELETE", "/api/operator/tenants/other", operator)).status == 204
    await api.until_served("+13125550100", None)


async def test_clearing_or_renaming_or_renumbering_follows_in_the_directory(
    api: Api, partner: str
) -> None:
    created = await create(api, partner, {"number": "+15555550100", "caller_id_name": "ACME"})
    path = f"{BASE}/{created['uuid']}"
    await api.until_served("+15555550100", "ACME")
    await api.call("PUT", path, partner, json={"caller_id_name": None})
    await api.until_served("+15555550100", None)
    assert (await get(api, partner, created["uuid"]))["cnam"]["status"] == "no-name"
    await api.call("PUT", path, partner, json={"caller_id_name": "ACME Corp"})
    await api.until_served("+15555550100", "ACME Corp")
    await api.call("PUT", path, partner, json={"number": "+15555550199"})
    await api.until_served("+15555550199", "ACME Corp")
    await api.until_served("+15555550100", None)
    # a number that stops being E.164 stops being published
    await api.call("PUT", path, partner, json={"number": "5555550199"})
    await api.until_served("+15555550199", None)
    assert (await get(api, partner, created["uuid"]))["cnam"]["status"] == "not-e164"


@pytest.mark.parametrize(
    "case",
    [
        ("1111", "Front desk", "not-e164", "'1111' has no '+' and country code"),
        ("5555550100", "ACME", "not-e164", "'5555550100' has no '+' and country code"),
        ("+1414", "ACME", "not-e164", "'+1414' is too short for its country"),
        ("+15555550100", "Caf\u00e9 Royal", "invalid-name", "has '\u00e9' (U+00E9)"),
        ("+15555550100", "A" * 16, "invalid-name", "16 characters long; the limit is 15"),
        ("+15555550100", "   ", "invalid-name", "is empty"),
    ],
)
async def test_numbers_and_names_the_directory_refuses_are_stored_but_not_published(
    api: Api, partner: str, case: tuple[str, str, str, str]
) -> None:
    number, name, status, why = case
    created = await create(api, partner, {"number": number, "caller_id_name": name})
    assert (created["number"], created["caller_id_name"]) == (number, name)
    assert created["cnam"]["published"] is False
    assert created["cnam"]["status"] == status
    assert why in created["cnam"]["reason"]
    assert await entry(api, created["uuid"]) is None


async def test_a_name_is_published_stripped(api: Api, partner: str) -> None:
    created = await create(api, partner, {"number": "+15555550100", "caller_id_name": " ACME "})
    assert created["caller_id_name"] == " ACME " and created["cnam"]["published"]
    await api.until_served("+15555550100", "ACME")


async def test_a_key_held_by_another_holder_is_not_overwritten(
    api: Api, partner: str, operator: str, other: dict[str, str]
) -> None:
    # the demo data's global directory has +12125550001 "NYC Pizza"
    taken = await create(api, partner, {"number": "+12125550001", "caller_id_name": "Not Pizza"})
    assert taken["cnam"]["status"] == "held-elsewhere"
    assert "+12125550001" in taken["cnam"]["reason"]
    # another tenant's number got there first
    headers = {"Wazo-Tenant": other["uuid"]}
    published = await create(
        api, operator, {"number": "+13125550199", "caller_id_name": "OTHER"}, headers=headers
    )
    assert published["cnam"]["published"]
    second = await create(api, partner, {"number": "+13125550199", "caller_id_name": "DEMO"})
    assert second["cnam"]["status"] == "held-elsewhere"
    await api.until_served("+13125550199", "OTHER")
    await api.until_served("+12125550001", "NYC Pizza")
    # once the holder lets go, the next write publishes it
    await api.call("DELETE", f"{BASE}/{published['uuid']}", operator, headers=headers)
    found = await get(api, partner, second["uuid"])
    assert found["cnam"]["status"] == "unpublished"
    await api.call("PUT", f"{BASE}/{second['uuid']}", partner, json={})
    await api.until_served("+13125550199", "DEMO")


async def test_numbers_stored_before_publishing_are_published_by_a_put(
    api: Api, partner: str
) -> None:
    listed = await api.call("GET", f"{BASE}?main=true", partner)
    main = listed.body["items"][0]
    assert (main["caller_id_name"], main["cnam"]["status"]) == ("ACME Cologne", "unpublished")
    assert (await api.call("PUT", f"{BASE}/{main['uuid']}", partner, json={})).status == 204
    assert (await get(api, partner, main["uuid"]))["cnam"]["published"] is True
    # the global directory answers for it now (no tenant asked: global scope only)
    await api.until_served("+492216698700", "ACME Cologne")


class TestRequireApproval:
    @pytest.fixture
    def api_settings(self) -> list[str]:
        return ["directory.require_approval=true"]

    async def test_a_name_waits_for_approval_and_a_new_name_waits_again(
        self, api: Api, partner: str
    ) -> None:
        created = await create(api, partner, {"number": "+15555550100", "caller_id_name": "ACME"})
        assert created["cnam"]["published"] is False
        assert created["cnam"]["status"] == "pending-approval"
        row = await entry(api, created["uuid"])
        assert row is not None and (row["approval"], row["approved_at"]) == ("pending", None)
        async with api.pool.acquire() as conn:
            # nothing reached the change log that caches serve from
            logged = await conn.fetchval(
                "SELECT count(*) FROM change_log WHERE key = '+15555550100'"
            )
            assert logged == 0
            await conn.execute(
                "UPDATE cnam_entries SET approval = 'approved', approved_at = now()"
                " WHERE phone_number_uuid = $1",
                created["uuid"],
            )
        await api.until_served("+15555550100", "ACME")
        path = f"{BASE}/{created['uuid']}"
        # an unchanged name keeps its approval
        await api.call("PUT", path, partner, json={"caller_id_name": "ACME", "shared": True})
        assert (await get(api, partner, created["uuid"]))["cnam"]["status"] == "published"
        # a changed one is approved afresh: it is no longer served meanwhile
        await api.call("PUT", path, partner, json={"caller_id_name": "ACME 2"})
        assert (await get(api, partner, created["uuid"]))["cnam"]["status"] == "pending-approval"
        await api.until_served("+15555550100", None)

    async def test_a_rejected_name_says_why(self, api: Api, partner: str) -> None:
        created = await create(api, partner, {"number": "+15555550100", "caller_id_name": "ACME"})
        async with api.pool.acquire() as conn:
            await conn.execute(
                "UPDATE cnam_entries SET approval = 'rejected', rejection_reason = 'not yours'"
                " WHERE phone_number_uuid = $1",
                created["uuid"],
            )
        found = await get(api, partner, created["uuid"])
        assert found["cnam"] == {
            "published": False,
            "status": "rejected",
            "reason": "an operator rejected it: not yours",
        }


# --- ownership: a number assigned to a user gives a dip to it that user's scopes ---


async def test_user_uuid_assigns_the_number_and_lookups_to_it_use_the_users_scopes(
    api: Api, partner: str, operator: str, other: dict[str, str]
) -> None:
    users = await api.call("GET", "/api/operator/tenants/demo/users", operator)
    alice = next(u for u in users.body["users"] if u["slug"] == "alice")["uuid"]
    created = await create(api, partner, {"number": "+15555550123", "user_uuid": alice})
    assert created["user_uuid"] == alice
    # +492216698713 is "Jane Doe" for the enterprise, "Jane (mobile)" in alice's own book
    await api.until_served("+492216698713", "Jane (mobile)", called="%2B15555550123")
    path = f"{BASE}/{created['uuid']}"
    assert (await api.call("PUT", path, partner, json={"user_uuid": None})).status == 204
    assert (await get(api, partner, created["uuid"]))["user_uuid"] is None
    await api.until_served("+492216698713", "Jane Doe", called="%2B15555550123")
    # a user of another tenant cannot be assigned
    reply = await api.call("PUT", path, partner, json={"user_uuid": other["bob"]})
    assert error(reply) == (400, "user_uuid")


async def test_deleting_the_user_unassigns_the_number(
    api: Api, partner: str, operator: str
) -> None:
    bob = await api.call("POST", "/api/operator/tenants/demo/users", operator, json={"slug": "bob"})
    created = await create(api, partner, {"number": "1234", "user_uuid": bob.body["uuid"]})
    assert (
        await api.call("DELETE", "/api/operator/tenants/demo/users/bob", operator)
    ).status == 204
    assert (await get(api, partner, created["uuid"]))["user_uuid"] is None


# --- wazo-confd-client's requests, replayed as its phone_numbers command sends them ---


class WazoConfdClient:
    """The requests of wazo-confd-client's ``phone_numbers`` command (a ``MultiTenantCommand``
    plus ``set_main``) on its ``ConfdSession``: base URL ``{host}/api/confd/1.1``, the
    token in ``X-Auth-Token``, the tenant in ``Wazo-Tenant``, JSON bodies sent as data."""

    READ: ClassVar = {"Accept": "application/json"}
    WRITE: ClassVar = {"Accept": "application/json", "Content-Type": "application/json"}

    def __init__(self, api: Api, token: str, tenant: str) -> None:
        self.api = api
        self.session = {
            "Connection": "close",
            "X-Auth-Token": token,
            "Wazo-Tenant": tenant,
            "User-agent": "wazo-confd-client-replay",
        }

    async def send(self, method: str, path: str, headers: dict[str, str], **kw: Any) -> Reply:
        reply = await self.api.call(method, path, headers={**self.session, **headers}, **kw)
        assert reply.status in (200, 201, 204), (method, path, reply.status, reply.body)
        return reply

    async def list(self, **params: Any) -> Any:
        params.setdefault("recurse", False)
        query = {k: str(v) for k, v in params.items()}
        return (await self.send("GET", BASE, self.READ, params=query)).body

    async def get(self, number_uuid: str) -> Any:
        return (await self.send("GET", f"{BASE}/{number_uuid}", self.READ)).body

    async def create(self, body: dict[str, Any]) -> Any:
        return (await self.send("POST", BASE, self.WRITE, data=json.dumps(body))).body

    async def update(self, body: dict[str, Any]) -> None:
        sent = {k: v for k, v in body.items() if k != "links"}
        await self.send("PUT", f"{BASE}/{body['uuid']}", self.WRITE, data=json.dumps(sent))

    async def delete(self, number_uuid: str) -> None:
        await self.send("DELETE", f"{BASE}/{number_uuid}", self.READ)

    async def set_main(self, body: dict[str, Any]) -> None:
        await self.send("PUT", f"{BASE}/main", self.WRITE, json=body)


async def test_wazo_confd_clients_phone_numbers_command_works_unchanged(
    api: Api, operator: str, demo_uuid: str
) -> None:
    client = WazoConfdClient(api, operator, demo_uuid)
    created = await client.create({"number": "+15555550100", "caller_id_name": "ACME INC."})
    assert created["tenant_uuid"] == demo_uuid
    listed = await client.list(search="5555550100")
    assert listed["total"] == 1 and listed["items"][0]["uuid"] == created["uuid"]
    found = await client.get(created["uuid"])
    found["caller_id_name"] = "ACME CORP"
    found["shared"] = True
    await client.update(found)
    assert (await client.get(created["uuid"]))["caller_id_name"] == "ACME CORP"
    await api.until_served("+15555550100", "ACME CORP")
    await client.set_main({"phone_number_uuid": created["uuid"]})
    assert (await client.get(created["uuid"]))["main"] is True
    await client.delete(created["uuid"])
    assert (await client.list())["total"] == 2
    await api.until_served("+15555550100", None)
