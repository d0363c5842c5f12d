"""OpenCNAM's /v3/phone over a real socket: formats, number forms, misses and withheld callers.

The source is trusted (loopback) here; tests/http/test_opencnam_keys.py asks
with API keys from an untrusted one.
"""

from __future__ import annotations

import pytest
from api_client import Api

JOHN = {
    "name": "John Doe",
    "number": "+492216698712",
    "price": 0,
    "uri": "/v3/phone/%2B492216698712",
}
MISS = {"error": "No CNAM information available for phone number"}


@pytest.mark.parametrize(
    "number",
    [
        "+492216698712",
        "%2B492216698712",
        "492216698712",
        "%2B49%20221%20669%208712",
        "02216698712",
        "0221%206698712",
    ],
)
async def test_every_number_form_finds_the_name(api: Api, number: str) -> None:
    reply = await api.call("GET", f"/v3/phone/{number}?tenant=demo")
    assert (reply.status, reply.body) == (200, JOHN)
    assert reply.headers["Content-Type"].startswith("application/json")


async def test_the_v2_path_answers_as_v3(api: Api) -> None:
    """KAZOO's default OpenCNAM URL and older FreePBX sources ask /v2/phone."""
    reply = await api.call("GET", "/v2/phone/%2B492216698712?tenant=demo")
    assert (reply.status, reply.body) == (200, JOHN)


@pytest.mark.parametrize("number", ["+12125550001", "12125550001", "%2B1%20212%20555%200001"])
async def test_global_directory_without_a_tenant(api: Api, number: str) -> None:
    reply = await api.call("GET", f"/v3/phone/{number}")
    assert reply.status == 200
    assert reply.body == {
        "name": "NYC Pizza",
        "number": "+12125550001",
        "price": 0,
        "uri": "/v3/phone/%2B12125550001",
    }


async def test_a_prefix_block_names_the_numbers_inside_it(api: Api) -> None:
    reply = await api.call("GET", "/v3/phone/+492216698799?tenant=demo&format=pbx")
    assert (reply.status, reply.body) == (200, "ACME Cologne")


async def test_user_scope_answers_for_that_user(api: Api) -> None:
    reply = await api.call("GET", "/v3/phone/492216698713?tenant=demo&user=alice&format=text")
    assert (reply.status, reply.body) == (200, "Jane (mobile)")


@pytest.mark.parametrize(
    "query,headers",
    [
        ("?format=pbx", {}),
        ("?format=text", {}),
        ("", {"Accept": "text/pbx"}),
        ("", {"Accept": "text/plain"}),
    ],
)
async def test_text_formats_answer_the_bare_name(
    api: Api, query: str, headers: dict[str, str]
) -> None:
    sep = "&" if query else "?"
    reply = await api.call(
        "GET", f"/v3/phone/+492216698712{query}{sep}tenant=demo", headers=headers
    )
    assert (reply.status, reply.body) == (200, "John Doe")
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"


async def test_json_miss_is_opencnams_error(api: Api) -> None:
    reply = await api.call("GET", "/v3/phone/+15555550100")
    assert (reply.status, reply.body) == (404, MISS)


@pytest.mark.parametrize("fmt", ["pbx", "text"])
async def test_text_miss_is_404_with_an_empty_body(api: Api, fmt: str) -> None:
    reply = await api.call("GET", f"/v3/phone/+15555550100?format={fmt}")
    assert (reply.status, reply.body) == (404, "")


async def test_tenant_names_stay_private_without_a_context(api: Api) -> None:
    reply = await api.call("GET", "/v3/phone/+492216698712")
    assert (reply.status, reply.body) == (404, MISS)


async def test_bad_number_is_400_json_naming_the_field(api: Api) -> None:
    reply = await api.call("GET", "/v3/phone/12ab")
    assert reply.status == 400
    assert reply.body["status"] == "invalid-phone" and reply.body["field"] == "number"


@pytest.mark.parametrize("fmt", ["pbx", "text"])
async def test_errors_in_text_formats_have_empty_bodies(api: Api, fmt: str) -> None:
    bad_number = await api.call("GET", f"/v3/phone/12ab?format={fmt}")
    unknown_tenant = await api.call("GET", f"/v3/phone/+492216698712?format={fmt}&tenant=nosuch")
    assert (bad_number.status, bad_number.body) == (400, "")
    assert (unknown_tenant.status, unknown_tenant.body) == (404, "")


async def test_unknown_format_is_400_naming_the_field(api: Api) -> None:
    reply = await api.call("GET", "/v3/phone/+492216698712?format=xml")
    assert reply.status == 400 and reply.body["field"] == "format"


@pytest.mark.parametrize("word", ["anonymous", "Anonymous", "restricted", "PRIVATE"])
async def test_withheld_caller_gets_the_private_name(api: Api, word: str) -> None:
    text = await api.call("GET", f"/v3/phone/{word}?format=pbx")
    assert (text.status, text.body) == (200, "PRIVATE NAME")
    body = await api.call("GET", f"/v3/phone/{word}")
    assert body.status == 200
    assert body.body == {
        "name": "PRIVATE NAME",
        "number": word,
        "price": 0,
        "uri": f"/v3/phone/{word}",
    }


@pytest.mark.parametrize("path", ["/v3/phone/?format=pbx", "/v3/phone/unknown?format=pbx"])
async def test_unknown_caller_is_a_miss(api: Api, path: str) -> None:
    reply = await api.call("GET", path)
    assert (reply.status, reply.body) == (404, "")


async def test_lookups_are_counted(api: Api) -> None:
    await api.call("GET", "/v3/phone/+12125550001")
    await api.call("GET", "/v3/phone/anonymous")
    metrics = await api.call("GET", "/metrics")
    assert 'cnamd_lookups_total{front="http",result="hit",scope="global"}' in metrics.body
    assert 'cnamd_lookups_total{front="http",result="anonymous",scope="none"}' in metrics.body
    assert 'route="/v3/phone/{number}"' in metrics.body


class TestHandsetStrings:
    """names.private_name and names.unknown_name reach both text fronts."""

    @pytest.fixture
    def api_settings(self) -> list[str]:
        return ["names.private_name=Withheld", "names.unknown_name=UNKNOWN NAME"]

    async def test_settings_name_the_withheld_and_the_unknown(self, api: Api) -> None:
        private = await api.call("GET", "/v3/phone/anonymous?format=pbx")
        miss = await api.call("GET", "/v3/phone/+15555550100?format=pbx")
        lookup_miss = await api.call("GET", "/v1/lookup/+15555550100?format=text")
        assert (private.status, private.body) == (200, "Withheld")
        assert (miss.status, miss.body) == (404, "UNKNOWN NAME")
        assert (lookup_miss.status, lookup_miss.body) == (404, "UNKNOWN NAME")
        json_miss = await api.call("GET", "/v3/phone/+15555550100")
        assert (json_miss.status, json_miss.body) == (404, MISS)


async def test_v1_lookup_answers_withheld_callers_too(api: Api) -> None:
    text = await api.call("GET", "/v1/lookup/anonymous?format=text")
    body = await api.call("GET", "/v1/lookup/anonymous")
    miss = await api.call("GET", "/v1/lookup/+15555550100")
    assert (text.status, text.body) == (200, "PRIVATE NAME")
    assert body.body == {"number": "anonymous", "name": "PRIVATE NAME", "unavailable": "p"}
    assert miss.status == 404 and miss.body["unavailable"] == "u"
