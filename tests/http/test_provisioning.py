"""/api/operator over real HTTP: tenants, usergroups, users and API keys, and who reaches them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from api_client import Api, Reply
from prometheus_client import REGISTRY

from cnamd.model import Role
from cnamd.store import apikeys

TENANTS = "/api/operator/tenants"
KEYS = "/api/operator/keys"
ACME = {"slug": "acme", "name": "ACME Corp", "region": "DE", "networks": ["10.1.0.0/16"]}


@pytest.fixture
async def operator(api: Api) -> str:
    return await api.key(Role.OPERATOR)


@pytest.fixture
async def keys(api: Api, operator: str) -> dict[str, str]:
    """A second tenant ``other`` (usergroup ops, user bob) and one key of each kind."""
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
        "operator": operator,
        "partner-demo": await api.key(Role.PARTNER, enterprises=["demo"]),
        "partner-sales": await api.key(Role.PARTNER, usergroups=["demo:sales"]),
        "alice": await api.key(Role.USER, user="alice"),
    }


def _error(reply: Reply) -> tuple[int, str]:
    return reply.status, reply.body.get("field")


# --- tenants ---


async def test_tenant_lifecycle(api: Api, operator: str) -> None:
    created = await api.call("POST", TENANTS, operator, json=ACME)
    assert created.status == 201
    assert created.headers["Location"] == f"{TENANTS}/acme"
    assert {k: created.body[k] for k in ACME} == ACME
    assert created.body["created_at"]
    fetched = await api.call("GET", f"{TENANTS}/acme", operator)
    assert fetched.body == created.body
    listed = await api.call("GET", TENANTS, operator)
    assert [t["slug"] for t in listed.body["tenants"]] == ["acme", "demo"]

    change = {"name": "ACME AG", "region": "AT", "networks": ["192.0.2.0/24"]}
    replaced = await api.call("PUT", f"{TENANTS}/acme", operator, json=change)
    assert replaced.status == 200
    assert {k: replaced.body[k] for k in change} == change
    assert (await api.call("GET", f"{TENANTS}/acme", operator)).body == replaced.body

    deleted = await api.call("DELETE", f"{TENANTS}/acme", operator)
    assert (deleted.status, deleted.body) == (204, "")
    gone = await api.call("GET", f"{TENANTS}/acme", operator)
    assert _error(gone) == (404, "tenant")


async def test_networks_and_region_are_normalized(api: Api, operator: str) -> None:
    body = {
        **ACME,
        "region": "de",
        "networks": ["10.1.2.3/8", "192.0.2.1", "10.0.0.0/8", "2001:db8::1/32"],
    }
    reply = await api.call("POST", TENANTS, operator, json=body)
    assert reply.status == 201
    assert reply.body["region"] == "DE"
    assert reply.body["networks"] == ["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32"]


async def test_put_without_networks_clears_them(api: Api, operator: str) -> None:
    reply = await api.call(
        "PUT", f"{TENANTS}/demo", operator, json={"name": "Demo", "region": "DE"}
    )
    assert (reply.status, reply.body["networks"]) == (200, [])


async def test_a_new_tenants_names_and_networks_are_served(api: Api, operator: str) -> None:
    assert (await api.call("POST", TENANTS, operator, json=ACME)).status == 201
    # national numbers in the new tenant's book are read with its region
    reply = await api.call(
        "POST", "/api/partner/enterprise/acme/cnam/030%20901820", operator, json={"name": "Acme"}
    )
    assert reply.status == 200
    await api.until_served("+4930901820", "Acme", tenant="acme")
    for _ in range(200):  # SIP dips from its network are asked in its scopes
        contexts = api.directory.contexts
        if contexts is not None and contexts.source("10.1.2.3")[1].tenant_id is not None:
            break
        await asyncio.sleep(0.025)
    else:
        raise AssertionError("the tenant's network never reached the cache")


async def test_a_deleted_tenants_names_stop_being_served(api: Api, operator: str) -> None:
    # +492216698700 is demo's main number: a call to it is asked in demo's scopes
    await api.until_served("+492216698712", "John Doe", called="%2B492216698700")
    reply = await api.call("DELETE", f"{TENANTS}/demo", operator)
    assert reply.status == 204
    await api.until_served("+492216698712", None, called="%2B492216698700")
    await api.until_served("+12125550001", "NYC Pizza", called="%2B492216698700")
    async with api.pool.acquire() as conn:
        left = await conn.fetchval("SELECT count(*) FROM cnam_entries WHERE tenant_id IS NOT NULL")
        users = await conn.fetchval("SELECT count(*) FROM users")
    assert (left, users) == (0, 0)
    lookup = await api.call("GET", "/v1/lookup/+492216698712?tenant=demo")
    assert _error(lookup) == (404, "tenant")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"slug": "Bad Slug"}, "slug"),
        ({"slug": "-acme"}, "slug"),
        ({"slug": "a" * 64}, "slug"),
        ({"slug": "acme:x"}, "slug"),
        ({"slug": 7}, "slug"),
        ({"slug": None}, "slug"),
        ({"name": ""}, "name"),
        ({"name": "x" * 257}, "name"),
        ({"name": ["ACME"]}, "name"),
        ({"name": None}, "name"),
        ({"region": "XX"}, "region"),
        ({"region": "DEU"}, "region"),
        ({"region": ""}, "region"),
        ({"region": 49}, "region"),
        ({"region": None}, "region"),
        ({"networks": ["10.0.0.0/33"]}, "networks"),
        ({"networks": ["example.com"]}, "networks"),
        ({"networks": ["10.0.0.0/8", ""]}, "networks"),
        ({"networks": "10.0.0.0/8"}, "networks"),
        ({"networks": [10]}, "networks"),
        ({"network": ["10.0.0.0/8"]}, "network"),
    ],
)
async def test_tenant_validation_names_the_field(
    api: Api, operator: str, change: dict[str, Any], field: str
) -> None:
    body = {**ACME, **change}
    body = {k: v for k, v in body.items() if v is not None}
    reply = await api.call("POST", TENANTS, operator, json=body)
    assert _error(reply) == (400, field), reply.body
    assert reply.body["status"] == "invalid-request" and reply.body["message"]
    async with api.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM tenants") == 1


@pytest.mark.parametrize("body", [b"", b"{slug", b"[]", b'"acme"'])
async def test_a_body_that_is_not_a_json_object(api: Api, operator: str, body: bytes) -> None:
    reply = await api.call("POST", TENANTS, operator, data=body)
    assert _error(reply) == (400, "body")


async def test_duplicate_tenant_slug_is_a_conflict(api: Api, operator: str) -> None:
    reply = await api.call("POST", TENANTS, operator, json={**ACME, "slug": "demo"})
    assert _error(reply) == (409, "slug")
    assert reply.body["status"] == "conflict"


async def test_slugs_are_immutable(api: Api, operator: str) -> None:
    body = {"slug": "renamed", "name": "Demo", "region": "DE"}
    reply = await api.call("PUT", f"{TENANTS}/demo", operator, json=body)
    assert _error(reply) == (400, "slug")
    same = await api.call("PUT", f"{TENANTS}/demo", operator, json={**body, "slug": "demo"})
    assert same.status == 200
    user = await api.call("PUT", f"{TENANTS}/demo/users/alice", operator, json={"slug": "bob"})
    assert _error(user) == (400, "slug")


async def test_put_is_validated_like_post(api: Api, operator: str) -> None:
    body = {"name": "Demo", "region": "ZZ"}
    reply = await api.call("PUT", f"{TENANTS}/demo", operator, json=body)
    assert _error(reply) == (400, "region")
    missing = await api.call("PUT", f"{TENANTS}/demo", operator, json={"region": "DE"})
    assert _error(missing) == (400, "name")


# --- usergroups and users ---


async def test_usergroup_lifecycle(api: Api, operator: str) -> None:
    base = f"{TENANTS}/demo/usergroups"
    created = await api.call("POST", base, operator, json={"slug": "support"})
    assert created.status == 201
    assert created.headers["Location"] == f"{base}/support"
    assert created.body["tenant"] == "demo" and created.body["slug"] == "support"
    assert (await api.call("GET", f"{base}/support", operator)).body == created.body
    listed = await api.call("GET", base, operator)
    assert [g["slug"] for g in listed.body["usergroups"]] == ["sales", "support"]
    again = await api.call("POST", base, operator, json={"slug": "support"})
    assert _error(again) == (409, "slug")

    # deleting a group keeps its users, in no group, and drops its names
    deleted = await api.call("DELETE", f"{base}/sales", operator)
    assert deleted.status == 204
    assert _error(await api.call("GET", f"{base}/sales", operator)) == (404, "usergroup")
    alice = await api.call("GET", f"{TENANTS}/demo/users/alice", operator)
    assert alice.body["usergroup"] is None
    await api.until_served("+4930901820", None, tenant="demo", user="alice")
    missing = await api.call("DELETE", f"{base}/sales", operator)
    assert _error(missing) == (404, "usergroup")


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"slug": "Sales Team"}, 400, "slug"),
        ({"slug": ""}, 400, "slug"),
        ({"slug": 3}, 400, "slug"),
        ({}, 400, "slug"),
        ({"slug": "x", "name": "X"}, 400, "name"),
    ],
)
async def test_usergroup_validation(
    api: Api, operator: str, body: dict[str, Any], status: int, field: str
) -> None:
    reply = await api.call("POST", f"{TENANTS}/demo/usergroups", operator, json=body)
    assert _error(reply) == (status, field)


async def test_user_lifecycle(api: Api, operator: str) -> None:
    base = f"{TENANTS}/demo/users"
    created = await api.call("POST", base, operator, json={"slug": "bob", "usergroup": "sales"})
    assert created.status == 201
    assert created.headers["Location"] == f"{base}/bob"
    assert {k: created.body[k] for k in ("tenant", "slug", "usergroup")} == {
        "tenant": "demo",
        "slug": "bob",
        "usergroup": "sales",
    }
    assert (await api.call("GET", f"{base}/bob", operator)).body == created.body
    plain = await api.call("POST", base, operator, json={"slug": "carol"})
    assert plain.body["usergroup"] is None
    listed = await api.call("GET", base, operator)
    assert [u["slug"] for u in listed.body["users"]] == ["alice", "bob", "carol"]

    left = await api.call("PUT", f"{base}/bob", operator, json={"usergroup": None})
    assert (left.status, left.body["usergroup"]) == (200, None)
    joined = await api.call("PUT", f"{base}/carol", operator, json={"usergroup": "sales"})
    assert joined.body["usergroup"] == "sales"
    # carol now hears her group's names
    await api.until_served("+4930901820", "Sales Lead Berlin", tenant="demo", user="carol")

    assert (await api.call("DELETE", f"{base}/bob", operator)).status == 204
    assert _error(await api.call("GET", f"{base}/bob", operator)) == (404, "user")
    assert _error(await api.call("DELETE", f"{base}/bob", operator)) == (404, "user")
    absent = await api.call("PUT", f"{base}/bob", operator, json={"usergroup": None})
    assert _error(absent) == (404, "user")


async def test_a_deleted_users_keys_stop_working(api: Api, operator: str) -> None:
    alice = await api.key(Role.USER, user="alice")
    assert (await api.call("GET", "/api/user/cnam", alice)).status == 200
    assert (await api.call("DELETE", f"{TENANTS}/demo/users/alice", operator)).status == 204
    assert (await api.call("GET", "/api/user/cnam", alice)).status == 401


@pytest.mark.parametrize(
    "case",
    [
        ("POST", {"slug": "dave", "usergroup": "nosuch"}, 404, "usergroup"),
        ("POST", {"slug": "dave", "usergroup": 5}, 400, "usergroup"),
        ("POST", {"slug": "Dave!"}, 400, "slug"),
        ("POST", {"slug": "x" * 128}, 400, "slug"),
        ("POST", {"usergroup": "sales"}, 400, "slug"),
        ("POST", {"slug": "alice"}, 409, "slug"),
        ("POST", {"slug": "dave", "group": "sales"}, 400, "group"),
        ("PUT", {"usergroup": "nosuch"}, 404, "usergroup"),
        ("PUT", {"usergroup": ["sales"]}, 400, "usergroup"),
    ],
)
async def test_user_validation(
    api: Api, operator: str, case: tuple[str, dict[str, Any], int, str]
) -> None:
    method, body, status, field = case
    path = f"{TENANTS}/demo/users" + ("/alice" if method == "PUT" else "")
    reply = await api.call(method, path, operator, json=body)
    assert _error(reply) == (status, field), reply.body


async def test_a_usergroup_of_another_tenant_is_unknown(api: Api, keys: dict[str, str]) -> None:
    body = {"usergroup": "ops"}
    reply = await api.call("PUT", f"{TENANTS}/demo/users/alice", keys["operator"], json=body)
    assert _error(reply) == (404, "usergroup")


# --- who reaches what ---

# (name, method, path with {t} = tenant, {g} = its usergroup, {u} = its user, body);
# reads first, then writes, the tenant's own deletion last
VERBS: list[tuple[str, str, str, Any]] = [
    ("get-tenant", "GET", "{t}", None),
    ("list-groups", "GET", "{t}/usergroups", None),
    ("get-group", "GET", "{t}/usergroups/{g}", None),
    ("list-users", "GET", "{t}/users", None),
    ("get-user", "GET", "{t}/users/{u}", None),
    ("put-tenant", "PUT", "{t}", {"name": "Renamed", "region": "FR", "networks": []}),
    ("post-group", "POST", "{t}/usergroups", {"slug": "probe"}),
    ("post-user", "POST", "{t}/users", {"slug": "probe"}),
    ("put-user", "PUT", "{t}/users/{u}", {"usergroup": None}),
    ("delete-user", "DELETE", "{t}/users/{u}", None),
    ("delete-group", "DELETE", "{t}/usergroups/{g}", None),
    ("delete-tenant", "DELETE", "{t}", None),
]
OBJECTS = {"demo": ("sales", "alice"), "other": ("ops", "bob"), "nosuch": ("sales", "alice")}

_OPERATOR = [200, 200, 200, 200, 200, 200, 201, 201, 200, 204, 204, 204]
_MISSING = [404] * len(VERBS)
# per key: the status of each verb against demo, other and nosuch
EXPECTED: dict[str, dict[str, list[int]]] = {
    "operator": {"demo": _OPERATOR, "other": _OPERATOR, "nosuch": _MISSING},
    "partner-demo": {
        "demo": [200, 200, 200, 200, 200, 403, 201, 201, 200, 204, 204, 403],
        "other": _MISSING,
        "nosuch": _MISSING,
    },
    "partner-sales": {
        "demo": [200, 200, 200, 200, 200, 403, 403, 403, 403, 403, 403, 403],
        "other": _MISSING,
        "nosuch": _MISSING,
    },
    "alice": {"demo": [403] * 12, "other": [403] * 12, "nosuch": [403] * 12},
}


async def _state(api: Api) -> list[tuple[Any, ...]]:
    async with api.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT t.slug, t.name, t.region, g.slug, u.slug, u.usergroup_id"
            " FROM tenants t LEFT JOIN usergroups g ON g.tenant_id = t.id"
            " LEFT JOIN users u ON u.tenant_id = t.id ORDER BY 1, 4, 5"
        )
    return [tuple(r) for r in rows]


@pytest.mark.parametrize("who", EXPECTED)
async def test_access_matrix(api: Api, keys: dict[str, str], who: str) -> None:
    got: dict[str, list[int]] = {}
    for tenant, (group, user) in OBJECTS.items():
        got[tenant] = []
        for _name, method, template, body in VERBS:
            path = TENANTS + "/" + template.format(t=tenant, g=group, u=user)
            before = await _state(api)
            reply = await api.call(method, path, keys[who], json=body)
            got[tenant].append(reply.status)
            if reply.status >= 400:
                assert await _state(api) == before, (method, path)
    assert got == EXPECTED[who]


@pytest.mark.parametrize(
    ("who", "status"),
    [("operator", 201), ("partner-demo", 403), ("partner-sales", 403), ("alice", 403)],
)
async def test_only_operators_create_tenants(
    api: Api, keys: dict[str, str], who: str, status: int
) -> None:
    reply = await api.call("POST", TENANTS, keys[who], json=ACME)
    assert reply.status == status


@pytest.mark.parametrize(
    ("who", "seen"),
    [
        ("operator", (["demo", "other"], ["sales", "support"], ["alice", "carol"])),
        ("partner-demo", (["demo"], ["sales", "support"], ["alice", "carol"])),
        ("partner-sales", (["demo"], ["sales"], ["alice"])),
    ],
)
async def test_lists_show_only_what_the_key_sees(
    api: Api, keys: dict[str, str], who: str, seen: tuple[list[str], list[str], list[str]]
) -> None:
    tenants, groups, users = seen
    operator = keys["operator"]
    await api.call("POST", f"{TENANTS}/demo/usergroups", operator, json={"slug": "support"})
    await api.call("POST", f"{TENANTS}/demo/users", operator, json={"slug": "carol"})
    token = keys[who]
    listed = await api.call("GET", TENANTS, token)
    assert [t["slug"] for t in listed.body["tenants"]] == tenants
    listed = await api.call("GET", f"{TENANTS}/demo/usergroups", token)
    assert [g["slug"] for g in listed.body["usergroups"]] == groups
    listed = await api.call("GET", f"{TENANTS}/demo/users", token)
    assert [u["slug"] for u in listed.body["users"]] == users


async def test_a_group_partner_cannot_tell_other_groups_from_missing_ones(
    api: Api, keys: dict[str, str]
) -> None:
    operator, token = keys["operator"], keys["partner-sales"]
    await api.call("POST", f"{TENANTS}/demo/usergroups", operator, json={"slug": "support"})
    await api.call("POST", f"{TENANTS}/demo/users", operator, json={"slug": "carol"})
    for kind, present, absent in [("usergroups", "support", "nosuch"), ("users", "carol", "x")]:
        hidden = await api.call("GET", f"{TENANTS}/demo/{kind}/{present}", token)
        missing = await api.call("GET", f"{TENANTS}/demo/{kind}/{absent}", token)
        assert hidden.status == missing.status == 404
        assert hidden.body["field"] == missing.body["field"]


async def test_a_foreign_tenant_answers_as_a_missing_one(api: Api, keys: dict[str, str]) -> None:
    token = keys["partner-demo"]
    foreign = await api.call("GET", f"{TENANTS}/other/users/bob", token)
    missing = await api.call("GET", f"{TENANTS}/nosuch/users/bob", token)
    assert foreign.body == {
        **missing.body,
        "message": missing.body["message"].replace("nosuch", "other"),
    }


# --- API keys over HTTP ---


async def _create_key(api: Api, operator: str, **body: Any) -> Reply:
    reply = await api.call("POST", KEYS, operator, json=body)
    assert reply.status == 201, reply.body
    return reply


async def test_a_key_created_over_http_works_in_all_three_forms(api: Api, operator: str) -> None:
    reply = await _create_key(api, operator, role="partner", enterprises=["demo"], label="crm")
    body = reply.body
    key_id, _, secret = body["token"].partition(".")
    assert key_id == body["key_id"] and secret
    assert reply.headers["Location"] == f"{KEYS}/{key_id}"
    assert reply.headers["Cache-Control"] == "no-store"
    assert (body["role"], body["grants"], body["label"]) == ("partner", ["demo"], "crm")
    path = "/api/partner/enterprise/demo/cnam"
    forms: list[dict[str, Any]] = [
        {"headers": {"Authorization": f"Bearer {body['token']}"}},
        {"headers": {"X-Auth-Token": body["token"]}},
        {"headers": {"Authorization": aiohttp.encode_basic_auth(key_id, secret)}},
    ]
    for form in forms:
        used = await api.call("GET", path, **form)
        assert used.status == 200, form


async def test_keys_are_listed_without_secrets(api: Api, operator: str) -> None:
    created = await _create_key(api, operator, role="user", user="demo:alice")
    secret = created.body["token"].partition(".")[2]
    listed = await api.call("GET", KEYS, operator)
    assert listed.status == 200
    mine = [k for k in listed.body["keys"] if k["key_id"] == created.body["key_id"]]
    assert mine == [{k: v for k, v in created.body.items() if k != "token"}]
    assert mine[0]["user"] == "alice" and mine[0]["enterprise"] == "demo"
    assert secret not in str(listed.body)
    one = await api.call("GET", f"{KEYS}/{created.body['key_id']}", operator)
    assert one.body == mine[0]
    assert _error(await api.call("GET", f"{KEYS}/cknosuch", operator)) == (404, "key_id")


async def test_a_revoked_key_is_refused_and_stays_listed(api: Api, operator: str) -> None:
    created = await _create_key(api, operator, role="user", user="alice")
    token, key_id = created.body["token"], created.body["key_id"]
    assert (await api.call("GET", "/api/user/cnam", token)).status == 200
    revoked = await api.call("DELETE", f"{KEYS}/{key_id}", operator)
    assert revoked.status == 200 and revoked.body["revoked_at"]
    assert (await api.call("GET", "/api/user/cnam", token)).status == 401
    listed = await api.call("GET", KEYS, operator)
    assert [k["revoked_at"] for k in listed.body["keys"] if k["key_id"] == key_id] == [
        revoked.body["revoked_at"]
    ]
    again = await api.call("DELETE", f"{KEYS}/{key_id}", operator)
    assert again.body["revoked_at"] == revoked.body["revoked_at"]
    assert _error(await api.call("DELETE", f"{KEYS}/cknosuch", operator)) == (404, "key_id")


async def test_an_expired_key_is_refused(api: Api, operator: str) -> None:
    created = await _create_key(
        api, operator, role="user", user="alice", expires_at="2999-01-01T00:00:00Z"
    )
    assert created.body["expires_at"].startswith("2999-01-01T00:00:00")
    token = created.body["token"]
    assert (await api.call("GET", "/api/user/cnam", token)).status == 200
    async with api.pool.acquire() as conn:
        await conn.execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE key_id = $1",
            created.body["key_id"],
        )
    assert (await api.call("GET", "/api/user/cnam", token)).status == 401


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"role": "admin"}, 400, "role"),
        ({}, 400, "role"),
        ({"role": ["operator"]}, 400, "role"),
        ({"role": "user"}, 400, "user"),
        ({"role": "user", "user": "nobody"}, 404, "user"),
        ({"role": "user", "user": 5}, 400, "user"),
        ({"role": "operator", "user": "alice"}, 400, "user"),
        ({"role": "partner"}, 400, "enterprises"),
        ({"role": "partner", "enterprises": ["nosuch"]}, 404, "enterprises"),
        ({"role": "partner", "enterprises": "demo"}, 400, "enterprises"),
        ({"role": "partner", "usergroups": ["sales"]}, 404, "usergroups"),
        ({"role": "partner", "usergroups": [1]}, 400, "usergroups"),
        ({"role": "operator", "enterprises": ["demo"]}, 400, "enterprises"),
        ({"role": "operator", "label": 5}, 400, "label"),
        ({"role": "operator", "label": "x" * 257}, 400, "label"),
        ({"role": "operator", "expires_at": "tomorrow"}, 400, "expires_at"),
        ({"role": "operator", "expires_at": "2999-01-01T00:00:00"}, 400, "expires_at"),
        ({"role": "operator", "expires_at": "2001-01-01T00:00:00Z"}, 400, "expires_at"),
        ({"role": "operator", "expires_at": 1}, 400, "expires_at"),
        ({"role": "operator", "secret": "mine"}, 400, "secret"),
    ],
)
async def test_key_validation_names_the_field(
    api: Api, operator: str, body: dict[str, Any], status: int, field: str
) -> None:
    reply = await api.call("POST", KEYS, operator, json=body)
    assert _error(reply) == (status, field), reply.body
    async with api.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM api_keys") == 1


@pytest.mark.parametrize("who", ["partner-demo", "partner-sales", "alice"])
async def test_only_operators_manage_keys(api: Api, keys: dict[str, str], who: str) -> None:
    token = keys[who]
    key_id = token.partition(".")[0]
    for method, path, body in [
        ("GET", KEYS, None),
        ("POST", KEYS, {"role": "operator"}),
        ("GET", f"{KEYS}/{key_id}", None),
        ("DELETE", f"{KEYS}/{key_id}", None),
    ]:
        reply = await api.call(method, path, token, json=body)
        assert _error(reply) == (403, None), (method, path)
    assert (await api.call("GET", TENANTS, keys["partner-demo"])).status == 200


# --- credentials ---


async def test_no_credentials_is_401_with_a_challenge(api: Api) -> None:
    for method, path in [("GET", TENANTS), ("POST", KEYS), ("DELETE", f"{TENANTS}/demo")]:
        reply = await api.call(method, path, json={})
        assert _error(reply) == (401, "authorization")
        assert reply.headers["WWW-Authenticate"] == 'Bearer realm="cnamd", Basic realm="cnamd"'


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer no-dot-here"},
        {"Authorization": "Bearer ckdeadbeef.wrong"},
        {"X-Auth-Token": ".secret"},
        {"Authorization": "Digest username=x"},
        {"Authorization": "Basic !!!"},
    ],
)
async def test_malformed_or_wrong_credentials_are_401(api: Api, headers: dict[str, str]) -> None:
    reply = await api.call("GET", TENANTS, headers=headers)
    assert _error(reply) == (401, "authorization")
    assert "WWW-Authenticate" in reply.headers


def _auth_failures() -> float:
    return REGISTRY.get_sample_value("cnamd_auth_failures_total") or 0.0


async def test_a_source_that_keeps_failing_is_refused_with_429(api: Api, operator: str) -> None:
    # over its budget, a source's keys are checked against the cache's key table first:
    # wait (bounded) until the feed brought the just-created key there
    found = apikeys.split_token(operator)
    assert found is not None
    for _ in range(200):
        contexts = api.directory.contexts
        if contexts is not None and contexts.authenticate(*found, time.time()) is not None:
            break
        await asyncio.sleep(0.02)
    before = _auth_failures()
    for _ in range(10):  # http.auth_failure_burst
        reply = await api.call("GET", TENANTS, "ckdeadbeef.wrong")
        assert reply.status == 401
    assert _auth_failures() == before + 10
    refused = await api.call("GET", TENANTS, "ckdeadbeef.wrong")
    assert _error(refused) == (429, "authorization")
    assert int(refused.headers["Retry-After"]) >= 1
    # a valid key from the same source still works: the attacker cannot lock it out
    assert (await api.call("GET", TENANTS, operator)).status == 200
    assert _auth_failures() == before + 10
