"""Flowroute-compatible CNAM records (seed 001) against a real server and PostgreSQL.

Requests are shaped as flowroute-sdk-v3-python's ``cnams_controller.py``
sends them (checked in its source): HTTP Basic ``accessKey:secretKey``,
``Accept: application/json``, ``POST /v2/cnams`` with a form-encoded
``value``, ``GET /v2/numbers?contains=DIGITS`` then a body-less ``PATCH
/v2/numbers/{data[0].id}/relationships/cnam/{cnam_id}``; the SDK accepts any
2xx. Lists follow the seed's example (``?is_approved=true``).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from api_client import Api

from cnamd.model import Role

DEMO_NUMBER = "+492216698701"
UUID = re.compile(r"^[0-9a-f-]{36}$")
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\+00:00$")


async def flow(
    api: Api, method: str, path: str, token: str | None, **kw: Any
) -> tuple[int, Any, str]:
    """One request as the SDK sends it: Basic auth, Accept: application/json."""
    headers = {"Accept": "application/json", **kw.pop("headers", {})}
    if token is not None:
        key_id, _, secret = token.partition(".")
        plain = base64.b64encode(f"{key_id}:{secret}".encode()).decode()
        headers["Authorization"] = f"Basic {plain}"
    async with api.session.request(method, api.base + path, headers=headers, **kw) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if text else None), resp.content_type


@pytest.fixture
async def partner(api: Api) -> str:
    return await api.key(Role.PARTNER, enterprises=["demo"])


@pytest.fixture
async def operator(api: Api) -> str:
    return await api.key(Role.OPERATOR)


async def create(api: Api, token: str, value: str) -> str:
    status, body, ctype = await flow(api, "POST", "/v2/cnams", token, data={"value": value})
    assert status == 201, body
    assert ctype == "application/vnd.api+json"
    return str(body["data"]["id"])


async def test_form_encoded_create_is_pending_and_shaped_as_the_seed(
    api: Api, partner: str
) -> None:
    status, body, _ = await flow(api, "POST", "/v2/cnams", partner, data={"value": "TEST, MARIA"})
    assert status == 201
    record = body["data"]
    assert record["type"] == "cnam" and record["id"].isdigit()
    attrs = record["attributes"]
    assert attrs["value"] == "TEST, MARIA"
    assert attrs["is_approved"] is False
    assert attrs["approval_datetime"] is None and attrs["rejection_reason"] is None
    assert STAMP.match(attrs["creation_datetime"])
    assert record["links"]["self"].endswith(f"/v2/cnams/{record['id']}")
    status, got, _ = await flow(api, "GET", f"/v2/cnams/{record['id']}", partner)
    assert status == 200 and got["data"] == record


async def test_json_and_json_api_bodies_create_too(api: Api, partner: str) -> None:
    status, body, _ = await flow(api, "POST", "/v2/cnams", partner, json={"value": "BROWN BAG"})
    assert status == 201 and body["data"]["attributes"]["value"] == "BROWN BAG"
    doc = {"data": {"type": "cnam", "attributes": {"value": "REGENCE INC"}}}
    status, body, _ = await flow(
        api,
        "POST",
        "/v2/cnams",
        partner,
        data=json.dumps(doc),
        headers={"Content-Type": "application/vnd.api+json"},
    )
    assert status == 201 and body["data"]["attributes"]["value"] == "REGENCE INC"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("SIXTEEN CHARS AB", "15"),
        ("2125550001", "letter"),
        ("(212) 555-0001", "phone number"),
        ("Caf\u00e9", "position"),
        ("", "required"),
    ],
)
async def test_the_vendor_name_rule_refuses_with_422(
    api: Api, partner: str, value: str, why: str
) -> None:
    status, body, _ = await flow(api, "POST", "/v2/cnams", partner, data={"value": value})
    assert status == 422
    (error,) = body["errors"]
    assert error["status"] == 422 and UUID.match(error["id"])
    assert why in error["detail"]["value"][0]


async def test_listing_filters_and_pages(api: Api, partner: str, operator: str) -> None:
    ids = [await create(api, partner, v) for v in ("ALPHA ONE", "BETA TWO", "alpha three")]
    await api.call("POST", f"/api/operator/cnam-records/{ids[0]}/approve", operator)

    status, body, _ = await flow(api, "GET", "/v2/cnams?is_approved=true", partner)
    assert status == 200
    assert [d["id"] for d in body["data"]] == [ids[0]]
    assert body["links"] == {"self": api.base + "/v2/cnams?is_approved=true&limit=100&offset=0"}
    _, body, _ = await flow(api, "GET", "/v2/cnams?is_approved=False", partner)
    assert [d["id"] for d in body["data"]] == ids[1:]
    _, body, _ = await flow(api, "GET", "/v2/cnams?value=ALPHA", partner)
    assert [d["id"] for d in body["data"]] == [ids[0], ids[2]]

    _, body, _ = await flow(api, "GET", "/v2/cnams?limit=2", partner)
    assert [d["id"] for d in body["data"]] == ids[:2]
    assert body["links"]["next"] == api.base + "/v2/cnams?limit=2&offset=2"
    _, body, _ = await flow(api, "GET", body["links"]["next"].removeprefix(api.base), partner)
    assert [d["id"] for d in body["data"]] == ids[2:]
    assert "next" not in body["links"]
    _, body, _ = await flow(api, "GET", "/v2/cnams?offset=99", partner)
    assert body["data"] == [] and "next" not in body["links"]
    _, body, _ = await flow(api, "GET", "/v2/cnams?limit=1000", partner)
    assert len(body["data"]) == 3


async def test_other_tenants_records_are_not_listed(api: Api, partner: str) -> None:
    await create(api, partner, "MINE")
    async with api.pool.acquire() as conn:
        await conn.execute("INSERT INTO tenants (slug, name) VALUES ('other', 'Other')")
    other = await api.key(Role.PARTNER, enterprises=["other"])
    _, body, _ = await flow(api, "GET", "/v2/cnams", other)
    assert body["data"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("limit=-1", "limit"),
        ("offset=-1", "offset"),
        ("is_approved=maybe", "is_approved"),
    ],
)
async def test_bad_parameters_get_the_seeds_422(
    api: Api, partner: str, query: str, field: str
) -> None:
    status, body, ctype = await flow(api, "GET", f"/v2/cnams?{query}", partner)
    assert status == 422 and ctype == "application/vnd.api+json"
    assert set(body) == {"errors"}
    (error,) = body["errors"]
    assert error["detail"] == {field: ["Invalid value."]}
    assert error["status"] == 422 and UUID.match(error["id"])


async def test_401_403_404_keep_the_errors_shape(api: Api, partner: str) -> None:
    status, body, _ = await flow(api, "GET", "/v2/cnams", None)
    assert status == 401 and body["errors"][0]["status"] == 401
    status, body, _ = await flow(api, "GET", "/v2/cnams", "ckdoesnotexist.nope")
    assert status == 401 and body["errors"][0]["status"] == 401
    user = await api.key(Role.USER, user="demo:alice")
    status, body, _ = await flow(api, "POST", "/v2/cnams", user, data={"value": "NOPE"})
    assert status == 403 and body["errors"][0]["status"] == 403
    status, body, _ = await flow(api, "GET", "/v2/cnams/999999", partner)
    assert status == 404 and body["errors"][0]["status"] == 404
    status, body, _ = await flow(api, "DELETE", "/v2/cnams/abc", partner)
    assert status == 404


async def test_numbers_search_then_patch_associates_and_approval_serves_the_name(
    api: Api, partner: str, operator: str
) -> None:
    """The SDK's associate_cnam: search the digits, take data[0].id, PATCH; the name
    is served only once an operator approves, and gone when rejected."""
    cnam_id = await create(api, partner, "ALICE CORP")
    status, found, _ = await flow(api, "GET", "/v2/numbers?contains=2216698701", partner)
    assert status == 200
    (number,) = found["data"]
    assert number["id"] == "492216698701" and number["attributes"]["value"] == "492216698701"
    path = f"/v2/numbers/{number['id']}/relationships/cnam/{cnam_id}"
    status, body, _ = await flow(api, "PATCH", path, partner)
    assert status == 202 and body["data"]["id"] == cnam_id
    _, found, _ = await flow(api, "GET", "/v2/numbers?contains=2216698701", partner)
    assert found["data"][0]["relationships"]["cnam"]["data"] == {"type": "cnam", "id": cnam_id}

    # pending: the number's old published name (if any) is not served in its place
    await api.until_served(DEMO_NUMBER, None)
    phone = await api.call("GET", "/api/confd/1.1/phone-numbers?search=2216698701", partner)
    assert phone.body["items"][0]["caller_id_name"] == "ALICE CORP"
    assert phone.body["items"][0]["cnam"]["status"] == "pending-approval"

    pending = await api.call("GET", "/api/operator/cnam-records", operator)
    assert [r["id"] for r in pending.body["items"]] == [cnam_id]
    assert pending.body["items"][0]["numbers"] == 1
    approved = await api.call("POST", f"/api/operator/cnam-records/{cnam_id}/approve", operator)
    assert approved.status == 200 and approved.body["approval"] == "approved"
    await api.until_served(DEMO_NUMBER, "ALICE CORP")
    _, got, _ = await flow(api, "GET", f"/v2/cnams/{cnam_id}", partner)
    assert got["data"]["attributes"]["is_approved"] is True
    assert STAMP.match(got["data"]["attributes"]["approval_datetime"])

    rejected = await api.call(
        "POST",
        f"/api/operator/cnam-records/{cnam_id}/reject",
        operator,
        json={"reason": "not the holder's name"},
    )
    assert rejected.status == 200
    await api.until_served(DEMO_NUMBER, None)
    _, got, _ = await flow(api, "GET", f"/v2/cnams/{cnam_id}", partner)
    attrs = got["data"]["attributes"]
    assert attrs["is_approved"] is False and attrs["rejection_reason"] == "not the holder's name"


async def test_deleting_a_served_record_or_the_relationship_unpublishes(
    api: Api, partner: str, operator: str
) -> None:
    cnam_id = await create(api, partner, "GONE SOON")
    await api.call("POST", f"/api/operator/cnam-records/{cnam_id}/approve", operator)
    status, _, _ = await flow(
        api, "PATCH", f"/v2/numbers/492216698701/relationships/cnam/{cnam_id}", partner
    )
    assert status == 202
    await api.until_served(DEMO_NUMBER, "GONE SOON")
    status, _, _ = await flow(api, "DELETE", "/v2/numbers/492216698701/relationships/cnam", partner)
    assert status == 202
    await api.until_served(DEMO_NUMBER, None)

    await flow(api, "PATCH", f"/v2/numbers/492216698701/relationships/cnam/{cnam_id}", partner)
    await api.until_served(DEMO_NUMBER, "GONE SOON")
    status, body, _ = await flow(api, "DELETE", f"/v2/cnams/{cnam_id}", partner)
    assert status == 204 and body is None
    await api.until_served(DEMO_NUMBER, None)
    status, _, _ = await flow(api, "GET", f"/v2/cnams/{cnam_id}", partner)
    assert status == 404


async def test_writing_another_caller_id_name_ends_the_association(
    api: Api, partner: str, operator: str
) -> None:
    cnam_id = await create(api, partner, "RECORD NAME")
    await api.call("POST", f"/api/operator/cnam-records/{cnam_id}/approve", operator)
    await flow(api, "PATCH", f"/v2/numbers/492216698701/relationships/cnam/{cnam_id}", partner)
    await api.until_served(DEMO_NUMBER, "RECORD NAME")
    async with api.pool.acquire() as conn:
        await conn.execute(
            "UPDATE phone_numbers SET caller_id_name = 'Other' WHERE number = $1", DEMO_NUMBER
        )
        linked = await conn.fetchval(
            "SELECT cnam_record_id FROM phone_numbers WHERE number = $1", DEMO_NUMBER
        )
    assert linked is None


async def test_a_key_held_by_another_holder_is_not_taken(api: Api, partner: str) -> None:
    cnam_id = await create(api, partner, "TAKER")
    async with api.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO cnam_entries (scope, key, name, approved_at) VALUES"
            " ('global', $1, 'Operator Name', now())",
            DEMO_NUMBER,
        )
    status, body, _ = await flow(
        api, "PATCH", f"/v2/numbers/492216698701/relationships/cnam/{cnam_id}", partner
    )
    assert status == 409 and "another holder" in body["errors"][0]["detail"]
    status, _, _ = await flow(
        api, "PATCH", f"/v2/numbers/19999999999/relationships/cnam/{cnam_id}", partner
    )
    assert status == 404


async def test_numbers_filter_on_starts_with_ends_with_and_contains(api: Api, partner: str) -> None:
    """list_account_phone_numbers(starts_with, ends_with, contains, limit, offset): every
    given filter must match the number's digits (its id)."""
    for number in ("+12065550123", "+12065559876"):
        created = await api.call(
            "POST", "/api/confd/1.1/phone-numbers", partner, json={"number": number}
        )
        assert created.status == 201, created.body

    async def ids(query: str) -> list[str]:
        status, body, _ = await flow(api, "GET", f"/v2/numbers?{query}", partner)
        assert status == 200, body
        return [n["id"] for n in body["data"]]

    assert await ids("starts_with=4922") == ["492216698700", "492216698701"]
    assert await ids("starts_with=1206") == ["12065550123", "12065559876"]
    assert await ids("ends_with=0123") == ["12065550123"]
    assert await ids("ends_with=01") == ["492216698701"]
    assert await ids("starts_with=1206&ends_with=76") == ["12065559876"]
    assert await ids("starts_with=1206&contains=555&limit=1&offset=1") == ["12065559876"]
    assert await ids("starts_with=2216") == []
    for bad in ("starts_with=+49", "ends_with=1a"):
        status, body, _ = await flow(api, "GET", f"/v2/numbers?{bad}", partner)
        field = bad.partition("=")[0]
        assert status == 422 and body["errors"][0]["detail"] == {field: ["Invalid value."]}


async def test_number_details_by_id_and_a_missing_one_in_the_errors_array(
    api: Api, partner: str
) -> None:
    """list_phone_number_details(id): GET /v2/numbers/{id}; the SDK raises on 404."""
    status, body, ctype = await flow(api, "GET", "/v2/numbers/492216698701", partner)
    assert status == 200 and ctype == "application/vnd.api+json"
    assert body["data"]["id"] == "492216698701" and body["data"]["type"] == "number"
    _, listed, _ = await flow(api, "GET", "/v2/numbers?contains=492216698701", partner)
    assert listed["data"] == [body["data"]]
    for missing in ("19999999999", "+492216698701", "abc"):
        status, body, _ = await flow(api, "GET", f"/v2/numbers/{missing}", partner)
        assert status == 404
        (error,) = body["errors"]
        assert error["status"] == 404 and "no phone number" in error["detail"]


async def test_relationship_changes_answer_the_vendors_cnam_stamp(api: Api, partner: str) -> None:
    """PATCH and DELETE on the relationship both answer 202 with
    {"data": {"attributes": {"date_created"}, "id", "type": "cnam"}}."""
    cnam_id = await create(api, partner, "STAMPED")
    path = "/v2/numbers/492216698701/relationships/cnam"
    for method, target in (("PATCH", f"{path}/{cnam_id}"), ("DELETE", path)):
        status, body, ctype = await flow(api, method, target, partner)
        assert status == 202 and ctype == "application/vnd.api+json"
        assert set(body) == {"data"} and set(body["data"]) == {"attributes", "id", "type"}
        assert body["data"]["id"] == cnam_id and body["data"]["type"] == "cnam"
        assert list(body["data"]["attributes"]) == ["date_created"]
        assert STAMP.match(body["data"]["attributes"]["date_created"])


async def test_the_numbers_listing_says_what_the_dip_serves(
    api: Api, partner: str, operator: str
) -> None:
    """caller_id_name is the name served; a rejected record is no longer related; a
    pending one is named as the reason the number waits (approval setting off)."""
    cnam_id = await create(api, partner, "TRUTHFUL")
    await flow(api, "PATCH", f"/v2/numbers/492216698701/relationships/cnam/{cnam_id}", partner)

    async def listed() -> dict[str, Any]:
        _, body, _ = await flow(api, "GET", "/v2/numbers/492216698701", partner)
        return dict(body["data"])

    pending = await listed()
    assert pending["attributes"]["caller_id_name"] is None
    assert pending["relationships"]["cnam"]["data"] == {"type": "cnam", "id": cnam_id}
    phone = await api.call("GET", "/api/confd/1.1/phone-numbers?search=2216698701", partner)
    cnam = phone.body["items"][0]["cnam"]
    assert cnam["status"] == "pending-approval"
    assert cnam["reason"] == f"CNAM record {cnam_id} awaits an operator's approval"
    assert "require_approval" not in cnam["reason"]

    await api.call("POST", f"/api/operator/cnam-records/{cnam_id}/approve", operator)
    await api.until_served(DEMO_NUMBER, "TRUTHFUL")
    assert (await listed())["attributes"]["caller_id_name"] == "TRUTHFUL"

    await api.call(
        "POST", f"/api/operator/cnam-records/{cnam_id}/reject", operator, json={"reason": "no"}
    )
    await api.until_served(DEMO_NUMBER, None)
    rejected = await listed()
    assert rejected["attributes"]["caller_id_name"] is None
    assert rejected["relationships"]["cnam"]["data"] is None
