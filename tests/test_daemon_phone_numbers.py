"""Seed 003 end to end: a real daemon, a key from ``cnamd apikey create``, and SIP dips.

A caller-ID name set on a tenant's phone number is heard in a SIP dip once
published, and not once the number is deleted; a dip *to* a number assigned
to a user is answered from that user's scopes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from cnamd.sip.dip_client import DipAnswer, dip
from test_daemon import Daemon, partner_key, wait_ready

BASE = "/api/confd/1.1/phone-numbers"
#: demo numbers: the main one has no user; +492216698713 is "Jane Doe" for the
#: enterprise and "Jane (mobile)" in alice's own phone book
DEMO_MAIN = "+492216698700"
JANE = "+492216698713"
PROPAGATION = 5.0


async def until_heard(daemon: Daemon, calling: str, called: str, name: str | None) -> DipAnswer:
    """Dip until the answer carries ``name`` (None: a 404), within the propagation bound."""
    deadline = time.monotonic() + PROPAGATION
    while True:
        answer = await dip(f"127.0.0.1:{daemon.sip_port}", calling, called)
        heard = answer.name if answer.status == 302 else None
        if heard == name and (name is not None or answer.status == 404):
            return answer
        assert time.monotonic() < deadline, f"dip {calling} -> {called}: {answer.status} {heard!r}"
        await asyncio.sleep(0.05)


async def test_a_published_caller_id_name_is_heard_in_a_sip_dip(daemon: Daemon) -> None:
    await asyncio.to_thread(wait_ready, daemon.base, daemon.proc)
    token = await asyncio.to_thread(partner_key, daemon)
    headers = {"X-Auth-Token": token}
    async with aiohttp.ClientSession(daemon.base, headers=headers) as http:

        async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
            async with http.request(method, path, json=body) as resp:
                json_body = await resp.json() if resp.content_type == "application/json" else None
                return resp.status, json_body

        await until_heard(daemon, "+15555550100", DEMO_MAIN, None)
        status, created = await call(
            "POST", BASE, {"number": "+15555550100", "caller_id_name": "ACME INC."}
        )
        assert status == 201 and created["cnam"]["published"], created
        answer = await until_heard(daemon, "+15555550100", DEMO_MAIN, "ACME INC.")
        assert answer.status == 302

        # a number assigned to alice: a dip to it is asked in her scopes
        status, users = await call("GET", "/api/operator/tenants/demo/users/alice")
        assert status == 200
        status, hers = await call(
            "POST", BASE, {"number": "+15555550111", "user_uuid": users["uuid"]}
        )
        assert (status, hers["user_uuid"]) == (201, users["uuid"])
        await until_heard(daemon, JANE, "+15555550111", "Jane (mobile)")
        await until_heard(daemon, JANE, DEMO_MAIN, "Jane Doe")

        status, _ = await call("DELETE", f"{BASE}/{created['uuid']}")
        assert status == 204
        await until_heard(daemon, "+15555550100", DEMO_MAIN, None)
    # the key minted beside the running daemon left its database running
    assert daemon.proc.poll() is None
