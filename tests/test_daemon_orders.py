"""An Atmosphere CNAM order survives a killed daemon: a new one resumes it, and no number
is processed twice (each number's name is logged to the change log exactly once)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from cnamd.sip.dip_client import dip
from cnamd.store.embedded import EmbeddedPostgres
from test_daemon import Daemon, partner_key, wait_ready

SLOW = ("--workers", "1", "--set", "orders.batch_size=50", "--set", "orders.batch_pause=0.3")
COUNT = 500
FIRST = 2125552000


async def call(base: str, token: str, method: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    async with (
        aiohttp.ClientSession(base, headers=headers) as http,
        http.request(method, path, json=body) as resp,
    ):
        assert resp.status in (200, 201), await resp.text()
        return await resp.json()


def states(order: dict[str, Any]) -> list[str]:
    return [n["cnam"] for b in order["batches"] for n in b["numbers"]]


async def test_a_killed_daemon_resumes_an_order_and_finishes_it_exactly_once(
    tmp_path: Path,
) -> None:
    first = Daemon(tmp_path, *SLOW)
    try:
        await asyncio.to_thread(wait_ready, first.base, first.proc)
        token = await asyncio.to_thread(partner_key, first)
        last = FIRST + COUNT - 1
        await call(
            first.base,
            token,
            "POST",
            "/api/confd/1.1/phone-numbers/ranges",
            {"start_number": f"+1{FIRST}", "end_number": f"+1{last}"},
        )
        numbers = [{"countryCode": "1", "number": str(FIRST + i)} for i in range(COUNT)]
        placed = await call(
            first.base,
            token,
            "POST",
            "/_rest/v3/my/did/cnam",
            {"cnam": "ACME INC", "numbers": numbers},
        )
        order_path = f"/_rest/v3/my/orders/{placed['OrderID']}"
        deadline = time.monotonic() + 20
        while "PROVISIONED" not in states(await call(first.base, token, "GET", order_path)):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    except BaseException:
        first.stop()
        raise
    # SIGKILL mid-order; the database outlives it, and the next daemon attaches to it
    first.proc.kill()
    first.proc.communicate(timeout=10)

    second = Daemon(tmp_path, *SLOW)
    try:
        await asyncio.to_thread(wait_ready, second.base, second.proc)
        seen = states(await call(second.base, token, "GET", order_path))
        assert "PROVISIONED" in seen and seen.count("PROVISIONED") < COUNT, "killed too late"
        deadline = time.monotonic() + 30
        while set(seen) != {"PROVISIONED"}:
            assert time.monotonic() < deadline, f"order stuck: {set(seen)}"
            await asyncio.sleep(0.1)
            seen = states(await call(second.base, token, "GET", order_path))
        answer = await dip(f"127.0.0.1:{second.sip_port}", f"+1{last}", "+492216698700")
        deadline = time.monotonic() + 5
        while answer.name != "ACME INC" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            answer = await dip(f"127.0.0.1:{second.sip_port}", f"+1{last}", "+492216698700")
        assert (answer.status, answer.name) == (302, "ACME INC")

        url = await EmbeddedPostgres(second.data_dir).start()  # attaches to the running server
        conn = await asyncpg.connect(url)
        try:
            logged = await conn.fetch(
                "SELECT key, count(*) AS n FROM change_log WHERE name = 'ACME INC'"
                " AND key LIKE '+1212555%' GROUP BY key"
            )
        finally:
            await conn.close()
        assert len(logged) == COUNT
        assert {r["n"] for r in logged} == {1}
    finally:
        second.stop()
