"""Lockout as denial of service: an attacker failing logins from an address spends that
address's failure budget and gets 429, but cannot lock out valid keys or trusted
lookups from the same address (NAT, a shared PBX host)."""

from __future__ import annotations

import asyncio

from api_client import Api

from cnamd.model import Role

LOOKUP = "/v1/lookup/+492216698712?tenant=demo"
TENANTS = "/api/operator/tenants"
LOGIN = "/_rest/v4/authenticate"
JSON = {"Accept": "application/json"}


async def _known(api: Api, token: str) -> str:
    """The token, once the key reached the in-memory key table through the feed."""
    key_id = token.split(".", maxsplit=1)[0]
    for _ in range(200):
        contexts = api.directory.contexts
        if contexts is not None and key_id in contexts.keys:
            return token
        await asyncio.sleep(0.025)
    raise AssertionError(f"key {key_id} never arrived")


async def _spend_the_budget(api: Api) -> None:
    statuses = [(await api.call("GET", LOOKUP, "ckattacker.guess")).status for _ in range(11)]
    assert statuses == [401] * 10 + [429]  # http.auth_failure_burst = 10


async def test_valid_keys_and_trusted_lookups_still_work_from_an_address_over_its_budget(
    api: Api,
) -> None:
    partner = await _known(api, await api.key(Role.PARTNER, enterprises=["demo"]))
    operator = await _known(api, await api.key(Role.OPERATOR))
    await _spend_the_budget(api)
    assert (await api.call("GET", LOOKUP, partner)).status == 200
    assert (await api.call("GET", LOOKUP)).status == 200  # 127.0.0.1: a trusted network
    assert (await api.call("GET", TENANTS, operator)).status == 200  # checked in the database
    key_id, _, secret = partner.partition(".")
    login = {"username": key_id, "password": secret}
    assert (await api.call("POST", LOGIN, json=login, headers=JSON)).status == 200
    # the attacker's guesses stay refused, in every login form
    assert (await api.call("GET", LOOKUP, "ckattacker.guess2")).status == 429
    assert (await api.call("GET", TENANTS, partner.split(".")[0] + ".wrong")).status == 429
    wrong = {"username": key_id, "password": "wrong"}
    assert (await api.call("POST", LOGIN, json=wrong, headers=JSON)).status == 429


async def test_a_valid_key_is_never_refused_while_an_attacker_fails_concurrently(
    api: Api,
) -> None:
    partner = await _known(api, await api.key(Role.PARTNER, enterprises=["demo"]))
    attacker: list[int] = []
    legitimate: list[int] = []
    trusted: list[int] = []

    async def attack() -> None:
        for i in range(150):
            attacker.append((await api.call("GET", LOOKUP, f"ck{i % 7}.guess{i}")).status)

    async def use(token: str | None, into: list[int]) -> None:
        for _ in range(60):
            into.append((await api.call("GET", LOOKUP, token)).status)

    await asyncio.gather(
        *(attack() for _ in range(4)), use(partner, legitimate), use(None, trusted)
    )
    assert set(legitimate) == {200} and set(trusted) == {200}
    assert attacker.count(429) > 500 and set(attacker) == {401, 429}
