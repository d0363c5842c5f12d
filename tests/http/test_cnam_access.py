"""Who reaches which phone book: every key kind x own/other objects x every verb.

Another tenant's enterprise or usergroup answers 404 exactly as a missing one
does, so probing cannot tell them apart; a write that is refused changes
nothing.
"""

from __future__ import annotations

import itertools

import pytest
from api_client import Api

from cnamd.model import Role

# (method, path suffix, JSON body) for each verb of a phone book
VERBS = [
    ("GET", "/cnam", None),
    ("POST", "/cnam/+492216698777", {"name": "Probe"}),
    ("DELETE", "/cnam/+492216698712", None),
    ("POST", "/cnam-ranges", {"start": "+492216600000", "end": "+492216600009", "name": "Probe"}),
]

BOOKS = {
    "user": "/api/user",
    "demo": "/api/partner/enterprise/demo",
    "other": "/api/partner/enterprise/other",
    "sales": "/api/partner/usergroup/demo:sales",
    "ops": "/api/partner/usergroup/other:ops",
    "missing": "/api/partner/enterprise/nosuch",
}

# what each key gets from each book: 2xx, or the refusal
EXPECTED = {
    "operator": {"user": 403, "demo": 200, "other": 200, "sales": 200, "ops": 200, "missing": 404},
    "partner-demo": {
        "user": 403, "demo": 200, "other": 404, "sales": 200, "ops": 404, "missing": 404,
    },
    "partner-sales": {
        "user": 403, "demo": 404, "other": 404, "sales": 200, "ops": 404, "missing": 404,
    },
    "alice": {"user": 200, "demo": 403, "other": 403, "sales": 403, "ops": 403, "missing": 403},
}  # fmt: skip


@pytest.fixture
async def keys(api: Api) -> dict[str, str]:
    async with api.pool.acquire() as conn:
        other = await conn.fetchval(
            "INSERT INTO tenants (slug, name, region) VALUES ('other', 'Other', 'US') RETURNING id"
        )
        group = await conn.fetchval(
            "INSERT INTO usergroups (tenant_id, slug) VALUES ($1, 'ops') RETURNING id", other
        )
        await conn.execute(
            "INSERT INTO users (tenant_id, usergroup_id, slug) VALUES ($1, $2, 'bob')", other, group
        )
    return {
        "operator": await api.key(Role.OPERATOR),
        "partner-demo": await api.key(Role.PARTNER, enterprises=["demo"]),
        "partner-sales": await api.key(Role.PARTNER, usergroups=["demo:sales"]),
        "alice": await api.key(Role.USER, user="alice"),
    }


async def _snapshot(api: Api) -> list[tuple[str, int, str, str]]:
    async with api.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT scope, owner_id, key, name FROM cnam_entries ORDER BY 1, 2, 3"
        )
    return [tuple(r) for r in rows]


@pytest.mark.parametrize(("who", "book"), list(itertools.product(EXPECTED, BOOKS)))
async def test_access_matrix(api: Api, keys: dict[str, str], who: str, book: str) -> None:
    expected = EXPECTED[who][book]
    for method, suffix, body in VERBS:
        before = await _snapshot(api)
        reply = await api.call(method, BOOKS[book] + suffix, keys[who], json=body)
        if expected == 200:
            # DELETE of the demo number exists only in the enterprise book
            assert reply.status in (200, 404), (method, suffix, reply.body)
            if reply.status == 404:
                assert (method, reply.body["status"]) == ("DELETE", "wrong-cnam")
        else:
            assert reply.status == expected, (method, suffix, reply.body)
            assert await _snapshot(api) == before


async def test_refusals_do_not_tell_missing_from_foreign(api: Api, keys: dict[str, str]) -> None:
    token = keys["partner-demo"]
    foreign = await api.call("GET", BOOKS["other"] + "/cnam", token)
    missing = await api.call("GET", BOOKS["missing"] + "/cnam", token)
    assert foreign.status == missing.status == 404
    assert foreign.body["status"] == missing.body["status"] == "wrong-enterprise"
    assert foreign.body["message"].replace("other", "X") == missing.body["message"].replace(
        "nosuch", "X"
    )


@pytest.mark.parametrize(("method", "suffix", "body"), VERBS)
async def test_no_credentials_is_401_with_a_challenge(
    api: Api, method: str, suffix: str, body: object
) -> None:
    for book in ("user", "demo", "sales"):
        reply = await api.call(method, BOOKS[book] + suffix, json=body)
        assert reply.status == 401
        assert reply.body["field"] == "authorization"
        assert "Bearer" in reply.headers["WWW-Authenticate"]


async def test_a_group_name_in_two_enterprises_must_be_qualified(
    api: Api, keys: dict[str, str]
) -> None:
    async with api.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO usergroups (tenant_id, slug) SELECT id, 'sales' FROM tenants"
            " WHERE slug = 'other'"
        )
    ambiguous = await api.call("GET", "/api/partner/usergroup/sales/cnam", keys["operator"])
    assert ambiguous.status == 400 and ambiguous.body["field"] == "usergroup"
    assert "demo:sales" in ambiguous.body["message"]
    # a partner that reaches only one of them is not told about the other
    mine = await api.call("GET", "/api/partner/usergroup/sales/cnam", keys["partner-demo"])
    assert mine.status == 200 and mine.body["cnam"][0]["phone"] == "+4930901820"


async def test_user_key_writes_only_its_own_book(api: Api, keys: dict[str, str]) -> None:
    reply = await api.call(
        "POST", "/api/user/cnam/+492216698777", keys["alice"], json={"name": "Mine"}
    )
    assert reply.status == 200
    async with api.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT e.scope, u.slug FROM cnam_entries e JOIN users u ON u.id = e.user_id"
            " WHERE e.key = '+492216698777'"
        )
    assert (row["scope"], row["slug"]) == ("user", "alice")
