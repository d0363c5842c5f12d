"""/v3/phone from an untrusted source: each credential form, its failures, and the PyPI
``opencnam`` client (0.7) -- written by others for api.opencnam.com -- pointed at cnamd."""

from __future__ import annotations

import asyncio
import base64

import opencnam
import pytest
from api_client import Api

from cnamd.model import Role

PATH = "/v3/phone/+492216698712"


@pytest.fixture
def api_settings() -> list[str]:
    return ["http.trusted_networks=", "http.auth_failure_burst=3", "http.auth_failure_rate=0.01"]


async def _key(api: Api, role: Role = Role.PARTNER, **kw: object) -> tuple[str, str]:
    """A key whose id has reached the cache (keys travel with the change feed, like names)."""
    if not kw:
        kw = {"enterprises": ["demo"]}
    token = await api.key(role, **kw)
    key_id, secret = token.split(".")
    for _ in range(200):
        contexts = api.directory.contexts
        if contexts is not None and key_id in contexts.keys:
            return key_id, secret
        await asyncio.sleep(0.025)
    raise AssertionError(f"key {key_id} never reached the cache")


@pytest.mark.parametrize("form", ["query", "bearer", "basic", "x-auth-token"])
async def test_every_credential_form_gets_the_name(api: Api, form: str) -> None:
    key_id, secret = await _key(api)
    headers, query = {}, "?format=pbx"
    if form == "query":
        query += f"&account_sid={key_id}&auth_token={secret}"
    elif form == "bearer":
        headers["Authorization"] = f"Bearer {key_id}.{secret}"
    elif form == "basic":
        headers["Authorization"] = (
            "Basic " + base64.b64encode(f"{key_id}:{secret}".encode()).decode()
        )
    else:
        headers["X-Auth-Token"] = f"{key_id}.{secret}"
    reply = await api.call("GET", PATH + query, headers=headers)
    assert (reply.status, reply.body) == (200, "John Doe")


async def test_a_user_key_asks_as_its_user(api: Api) -> None:
    key_id, secret = await _key(api, Role.USER, user="alice")
    reply = await api.call(
        "GET", f"/v3/phone/492216698713?account_sid={key_id}&auth_token={secret}"
    )
    assert reply.status == 200 and reply.body["name"] == "Jane (mobile)"


async def test_no_credentials_is_401_json_with_a_challenge(api: Api) -> None:
    reply = await api.call("GET", PATH)
    assert reply.status == 401 and reply.body["field"] == "authorization"
    assert "Basic" in reply.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    "query",
    ["?format=pbx", "?format=pbx&account_sid=nosuchkey1&auth_token=wrong", "?format=text"],
)
async def test_failed_login_in_pbx_format_is_401_with_an_empty_body(api: Api, query: str) -> None:
    reply = await api.call("GET", PATH + query)
    assert (reply.status, reply.body) == (401, "")
    assert "Bearer" in reply.headers["WWW-Authenticate"]


async def test_a_wrong_secret_is_refused(api: Api) -> None:
    key_id, _ = await _key(api)
    reply = await api.call("GET", f"{PATH}?account_sid={key_id}&auth_token=not-the-secret")
    assert reply.status == 401 and reply.body["status"] == "unauthorized"


async def test_a_source_that_keeps_failing_gets_429_with_retry_after(api: Api) -> None:
    for _ in range(3):
        await api.call("GET", PATH + "?format=pbx&account_sid=nosuchkey1&auth_token=x")
    pbx = await api.call("GET", PATH + "?format=pbx&account_sid=nosuchkey1&auth_token=x")
    assert (pbx.status, pbx.body) == (429, "")
    assert int(pbx.headers["Retry-After"]) >= 1
    as_json = await api.call("GET", PATH)
    assert as_json.status == 429 and as_json.body["status"] == "too-many-requests"


async def test_the_opencnam_client_gets_the_name(api: Api) -> None:
    """python-opencnam 0.7 sends GET <API_URL % number>?format=pbx&account_sid=..&auth_token=..
    with requests, and keeps the body of a 200 as the caller name."""
    key_id, secret = await _key(api)

    class CnamdPhone(opencnam.Phone):  # type: ignore[misc]
        OPENCNAM_API_URL = api.base + "/v3/phone/%s"

    hit = await asyncio.to_thread(CnamdPhone, "+492216698712", key_id, secret)
    bare = await asyncio.to_thread(CnamdPhone, "492216698712", key_id, secret)
    miss = await asyncio.to_thread(CnamdPhone, "+15555550100", key_id, secret)
    refused = await asyncio.to_thread(CnamdPhone, "+492216698712", key_id, "wrong")
    assert (hit.cnam, bare.cnam, miss.cnam, refused.cnam) == ("John Doe", "John Doe", "", "")
