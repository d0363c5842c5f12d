"""Lookups from an untrusted source: API keys checked in memory, each within its reach."""

from __future__ import annotations

import asyncio
import base64

import pytest
from api_client import Api

from cnamd.model import Role

LOOKUP = "/v1/lookup/+492216698713"


@pytest.fixture
def api_settings() -> list[str]:
    return ["http.trusted_networks="]


async def _key(api: Api, role: Role, **kw: object) -> str:
    token = await api.key(role, **kw)
    await api.until_key(token.split(".")[0])
    return token


async def test_without_credentials_an_untrusted_source_gets_401(api: Api) -> None:
    reply = await api.call("GET", LOOKUP + "?tenant=demo")
    assert reply.status == 401 and reply.body["field"] == "authorization"


async def test_a_user_key_looks_up_as_its_own_user(api: Api) -> None:
    token = await _key(api, Role.USER, user="alice")
    reply = await api.call("GET", LOOKUP, token)
    assert (reply.status, reply.body["name"], reply.body["scope"]) == (200, "Jane (mobile)", "user")
    other_user = await api.call("GET", LOOKUP + "?tenant=demo&user=bob", token)
    assert other_user.status == 404 and other_user.body["field"] == "user"


@pytest.mark.parametrize("form", ["bearer", "x-auth-token", "basic", "query"])
async def test_every_credential_form_works_for_lookups(api: Api, form: str) -> None:
    token = await _key(api, Role.PARTNER, enterprises=["demo"])
    key_id, secret = token.split(".")
    headers, query = {}, ""
    if form == "bearer":
        headers["Authorization"] = f"Bearer {token}"
    elif form == "x-auth-token":
        headers["X-Auth-Token"] = token
    elif form == "basic":
        headers["Authorization"] = (
            "Basic " + base64.b64encode(f"{key_id}:{secret}".encode()).decode()
        )
    else:
        query = f"?account_sid={key_id}&auth_token={secret}"
    reply = await api.call("GET", LOOKUP + query, headers=headers)
    # a partner with one enterprise asks in it by default
    assert (reply.status, reply.body["name"]) == (200, "Jane Doe")


async def test_a_partner_cannot_name_a_tenant_it_is_not_granted(api: Api) -> None:
    async with api.pool.acquire() as conn:
        await conn.execute("INSERT INTO tenants (slug, name) VALUES ('other', 'Other')")
    token = await _key(api, Role.PARTNER, enterprises=["other"])
    foreign = await api.call("GET", LOOKUP + "?tenant=demo", token)
    missing = await api.call("GET", LOOKUP + "?tenant=nosuch", token)
    assert foreign.status == missing.status == 404
    # without a tenant it asks in its own: the demo names are not served to it
    own = await api.call("GET", LOOKUP, token)
    assert own.status == 404


async def test_a_revoked_key_stops_working_without_a_database_read(api: Api) -> None:
    token = await _key(api, Role.OPERATOR)
    assert (await api.call("GET", LOOKUP + "?tenant=demo", token)).status == 200
    async with api.pool.acquire() as conn:
        await conn.execute("UPDATE api_keys SET revoked_at = now()")
    await api.until_key(token.split(".")[0], known=False)
    assert (await api.call("GET", LOOKUP + "?tenant=demo", token)).status == 401


async def test_an_expired_key_is_refused(api: Api) -> None:
    token = await _key(api, Role.OPERATOR)
    async with api.pool.acquire() as conn:
        await conn.execute("UPDATE api_keys SET expires_at = now() - interval '1 second'")
    for _ in range(200):
        if (await api.call("GET", LOOKUP + "?tenant=demo", token)).status == 401:
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the expired key kept working")


async def test_a_wrong_secret_is_refused_and_repeated_failures_get_429(api: Api) -> None:
    token = await _key(api, Role.OPERATOR)
    wrong = token.split(".")[0] + ".not-the-secret"
    statuses = [(await api.call("GET", LOOKUP, wrong)).status for _ in range(12)]
    assert statuses[:10] == [401] * 10
    assert statuses[-1] == 429
    limited = await api.call("GET", LOOKUP, wrong)
    assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
    # the right key from the same source is still served (an operator key without a
    # tenant finds no name here): failures are no lockout
    assert (await api.call("GET", LOOKUP, token)).status == 404
