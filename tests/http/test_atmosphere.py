"""IntelePeer Atmosphere-compatible CNAM orders (seed 002) against a real server and PostgreSQL.

Bodies and errors are the seed's: ``{"numbers": [{"countryCode": "1",
"number": "2125550001"}]}`` with ``Accept``/``Content-Type:
application/json`` and the token from ``POST /_rest/v4/authenticate`` as
``Authorization``; every error is ``{"code", "error"}`` with the seed's
sentence. The order worker runs in the test as the daemon runs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from api_client import Api, Reply

from cnamd.model import Role
from cnamd.order_worker import OrderWorker
from cnamd.settings import load

JSON = {"Accept": "application/json"}


def numbers(*digits: str) -> list[dict[str, str]]:
    return [{"countryCode": "1", "number": d} for d in digits]


async def add_numbers(api: Api, count: int, *, start: int = 2125551000) -> list[str]:
    """``count`` US numbers of the demo tenant (10 digits each)."""
    digits = [str(start + i) for i in range(count)]
    async with api.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO phone_numbers (tenant_id, number)"
            " SELECT t.id, '+1' || d FROM tenants t, unnest($1::text[]) AS d"
            " WHERE t.slug = 'demo'",
            digits,
        )
    return digits


async def login(api: Api) -> str:
    token = await api.key(Role.PARTNER, enterprises=["demo"])
    key_id, _, secret = token.partition(".")
    reply = await api.call(
        "POST",
        "/_rest/v4/authenticate",
        json={"username": key_id, "password": secret},
        headers=JSON,
    )
    assert reply.status == 200, reply.body
    session: str = reply.body["token"]
    assert "." not in session
    return session


@pytest.fixture
async def session(api: Api) -> str:
    return await login(api)


@pytest.fixture
async def worker(api: Api) -> AsyncIterator[OrderWorker]:
    settings = load(environ={}, overrides=["orders.batch_size=100", "orders.poll_interval=0.05"])
    started = OrderWorker(api.pool, settings)  # type: ignore[arg-type]
    started.start()
    yield started
    await started.stop()


async def order(api: Api, token: str, method: str, body: Any, **headers: str) -> Reply:
    return await api.call(
        method, "/_rest/v3/my/did/cnam", token, json=body, headers={**JSON, **headers}
    )


async def until_provisioned(api: Api, token: str, order_id: int) -> dict[str, Any]:
    for _ in range(400):
        reply = await api.call("GET", f"/_rest/v3/my/orders/{order_id}", token, headers=JSON)
        assert reply.status == 200, reply.body
        states = {n["cnam"] for b in reply.body["batches"] for n in b["numbers"]}
        if states == {"PROVISIONED"}:
            return dict(reply.body)
        await asyncio.sleep(0.05)
    raise AssertionError(f"order {order_id} never finished: {states}")


async def test_an_order_of_1000_numbers_is_provisioned_in_batches_and_lookups_follow(
    api: Api, session: str, worker: OrderWorker
) -> None:
    digits = await add_numbers(api, 1000)
    added = await order(api, session, "POST", {"cnam": "ACME INC", "numbers": numbers(*digits)})
    assert added.status == 200 and set(added.body) == {"OrderID"}
    done = await until_provisioned(api, session, added.body["OrderID"])
    assert done["orderID"] == added.body["OrderID"]
    assert [len(b["numbers"]) for b in done["batches"]] == [100] * 10
    assert len({b["batchID"] for b in done["batches"]}) == 10
    first = done["batches"][0]["numbers"][0]
    assert first == {
        "countryCode": "1",
        "number": "2125551000",
        "e164": "+12125551000",
        "cnam": "PROVISIONED",
    }
    for d in (digits[0], digits[499], digits[-1]):
        await api.until_served("+1" + d, "ACME INC")

    removed = await order(api, session, "DELETE", {"numbers": numbers(*digits)})
    assert removed.status == 200 and removed.body["OrderID"] > added.body["OrderID"]
    await until_provisioned(api, session, removed.body["OrderID"])
    for d in (digits[0], digits[499], digits[-1]):
        await api.until_served("+1" + d, None)
    async with api.pool.acquire() as conn:
        left = await conn.fetchval(
            "SELECT count(*) FROM cnam_entries e JOIN phone_numbers p"
            " ON p.uuid = e.phone_number_uuid WHERE p.number LIKE '+1212555%'"
        )
        names = await conn.fetchval(
            "SELECT count(*) FROM phone_numbers WHERE number LIKE '+1212555%'"
            " AND caller_id_name IS NOT NULL"
        )
    assert (left, names) == (0, 0)


async def test_api_key_tokens_work_as_bearer_too(api: Api, worker: OrderWorker) -> None:
    token = await api.key(Role.PARTNER, enterprises=["demo"])
    (digit,) = await add_numbers(api, 1, start=3125550000)
    reply = await order(api, token, "POST", {"cnam": "KEY ORDER", "numbers": numbers(digit)})
    assert reply.status == 200
    await until_provisioned(api, token, reply.body["OrderID"])
    await api.until_served("+1" + digit, "KEY ORDER")


async def test_401_unauthorized_and_session_expired(api: Api, session: str) -> None:
    body = {"numbers": numbers("2125550001")}
    for token in (None, "not-a-session-token", "ckunknown.secret"):
        reply = await order(api, token, "DELETE", body)  # type: ignore[arg-type]
        assert (reply.status, reply.body) == (401, {"code": 401, "error": "Unauthorized"})
    bad = await api.call(
        "POST", "/_rest/v4/authenticate", json={"username": "ckx", "password": "y"}, headers=JSON
    )
    assert (bad.status, bad.body) == (401, {"code": 401, "error": "Unauthorized"})
    async with api.pool.acquire() as conn:
        await conn.execute("UPDATE api_sessions SET expires_at = now() - interval '1 second'")
    reply = await order(api, session, "DELETE", body)
    assert (reply.status, reply.body) == (401, {"code": 401, "error": "Session Expired"})


async def test_406_when_accept_is_not_json(api: Api, session: str) -> None:
    reply = await order(
        api, session, "DELETE", {"numbers": numbers("2125550001")}, Accept="text/html"
    )
    assert (reply.status, reply.body) == (406, {"code": 406, "error": "Not Acceptable"})
    reply = await api.call("GET", "/_rest/v3/my/orders/1", session, headers={"Accept": "text/xml"})
    assert reply.status == 406


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "The 'numbers' parameter is required."),
        ({"numbers": "2125550001"}, "The 'numbers' parameter must be formatted as a(n) array."),
        (
            {"numbers": numbers("2125550001", "2125550001")},
            "The 'numbers' parameter must contain unique numbers.",
        ),
        (
            {"numbers": [{"countryCode": "44", "number": "2125550001"}]},
            "The 'countryCode' parameter must match one of the following values: 1",
        ),
        (
            {"numbers": [{"countryCode": "1", "number": "212555000"}]},
            "The 'number' parameter must be 10 numeric digits.",
        ),
        (
            {"numbers": [{"countryCode": "1", "number": "21255500O1"}]},
            "The 'number' parameter must be 10 numeric digits.",
        ),
        (
            {"numbers": [{"number": "2125550001"}]},
            "The 'countryCode' parameter is required for each Number object.",
        ),
        (
            {"numbers": [{"countryCode": 1, "number": "2125550001"}]},
            "The 'countryCode' parameter must be formatted as a(n) string.",
        ),
        (
            {"numbers": numbers("2125550001"), "referenceID": 7},
            "The 'referenceID' parameter must be formatted as a(n) string.",
        ),
    ],
)
async def test_422_says_the_seeds_sentence(
    api: Api, session: str, body: dict[str, Any], message: str
) -> None:
    reply = await order(api, session, "DELETE", body)
    assert (reply.status, reply.body) == (422, {"code": 422, "error": message})


async def test_422_for_an_add_without_cnam(api: Api, session: str) -> None:
    reply = await order(api, session, "POST", {"numbers": numbers("2125550001")})
    assert reply.body == {"code": 422, "error": "The 'cnam' parameter is required."}


async def test_409_not_assigned_active_order_and_no_service(api: Api, session: str) -> None:
    digits = await add_numbers(api, 2, start=4155550000)
    reply = await order(api, session, "DELETE", {"numbers": numbers("9995550000")})
    assert (reply.status, reply.body) == (
        409,
        {"code": 409, "error": "One or more numbers are not assigned to this account."},
    )
    reply = await order(api, session, "DELETE", {"numbers": numbers(*digits)})
    assert (reply.status, reply.body) == (
        409,
        {"code": 409, "error": f"One or more numbers do not have service: {', '.join(digits)}"},
    )
    # no worker runs here, so the first order stays active
    first = await order(api, session, "POST", {"cnam": "FIRST", "numbers": numbers(digits[0])})
    assert first.status == 200
    reply = await order(api, session, "POST", {"cnam": "SECOND", "numbers": numbers(*digits)})
    assert (reply.status, reply.body) == (
        409,
        {
            "code": 409,
            "error": f"One or more numbers are part of an active order: {first.body['OrderID']}",
        },
    )
    status = await api.call("GET", f"/_rest/v3/my/orders/{first.body['OrderID']}", session)
    assert status.body["batches"][0]["numbers"][0]["cnam"] == "QUEUED"


async def test_another_tenants_order_is_404(api: Api, session: str) -> None:
    async with api.pool.acquire() as conn:
        await conn.execute("INSERT INTO tenants (slug, name) VALUES ('other', 'Other')")
    other = await api.key(Role.PARTNER, enterprises=["other"])
    (digit,) = await add_numbers(api, 1, start=6175550000)
    mine = await order(api, session, "POST", {"cnam": "MINE", "numbers": numbers(digit)})
    reply = await api.call("GET", f"/_rest/v3/my/orders/{mine.body['OrderID']}", other)
    assert reply.status == 404 and reply.body["code"] == 404


async def bare(api: Api, token: str, method: str, path: str, body: Any = None) -> Reply:
    """A request with ``Authorization: <token>`` and no scheme, as seed 002 shows it."""
    headers = {**JSON, "Authorization": token}
    return await api.call(method, path, json=body, headers=headers)


async def test_the_seeds_bare_token_authorizes(api: Api, session: str) -> None:
    (digit,) = await add_numbers(api, 1, start=7185550000)
    reply = await bare(
        api, session, "POST", "/_rest/v3/my/did/cnam", {"cnam": "BARE", "numbers": numbers(digit)}
    )
    assert reply.status == 200, reply.body
    status = await bare(api, session, "GET", f"/_rest/v3/my/orders/{reply.body['OrderID']}")
    assert status.status == 200 and status.body["orderID"] == reply.body["OrderID"]
    key = await api.key(Role.PARTNER, enterprises=["demo"])
    assert (
        await bare(api, key, "GET", f"/_rest/v3/my/orders/{reply.body['OrderID']}")
    ).status == 200
    for wrong in ("not-a-session-token", "ckunknown.secret"):
        refused = await bare(api, wrong, "GET", "/_rest/v3/my/orders/1")
        assert (refused.status, refused.body) == (401, {"code": 401, "error": "Unauthorized"})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"numbers": [{"countryCode": ["1"], "number": "2125550001"}]},
            "The 'countryCode' parameter must be scalar.",
        ),
        (
            {"numbers": [{"countryCode": "1", "number": {"n": "2125550001"}}]},
            "The 'number' parameter must be scalar.",
        ),
        (
            {"numbers": numbers("2125550001"), "referenceID": ["R1"]},
            "The 'referenceID' parameter must be scalar.",
        ),
        ({"numbers": numbers("2125550001"), "Notes": {}}, "The 'Notes' parameter must be scalar."),
        (
            {"numbers": numbers("2125550001"), "referenceID": ""},
            "The 'referenceID' parameter must be a non-empty string.",
        ),
    ],
)
async def test_422_for_non_scalars_and_an_empty_reference_id(
    api: Api, session: str, body: dict[str, Any], message: str
) -> None:
    reply = await order(api, session, "DELETE", body)
    assert (reply.status, reply.body) == (422, {"code": 422, "error": message})


async def test_an_add_with_an_array_for_cnam_is_not_scalar(api: Api, session: str) -> None:
    reply = await order(api, session, "POST", {"cnam": ["X"], "numbers": numbers("2125550001")})
    assert reply.body == {"code": 422, "error": "The 'cnam' parameter must be scalar."}


async def test_a_second_removal_while_one_is_pending_is_already_pending_disconnect(
    api: Api, session: str, worker: OrderWorker
) -> None:
    digits = await add_numbers(api, 2, start=9175550000)
    added = await order(api, session, "POST", {"cnam": "SOON GONE", "numbers": numbers(*digits)})
    await until_provisioned(api, session, added.body["OrderID"])
    await worker.stop()  # the removal stays pending
    first = await order(api, session, "DELETE", {"numbers": numbers(digits[0])})
    assert first.status == 200
    reply = await order(api, session, "DELETE", {"numbers": numbers(*digits)})
    assert (reply.status, reply.body) == (
        409,
        {"code": 409, "error": f"One or more numbers are already pending disconnect: {digits[0]}"},
    )
    # an add while the removal is pending is still "part of an active order"
    reply = await order(api, session, "POST", {"cnam": "BACK", "numbers": numbers(digits[0])})
    assert (
        reply.body["error"]
        == f"One or more numbers are part of an active order: {first.body['OrderID']}"
    )
