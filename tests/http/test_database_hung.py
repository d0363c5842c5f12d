"""A hung database (every PostgreSQL process stopped with SIGSTOP) while clients write.

The server is one of this test's own: stopping the session's shared one would
stall every other test. Six clients write names and list Flowroute records
before, during and after the stop. Once the database is stopped no request
waits longer than ``database.statement_timeout`` plus a second's margin, each
answers 503 with Retry-After naming ``database`` (Flowroute in its own shape),
none 500; after SIGCONT writes succeed again and every acknowledged write is
in the database.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import psutil
import pytest
from aiohttp.test_utils import TestServer
from api_client import AlwaysReady

from cnamd.cache.directory import Directory
from cnamd.http.app import make_app
from cnamd.model import Role
from cnamd.settings import load
from cnamd.store import apikeys
from cnamd.store.demo import load_demo
from cnamd.store.embedded import EmbeddedPostgres
from cnamd.store.migrations import migrate
from cnamd.store.pool import open_pool

STATEMENT_TIMEOUT = 1.5
MARGIN = 1.0
STOPPED_SECONDS = 4.0
CLIENT_TIMEOUT = 15.0  # aiohttp's bound per request, far above what is asserted
CLIENTS = 6
ROUNDS = 400  # a bound; each client stops once it has written after the resume
ENTERPRISE = "/api/partner/enterprise/demo/cnam"


@dataclass
class Hung:
    """A served app on a PostgreSQL of its own, and the means to stop that PostgreSQL."""

    session: aiohttp.ClientSession
    base: str
    data_dir: Path
    url: str
    token: str

    def processes(self) -> list[psutil.Process]:
        """The postmaster first (so it forks nothing new), then its children."""
        pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(pid)
        return [postmaster, *postmaster.children(recursive=True)]


@pytest.fixture
async def hung(tmp_path: Path) -> AsyncIterator[Hung]:
    server = EmbeddedPostgres(tmp_path / "pg" / "data", database="cnamd")
    url = await server.start()
    try:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
            await load_demo(conn)
            _, token = await apikeys.create_key(conn, Role.PARTNER, enterprises=["demo"])
        finally:
            await conn.close()
        settings = load(
            environ={},
            overrides=[
                f"cache.snapshot_path={tmp_path / 's'}",
                f"database.statement_timeout={STATEMENT_TIMEOUT}",
            ],
        )
        db = settings.database
        pool = await open_pool(
            url,
            min_size=2,
            max_size=4,
            timeout=db.connect_timeout,
            statement_timeout=db.statement_timeout,
        )
        app = TestServer(make_app(settings, Directory(), AlwaysReady(), pool), host="127.0.0.1")
        await app.start_server()
        timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                yield Hung(session, f"http://127.0.0.1:{app.port}", server.data_dir, url, token)
        finally:
            await app.close()
            await asyncio.wait_for(pool.close(), 20)
    finally:
        await server.stop()


@dataclass(frozen=True)
class Answer:
    kind: str
    started: float
    ended: float
    status: int
    body: object
    retry_after: str | None


async def _request(hung: Hung, kind: str, method: str, path: str, **kw: object) -> Answer:
    started = time.monotonic()
    async with hung.session.request(method, hung.base + path, **kw) as resp:  # type: ignore[arg-type]
        text = await resp.text()
    body = json.loads(text) if text else None
    return Answer(
        kind, started, time.monotonic(), resp.status, body, resp.headers.get("Retry-After")
    )


async def _client(
    hung: Hung, index: int, resumed: asyncio.Event, written: dict[str, str]
) -> list[Answer]:
    bearer = {"Authorization": f"Bearer {hung.token}"}
    key_id, _, secret = hung.token.partition(".")
    basic = {
        "Authorization": "Basic " + base64.b64encode(f"{key_id}:{secret}".encode()).decode(),
        "Accept": "application/json",
    }
    answers: list[Answer] = []
    for round_ in range(ROUNDS):
        after_resume = resumed.is_set()
        phone, name = f"+4922166{index}{round_:04d}", f"Hung {index} {round_}"
        write = await _request(
            hung, "write", "POST", f"{ENTERPRISE}/{phone}", headers=bearer, json={"name": name}
        )
        answers.append(write)
        if 200 <= write.status < 300:
            written[phone] = name
            if after_resume:
                break
        answers.append(await _request(hung, "flowroute", "GET", "/v2/cnams", headers=basic))
        await asyncio.sleep(0.05)
    return answers


async def _stop_for_a_while(hung: Hung, resumed: asyncio.Event) -> tuple[float, float]:
    """SIGSTOP every process of the cluster, SIGCONT after STOPPED_SECONDS (always)."""
    await asyncio.sleep(0.5)  # the clients write while the database is up
    stopped = hung.processes()
    for proc in stopped:
        proc.send_signal(signal.SIGSTOP)
    try:
        since = time.monotonic()
        await asyncio.sleep(STOPPED_SECONDS)
    finally:
        for proc in stopped:
            proc.send_signal(signal.SIGCONT)
        resumed.set()
    return since, time.monotonic()


async def test_a_hung_database_answers_503_within_the_statement_timeout(hung: Hung) -> None:
    resumed = asyncio.Event()
    written: dict[str, str] = {}
    window = asyncio.create_task(_stop_for_a_while(hung, resumed))
    try:
        results = await asyncio.gather(
            *(_client(hung, index, resumed, written) for index in range(CLIENTS))
        )
    finally:
        stopped_at, resumed_at = await window
    answers = [answer for answers in results for answer in answers]

    assert {a.status for a in answers} <= {200, 201, 503}, {a.status for a in answers}
    for answer in answers:
        # from the moment the database stopped, nobody waits past the statement timeout
        waited = answer.ended - max(answer.started, stopped_at)
        assert waited <= STATEMENT_TIMEOUT + MARGIN, (answer, waited)
        if answer.status == 503:
            assert answer.retry_after == "1"
            if answer.kind == "flowroute":
                assert answer.body["errors"][0]["status"] == 503  # type: ignore[index]
            else:
                assert answer.body["field"] == "database", answer.body  # type: ignore[index]
    during = [a for a in answers if a.started >= stopped_at and a.ended <= resumed_at]
    assert during and {a.status for a in during} == {503}
    # every client wrote once more after the resume (it stops only then)
    after = [a for a in answers if a.kind == "write" and a.started >= resumed_at]
    assert sum(1 for a in after if a.status in (200, 201)) == CLIENTS

    conn = await asyncpg.connect(hung.url)
    try:
        rows = await conn.fetch(
            "SELECT key, name FROM cnam_entries WHERE key = ANY($1::text[])", list(written)
        )
    finally:
        await conn.close()
    assert {row["key"]: row["name"] for row in rows} == written
