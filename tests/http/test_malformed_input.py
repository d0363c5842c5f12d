"""Malformed input gets a clear 4xx in the family's own error shape, never a 500.

Each test is one attack from the fuzzing report: JSON nested 1,000 deep, NUL
and non-ASCII bytes in credentials, ``%00`` in any parameter that reaches
PostgreSQL, integers past PostgreSQL's bigint, ``multipart/form-data``
without a boundary. Credentials that are not text count as failed logins,
so a source sending them is rate limited like any other guesser.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any

import pytest
from api_client import Api

from cnamd.model import Role

BURST = 3


@pytest.fixture
def api_settings() -> list[str]:
    """A small failed-login budget, so counting shows as a 429 after BURST failures."""
    return [f"http.auth_failure_burst={BURST}", "http.auth_failure_rate=0.001"]


@pytest.fixture
async def operator(api: Api) -> str:
    return await api.key(Role.OPERATOR)


@pytest.fixture
async def partner(api: Api) -> str:
    return await api.key(Role.PARTNER, enterprises=["demo"])


async def raw(api: Api, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 exchange written byte for byte (clients refuse to send some of these)."""
    host, port = api.base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return int(lines[0].split()[1]), headers, body
    finally:
        writer.close()
        await writer.wait_closed()


def get(path: str, *headers: bytes) -> bytes:
    lines = [b"GET " + path.encode() + b" HTTP/1.1", b"Host: 127.0.0.1", *headers]
    return b"\r\n".join([*lines, b"Connection: close", b"", b""])


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


# --- JSON nested 1,000 deep ---


async def test_json_nested_1000_deep_on_authenticate_is_atmospheres_422(api: Api) -> None:
    reply = await api.call(
        "POST",
        "/_rest/v4/authenticate",
        data='{"username": ' + deep(1000) + "}",
        headers={"Content-Type": "application/json"},
    )
    assert reply.status == 422
    assert set(reply.body) == {"code", "error"} and reply.body["code"] == 422
    assert "deep" in reply.body["error"]


async def test_json_nested_1000_deep_on_a_cnamd_route_is_400_naming_the_body(
    api: Api, operator: str
) -> None:
    reply = await api.call("POST", "/api/operator/tenants", operator, data=deep(1000))
    assert reply.status == 400
    assert reply.body["field"] == "body" and "deep" in reply.body["message"]


async def test_json_nested_1000_deep_on_flowroute_is_its_errors_array(
    api: Api, partner: str
) -> None:
    reply = await api.call(
        "POST",
        "/v2/cnams",
        partner,
        data='{"data": {"attributes": {"value": ' + deep(1000) + "}}}",
        headers={"Content-Type": "application/vnd.api+json"},
    )
    assert reply.status == 422
    (error,) = json.loads(reply.body)["errors"]
    assert list(error["detail"]) == ["body"]


async def test_json_nested_1000_deep_in_a_reject_reason_is_400(api: Api, operator: str) -> None:
    reply = await api.call("POST", "/api/operator/cnam-records/1/reject", operator, data=deep(1000))
    assert reply.status == 400 and reply.body["field"] == "body"


async def test_a_json_body_over_the_size_limit_is_413_in_the_family_shape(
    api: Api, operator: str
) -> None:
    big = json.dumps({"slug": "x" * (2 * 1024 * 1024)}).encode()
    reply = await api.call("POST", "/api/operator/tenants", operator, data=io.BytesIO(big))
    assert reply.status == 413 and reply.body["field"] == "body"
    vendor = await api.call(
        "POST",
        "/_rest/v4/authenticate",
        data=io.BytesIO(big),
        headers={"Content-Type": "application/json"},
    )
    assert vendor.status == 413 and vendor.body["code"] == 413


# --- credentials that are not text: 401, counted as failed logins ---


def basic(user: bytes, password: bytes) -> bytes:
    return b"Authorization: Basic " + base64.b64encode(user + b":" + password)


@pytest.mark.parametrize(
    "header",
    [
        basic(b"key\x00id", b"secret"),
        b"X-Auth-Token: key\xff.secret",
        b"Authorization: Bearer key\xc3\xa9.s\xff",
    ],
    ids=["basic-nul", "x-auth-token-not-utf8", "bearer-not-ascii"],
)
async def test_credentials_that_are_not_text_are_401_and_counted(api: Api, header: bytes) -> None:
    statuses = []
    for _ in range(BURST + 1):
        status, headers, body = await raw(api, get("/api/operator/tenants", header))
        statuses.append(status)
        assert json.loads(body)["field"] == "authorization"
    assert statuses == [401] * BURST + [429]
    assert "retry-after" in headers


async def test_non_text_credentials_on_flowroute_are_its_401(api: Api) -> None:
    status, headers, body = await raw(api, get("/v2/cnams", basic(b"k\x00", b"s")))
    assert status == 401 and headers["www-authenticate"].startswith("Basic")
    assert json.loads(body)["errors"][0]["status"] == 401


@pytest.mark.parametrize("username", ["key\x00id", "k\udcffey"], ids=["nul", "surrogate"])
async def test_atmosphere_username_that_is_not_text_is_401_and_counted(
    api: Api, username: str
) -> None:
    body = json.dumps({"username": username, "password": "secret"})
    statuses = []
    for _ in range(BURST + 1):
        reply = await api.call(
            "POST",
            "/_rest/v4/authenticate",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        statuses.append(reply.status)
    assert statuses == [401] * BURST + [429]
    assert reply.body["code"] == 429


async def test_an_atmosphere_session_token_that_is_not_text_is_401_and_counted(
    api: Api,
) -> None:
    statuses = []
    for _ in range(BURST + 1):
        status, _, body = await raw(
            api, get("/_rest/v3/my/orders/1", b"Authorization: Bearer s\xc3\xa9ssion")
        )
        statuses.append(status)
        assert set(json.loads(body)) == {"code", "error"}
    assert statuses == [401] * BURST + [429]


# --- %00 in parameters that reach PostgreSQL ---


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/operator/tenants/de%00mo", "tenant"),
        ("/api/operator/tenants/demo/usergroups/sa%00les", "usergroup"),
        ("/api/operator/tenants/demo/users/al%00ice", "user"),
        ("/api/operator/keys/k%00", "key_id"),
        ("/api/partner/usergroup/%00/cnam", "usergroup"),
        ("/api/partner/enterprise/de%00mo/cnam", "enterprise"),
        ("/api/partner/enterprise/demo/cnam?next=%00", "next"),
        ("/v1/directory/yealink?term=ab%00", "term"),
        ("/v1/directory/gigaset?ln=ab%00", "ln"),
        ("/api/confd/1.1/phone-numbers?search=%00", "search"),
        ("/api/confd/1.1/phone-numbers/%00", "uuid"),
        ("/v1/lookup/+492216698712?tenant=de%00mo", "tenant"),
        ("/api/operator/cnam-records?approval=%00", "approval"),
    ],
)
async def test_a_nul_in_a_parameter_is_400_naming_it(
    api: Api, operator: str, path: str, field: str
) -> None:
    token = None if path.startswith("/v1/") else operator  # lookups: a trusted source
    reply = await api.call("GET", path, token)
    assert reply.status == 400, reply.body
    if path.startswith("/api/confd/"):  # wazo-confd's shape: a list of messages
        [message] = reply.body
        assert f"field '{field}'" in message and "NUL" in message
    else:
        assert reply.body["field"] == field and "NUL" in reply.body["message"]


async def test_a_nul_in_a_json_string_is_400_naming_the_field(api: Api, operator: str) -> None:
    body = {"role": "operator", "label": "a\x00b"}
    reply = await api.call("POST", "/api/operator/keys", operator, json=body)
    assert reply.status == 400 and reply.body["field"] == "label"


async def test_a_lone_surrogate_in_a_json_string_is_400_naming_the_field(
    api: Api, operator: str
) -> None:
    reply = await api.call(
        "POST",
        "/api/operator/tenants/demo/users",
        operator,
        data='{"slug": "bob", "usergroup": "\\udcff"}',
    )
    assert reply.status == 400 and reply.body["field"] == "usergroup"


async def test_a_byte_that_is_not_utf8_in_the_wazo_tenant_header_is_400_naming_it(
    api: Api, operator: str
) -> None:
    status, _, body = await raw(
        api,
        get(
            "/api/confd/1.1/phone-numbers",
            b"Authorization: Bearer " + operator.encode(),
            b"Wazo-Tenant: d\xffmo",
        ),
    )
    [message] = json.loads(body)  # wazo-confd's shape: a list of messages
    assert status == 400 and "field 'Wazo-Tenant'" in message


async def test_a_nul_on_a_flowroute_route_is_its_422(api: Api, partner: str) -> None:
    reply = await api.call("GET", "/v2/cnams?value=%00", partner)
    assert reply.status == 422
    assert json.loads(reply.body)["errors"][0]["detail"] == {"value": [reply_reason(reply)]}


def reply_reason(reply: Any) -> str:
    return str(json.loads(reply.body)["errors"][0]["detail"]["value"][0])


async def test_a_nul_on_an_atmosphere_route_is_its_422(api: Api, partner: str) -> None:
    reply = await api.call("GET", "/_rest/v3/my/orders/%00", partner)
    assert reply.status == 422 and reply.body["code"] == 422


async def test_a_nul_in_a_text_lookup_is_an_empty_400(api: Api) -> None:
    reply = await api.call("GET", "/v3/phone/+492216698712?format=pbx&tenant=%00")
    assert (reply.status, reply.body) == (400, "")


# --- integers past PostgreSQL's range ---


async def test_offset_past_bigint_on_cnam_records_is_400_naming_it(api: Api, operator: str) -> None:
    reply = await api.call("GET", "/api/operator/cnam-records?offset=9223372036854775808", operator)
    assert reply.status == 400 and reply.body["field"] == "offset"


# --- multipart without a boundary ---


async def test_multipart_without_a_boundary_on_v2_cnams_is_422(api: Api, partner: str) -> None:
    reply = await api.call(
        "POST",
        "/v2/cnams",
        partner,
        data=b"value=ACME",
        headers={"Content-Type": "multipart/form-data"},
    )
    assert reply.status == 422
    (error,) = json.loads(reply.body)["errors"]
    assert list(error["detail"]) == ["body"]


# --- schema violations the fuzzing found ---


async def test_an_empty_tenant_on_opencnam_keeps_opencnams_404_body(api: Api) -> None:
    reply = await api.call("GET", "/v3/phone/+16502530000?tenant=")
    assert reply.status == 404 and list(reply.body) == ["error"]
