"""Seed 000's CNAM endpoints over real HTTP against the embedded PostgreSQL."""

from __future__ import annotations

import pytest
from api_client import Api

from cnamd.model import Role

USER = "/api/user/cnam"
GROUP = "/api/partner/usergroup/sales/cnam"
ENTERPRISE = "/api/partner/enterprise/demo/cnam"


@pytest.fixture
async def alice(api: Api) -> str:
    return await api.key(Role.USER, user="alice")


@pytest.fixture
async def partner(api: Api) -> str:
    return await api.key(Role.PARTNER, enterprises=["demo"])


async def test_list_is_seed_shaped_and_flags_prefixes(api: Api, partner: str) -> None:
    reply = await api.call("GET", ENTERPRISE, partner)
    assert reply.status == 200
    assert reply.body == {
        "cnam": [
            {"phone": "+4922166987", "name": "ACME Cologne", "prefix": True},
            {"phone": "+492216698712", "name": "John Doe"},
            {"phone": "+492216698713", "name": "Jane Doe"},
        ],
        "next": None,
    }


async def test_post_creates_then_replaces_and_the_lookup_serves_it(api: Api, alice: str) -> None:
    for name in ("Bob", "Bob", "Robert"):
        reply = await api.call("POST", f"{USER}/+4915112345678", alice, json={"name": name})
        assert (reply.status, reply.body) == (200, {})
    await api.until_served("+4915112345678", "Robert", tenant="demo", user="alice")
    async with api.pool.acquire() as conn:
        logged = await conn.fetch(
            "SELECT name, old_name FROM change_log WHERE key = '+4915112345678' ORDER BY id"
        )
    # the repeated "Bob" logged nothing: POST is idempotent
    assert [(r["name"], r["old_name"]) for r in logged] == [("Bob", None), ("Robert", "Bob")]


async def test_national_numbers_are_read_with_the_tenants_region(api: Api, partner: str) -> None:
    reply = await api.call("POST", f"{ENTERPRISE}/0221%206698799", partner, json={"name": "Kiosk"})
    assert reply.status == 200
    listed = await api.call("GET", f"{ENTERPRISE}?next=%2B492216698799&count=1", partner)
    assert listed.body["cnam"] == [{"phone": "+492216698799", "name": "Kiosk"}]


async def test_delete_then_wrong_cnam(api: Api, partner: str) -> None:
    reply = await api.call("DELETE", f"{ENTERPRISE}/+492216698712", partner)
    assert (reply.status, reply.body) == (200, {})
    await api.until_served("+492216698712", "ACME Cologne", tenant="demo")
    again = await api.call("DELETE", f"{ENTERPRISE}/+492216698712", partner)
    assert again.status == 404
    assert again.body["status"] == "wrong-cnam" and again.body["field"] == "phone"


async def test_delete_names_a_prefix_entry_by_its_key(api: Api, partner: str) -> None:
    reply = await api.call("DELETE", f"{ENTERPRISE}/+4922166987", partner)
    assert reply.status == 200
    await api.until_served("+492216698799", None, tenant="demo")


@pytest.mark.parametrize(
    "case",
    [
        ("/+492216698799", {"name": "Bad\u00e9"}, "invalid-name", "name"),
        ("/+492216698799", {"name": "A" * 16}, "invalid-name", "name"),
        ("/+492216698799", {"name": ""}, "invalid-name", "name"),
        ("/+492216698799", {"name": 5}, "invalid-name", "name"),
        ("/+492216698799", {}, "invalid-name", "name"),
        ("/+492216698799", ["John"], "invalid-request", "body"),
        ("/not-a-number", {"name": "John"}, "invalid-phone", "phone"),
        ("/+1", {"name": "John"}, "invalid-phone", "phone"),
    ],
)
async def test_post_validation_names_the_field(
    api: Api, partner: str, case: tuple[str, object, str, str]
) -> None:
    path, body, status, field = case
    reply = await api.call("POST", ENTERPRISE + path, partner, json=body)
    assert reply.status == 400
    assert (reply.body["status"], reply.body["field"]) == (status, field)
    assert reply.body["message"]


async def test_post_with_a_body_that_is_not_json(api: Api, partner: str) -> None:
    reply = await api.call("POST", f"{ENTERPRISE}/+492216698799", partner, data=b"{name")
    assert reply.status == 400 and reply.body["field"] == "body"


@pytest.mark.parametrize(
    ("query", "field"),
    [("count=0", "count"), ("count=501", "count"), ("count=x", "count"), ("next=abc", "next")],
)
async def test_list_parameters_are_checked(api: Api, partner: str, query: str, field: str) -> None:
    reply = await api.call("GET", f"{ENTERPRISE}?{query}", partner)
    assert reply.status == 400 and reply.body["field"] == field


async def test_next_with_an_unencoded_plus_still_pages(api: Api, partner: str) -> None:
    reply = await api.call("GET", f"{ENTERPRISE}?next=+492216698713", partner)
    assert reply.body["cnam"] == [{"phone": "+492216698713", "name": "Jane Doe"}]


async def test_usergroup_phone_book(api: Api, partner: str) -> None:
    reply = await api.call("POST", f"{GROUP}/+4930901821", partner, json={"name": "Sales 2"})
    assert reply.status == 200
    listed = await api.call("GET", GROUP, partner)
    assert [e["phone"] for e in listed.body["cnam"]] == ["+4930901820", "+4930901821"]
    qualified = await api.call("GET", "/api/partner/usergroup/demo:sales/cnam", partner)
    assert qualified.body == listed.body


async def test_range_is_stored_as_the_fewest_prefixes(api: Api, partner: str) -> None:
    body = {"start": "+18001234560", "end": "+18001234579", "name": "ACME"}
    reply = await api.call("POST", ENTERPRISE + "-ranges", partner, json=body)
    assert reply.status == 200
    assert reply.body["cnam"] == [
        {"phone": "+1800123456", "name": "ACME", "prefix": True},
        {"phone": "+1800123457", "name": "ACME", "prefix": True},
    ]
    await api.until_served("+18001234575", "ACME", tenant="demo")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"start": "+18001234569", "end": "+18001234560", "name": "X"}, "end"),
        ({"start": "+18001234560", "end": "+1800123456", "name": "X"}, "end"),
        ({"start": "+18000000000", "end": "+18009999999", "name": "X"}, "end"),
        ({"start": "+18001234560", "end": "+18001234569", "name": "X\u00e9"}, "name"),
        ({"start": "nope", "end": "+18001234569", "name": "X"}, "start"),
        ({"end": "+18001234569", "name": "X"}, "start"),
    ],
)
async def test_range_validation_stores_nothing(
    api: Api, partner: str, body: dict[str, str], field: str
) -> None:
    reply = await api.call("POST", ENTERPRISE + "-ranges", partner, json=body)
    assert reply.status == 400 and reply.body["field"] == field
    async with api.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM cnam_entries WHERE key LIKE '+1800%'") == 1


async def test_paging_1201_entries_under_writes_returns_each_survivor_once(
    api: Api, partner: str
) -> None:
    """Keyset paging: inserts and deletes between pages neither skip nor repeat a survivor."""
    numbers = [f"+1212555{i:04d}" for i in range(1201)]
    async with api.pool.acquire() as conn:
        await conn.execute("DELETE FROM cnam_entries WHERE scope = 'enterprise'")
        await conn.execute(
            "INSERT INTO cnam_entries (scope, tenant_id, key, name, approved_at)"
            " SELECT 'enterprise', t.id, k, 'N', now() FROM tenants t, unnest($1::text[]) k"
            " WHERE t.slug = 'demo'",
            numbers,
        )
    deleted: set[str] = set()
    deleted_ahead: set[str] = set()
    seen: list[str] = []
    start: str | None = None
    for page in range(100):
        query = f"?count=97&next=%2B{start[1:]}" if start else "?count=97"
        reply = await api.call("GET", ENTERPRISE + query, partner)
        assert reply.status == 200
        seen += [e["phone"] for e in reply.body["cnam"]]
        start = reply.body["next"]
        if start is None:
            break
        # between pages: delete one behind and one ahead, insert one behind and one ahead
        behind, ahead = numbers[page * 5], numbers[min(page * 97 + 150, 1200)]
        for number in (behind, ahead):
            if number != start:
                await api.call("DELETE", f"{ENTERPRISE}/{number}", partner)
                deleted.add(number)
                if number > start:
                    deleted_ahead.add(number)
        for number in (f"+1212554{page:04d}", f"+1212556{page:04d}"):
            await api.call("POST", f"{ENTERPRISE}/{number}", partner, json={"name": "New"})
    assert start is None
    assert len(seen) == len(set(seen)), "an entry came twice"
    survivors = set(numbers) - deleted
    assert survivors <= set(seen), f"missing: {sorted(survivors - set(seen))[:5]}"
    assert not deleted_ahead & set(seen), "an entry deleted before its page was read came"
    assert seen == sorted(seen)
