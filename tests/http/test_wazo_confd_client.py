"""wazo-confd-client's ``phone_numbers`` flows against cnamd (tests/http/wazo_confd_replay.py
sends exactly the client's requests and reads the answers as it does)."""

from __future__ import annotations

import pytest
from api_client import Api
from wazo_confd_replay import HTTPError, PhoneNumbers

from cnamd.model import Role


@pytest.fixture
async def client(api: Api) -> PhoneNumbers:
    """``ConfdClient(..., token=PARTNER_KEY)``: the key's one tenant needs no header."""
    token = await api.key(Role.PARTNER, enterprises=["demo"])
    return PhoneNumbers(api.session, api.base, token)


@pytest.fixture
async def other(api: Api) -> str:
    """Tenant ``other`` (its uuid) holding +13125550100 "OTHER CO"."""
    async with api.pool.acquire() as conn:
        row = await conn.fetchrow(
            "INSERT INTO tenants (slug, name, region) VALUES ('other', 'Other', 'US')"
            " RETURNING id, uuid"
        )
        await conn.execute(
            "INSERT INTO phone_numbers (tenant_id, number, caller_id_name)"
            " VALUES ($1, '+13125550100', 'OTHER CO')",
            row["id"],
        )
    return str(row["uuid"])


def numbers(listed: dict[str, object]) -> list[object]:
    items = listed["items"]
    assert isinstance(items, list)
    return [item["number"] for item in items]


async def test_list_filters_exactly_on_each_search_column(client: PhoneNumbers) -> None:
    """xivo-dao's phone-number search columns: number, caller_id_name, shared, main."""
    await client.create({"number": "+4922166987001", "caller_id_name": "ACME Cologne"})
    listed = await client.list(number="+492216698700")
    assert listed["total"] == 1 and numbers(listed) == ["+492216698700"]
    listed = await client.list(caller_id_name="ACME Cologne")
    assert numbers(listed) == ["+492216698700", "+4922166987001"]
    assert numbers(await client.list(caller_id_name="acme cologne")) == []
    assert numbers(await client.list(main=True)) == ["+492216698700"]
    assert numbers(await client.list(shared=False)) == ["+4922166987001", "+492216698701"]
    assert numbers(await client.list(number="+49221669870")) == []
    listed = await client.list(search="669870", number="+492216698701")
    assert numbers(listed) == ["+492216698701"]


async def test_an_unencoded_plus_in_the_number_filter_still_matches(api: Api) -> None:
    """curl's ``?number=+492216698700`` arrives as a space and the digits."""
    token = await api.key(Role.PARTNER, enterprises=["demo"])
    reply = await api.call("GET", "/api/confd/1.1/phone-numbers?number=+492216698700", token)
    assert reply.status == 200 and reply.body["total"] == 1


async def test_recurse_lists_every_tenant_an_operator_reaches(api: Api, other: str) -> None:
    operator = PhoneNumbers(api.session, api.base, await api.key(Role.OPERATOR))
    listed = await operator.list(recurse=True)
    assert {"+13125550100", "+492216698700", "+492216698701"} <= set(numbers(listed))
    assert listed["total"] == len(listed["items"])
    assert numbers(await operator.list(recurse=True, tenant_uuid=other)) == ["+13125550100"]
    assert numbers(await operator.list(recurse=True, number="+13125550100")) == ["+13125550100"]
    with pytest.raises(HTTPError) as refused:
        await operator.list()  # recurse=False names no tenant: which one is meant?
    assert refused.value.status == 400


async def test_errors_read_as_wazo_confd_messages(client: PhoneNumbers) -> None:
    """ConfdSession.check_response: reason = ". ".join(response.json())."""
    with pytest.raises(HTTPError) as duplicate:
        await client.create({"number": "+492216698700"})
    assert str(duplicate.value).startswith(
        "400 Client Error: Resource Error - field 'number': phone number '+492216698700'"
        " exists already in this tenant for url: "
    )
    with pytest.raises(HTTPError) as invalid:
        await client.create({"number": "12ab"})
    assert invalid.value.reason.startswith("Input Error - field 'number': '12ab' ")
    with pytest.raises(HTTPError) as missing:
        await client.get("00000000-0000-4000-8000-000000000000")
    assert missing.value.status == 404
    assert missing.value.reason.startswith("Resource Not Found - field 'uuid': no phone number")
    created = await client.create({"number": "+15555550100"})
    await client.delete(created["uuid"])
    with pytest.raises(HTTPError) as gone:
        await client.update({**created, "caller_id_name": "LATE"})
    assert gone.value.status == 404


async def test_a_bad_key_is_refused_in_wazos_shape(api: Api) -> None:
    stranger = PhoneNumbers(api.session, api.base, "nokey.nosecret")
    with pytest.raises(HTTPError) as refused:
        await stranger.list()
    assert refused.value.status == 401
    assert refused.value.reason.startswith("Unauthorized - field 'authorization': ")


async def test_a_key_reaching_several_tenants_is_told_to_name_one(api: Api) -> None:
    operator = PhoneNumbers(api.session, api.base, await api.key(Role.OPERATOR))
    with pytest.raises(HTTPError) as refused:
        await operator.list()
    assert refused.value.status == 400
    assert refused.value.reason.startswith("Input Error - field 'Wazo-Tenant': ")
