"""The real daemon while its database connections are terminated under load.

``cnamd serve --demo`` on its own embedded PostgreSQL; six clients write names,
list them and look up with a partner key while a loop runs pg_terminate_backend
on every connection of the daemon (the API pool's and the change feed's) every
50-100 ms. Every answer is a 2xx or a 503, every acknowledged write is stored
and then served, and the daemon logs no traceback.
"""

from __future__ import annotations

import asyncio
import random
import signal

import aiohttp
import asyncpg

from cnamd.store.embedded import EmbeddedPostgres
from db_faults import terminate_backends
from test_daemon import Daemon, partner_key, wait_ready

ENTERPRISE = "/api/partner/enterprise/demo/cnam"
CLIENTS = 6
SWEEPS = 40
ROUNDS = 400  # a bound; the clients stop when the terminations do


async def _terminate_again_and_again(url: str, done: asyncio.Event) -> int:
    admin = await asyncpg.connect(url)
    terminated = 0
    try:
        for _ in range(SWEEPS):
            terminated += await terminate_backends(admin)
            await asyncio.sleep(random.uniform(0.05, 0.1))
    finally:
        done.set()
        await admin.close()
    return terminated


async def _client(
    http: aiohttp.ClientSession, index: int, done: asyncio.Event, written: dict[str, str]
) -> list[tuple[int, str | None, object]]:
    answers: list[tuple[int, str | None, object]] = []
    for round_ in range(ROUNDS):
        if done.is_set():
            break
        phone, name = f"+4922166{index}{round_:04d}", f"Daemon {index} {round_}"
        for method, path, body in (
            ("POST", f"{ENTERPRISE}/{phone}", {"name": name}),
            ("GET", f"{ENTERPRISE}?count=5", None),
            ("GET", "/v1/lookup/+492216698712?tenant=demo", None),
        ):
            async with http.request(method, path, json=body) as resp:
                answer = await resp.json(content_type=None)
                answers.append((resp.status, resp.headers.get("Retry-After"), answer))
                if method == "POST" and resp.status == 200:
                    written[phone] = name
    return answers


async def test_terminated_pool_connections_never_give_a_500(daemon: Daemon) -> None:
    await asyncio.to_thread(wait_ready, daemon.base, daemon.proc)
    token = await asyncio.to_thread(partner_key, daemon)
    # attaches to the daemon's running server (and is never stopped here)
    url = await EmbeddedPostgres(daemon.data_dir).start()
    done = asyncio.Event()
    written: dict[str, str] = {}
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(daemon.base, headers=headers, timeout=timeout) as http:
        storm = asyncio.create_task(_terminate_again_and_again(url, done))
        results = await asyncio.gather(
            *(_client(http, index, done, written) for index in range(CLIENTS))
        )
        assert await storm > 0

    answers = [answer for answers in results for answer in answers]
    assert {status for status, _, _ in answers} <= {200, 503}
    for status, retry_after, body in answers:
        if status == 503:
            assert retry_after == "1" and body["field"] == "database", body  # type: ignore[index]
    assert written, "no write got through at all"
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT key, name FROM cnam_entries WHERE key = ANY($1::text[])", list(written)
        )
    finally:
        await conn.close()
    assert {row["key"]: row["name"] for row in rows} == written
    # and the cache, whose feed lost its connection again and again, serves every one
    async with aiohttp.ClientSession(daemon.base, timeout=timeout) as plain:
        for phone, name in written.items():
            for _ in range(50):
                async with plain.get(f"/v1/lookup/{phone}?tenant=demo") as resp:
                    found = await resp.json(content_type=None)
                if resp.status == 200 and found["name"] == name:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"{phone}: acknowledged as {name!r}, served {found!r}")

    daemon.proc.send_signal(signal.SIGTERM)
    out, _ = daemon.proc.communicate(timeout=10)
    assert daemon.proc.returncode == 0, out
    assert "Traceback" not in out and "unhandled error" not in out, out
