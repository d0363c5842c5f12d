"""The management API client the HTTP tests share (tests/http is on pytest's pythonpath)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy

from cnamd.cache.directory import Directory
from cnamd.http.fastpath import FastLookups, LookupRunner, Waiting
from cnamd.http.front import ScannedRequest
from cnamd.model import Role
from cnamd.replica.feed import ChangeFeed
from cnamd.settings import Settings, load
from cnamd.store import apikeys

STEP_SECONDS = 20.0  # each is well under a second unloaded; the test's own timeout is 60 s
T = TypeVar("T")


async def step(what: str, work: Awaitable[T]) -> T:
    """One setup or teardown step, bounded: a stall fails naming it, not as the test's timeout."""
    bound = asyncio.timeout(STEP_SECONDS)
    try:
        async with bound:
            return await work
    except TimeoutError:
        if not bound.expired():
            raise
        pytest.fail(f"test setup: {what} took over {STEP_SECONDS:g} s", pytrace=False)


async def demo_feed(
    db_url: str, directory: Directory, settings: Settings, demo_snapshot: Path
) -> ChangeFeed:
    """A feed on ``db_url`` (a clone of the demo template) started from a copy of the
    run's demo snapshot, caught up and confirmed by digest."""
    assert settings.cache.snapshot_path, "the feed needs a snapshot path of its own"
    shutil.copyfile(demo_snapshot, settings.cache.snapshot_path)
    feed = ChangeFeed(db_url, directory, settings.cache, settings.database, settings.sip.allow)
    await step("mapping the demo snapshot", feed.start(prefer_snapshot=True))
    await step("catching up from the snapshot", feed.caught_up.wait())
    return feed


class AlwaysReady:
    """The server's readiness role for an app without a daemon around it."""

    def readiness(self) -> tuple[int, dict[str, Any]]:
        return 200, {"status": "ready"}

    def metrics_extra(self) -> bytes:
        return b""


@dataclass
class Reply:
    status: int
    body: Any
    headers: CIMultiDictProxy[str]


@dataclass
class Api:
    session: aiohttp.ClientSession
    base: str
    pool: asyncpg.Pool
    directory: Directory

    async def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> Reply:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.base + path, headers=headers, **kw) as resp:
            if resp.content_type == "application/json":
                body: Any = await resp.json()
            else:
                body = await resp.text()
            return Reply(resp.status, body, resp.headers)

    async def key(self, role: Role, **kw: Any) -> str:
        async with self.pool.acquire() as conn:
            _, token = await apikeys.create_key(conn, role, **kw)
        return token

    async def until_key(self, key_id: str, known: bool = True) -> None:
        """Wait (bounded) until the change feed has brought key ``key_id`` to the cache
        (``known``) or taken it away: keys reach the cache like names."""
        for _ in range(400):
            contexts = self.directory.contexts
            if contexts is not None and (key_id in contexts.keys) == known:
                return
            await asyncio.sleep(0.025)
        raise AssertionError(f"key {key_id} never {'arrived' if known else 'left'}")

    async def until_served(self, number: str, name: str | None, **ctx: str) -> None:
        """Wait (bounded) until an HTTP lookup of ``number`` answers ``name`` (None: a miss)."""
        query = "&".join(f"{k}={v}" for k, v in ctx.items())
        for _ in range(200):
            reply = await self.call("GET", f"/v1/lookup/{number}?{query}")
            got = reply.body.get("name") if reply.status == 200 else None
            if got == name:
                return
            await asyncio.sleep(0.025)
        raise AssertionError(f"{number} never served {name!r} (last: {reply.status} {reply.body})")


#: the fast path's tests: one trusted and one untrusted loopback source, no login limit
TRUSTED_SOURCE, UNTRUSTED_SOURCE = "127.0.0.1", "127.0.0.2"
FAST_PATH_OVERRIDES = [
    f"http.trusted_networks={TRUSTED_SOURCE}/32",
    "http.auth_failure_burst=1000000",
]


#: numbers of every kind a plain lookup GET carries: the demo tenant's, global names and a
#: global prefix, national and bare digits, a number no reading makes valid, a miss
PLAIN_NUMBER_LIST = [
    "+492216698713",
    "+12125550001",
    "+18005550100",
    "12125550001",
    "2125550001",
    "19576339411",
    "+19995550000",
]


def fast_path_settings(snapshot: Path) -> Settings:
    """Settings of a fast-path test's own server, with its own snapshot path."""
    return load(environ={}, overrides=[f"cache.snapshot_path={snapshot}", *FAST_PATH_OVERRIDES])


class CountedLookups(FastLookups):
    """The fast path, counting what it answered (so a test knows it was used): in all,
    and of those the answers it gave the connection front."""

    answered = 0
    front = 0

    def answer(self, request: web.Request) -> web.StreamResponse | Waiting | None:
        response = super().answer(request)
        if response is not None:
            CountedLookups.answered += 1
            CountedLookups.front += isinstance(request, ScannedRequest)
        return response


def daemon_test_server(handler: type[FastLookups]) -> type[TestServer]:
    """aiohttp's TestServer with the daemon's runner (``LookupRunner``: the connection
    front, then ``handler`` where aiohttp calls the application)."""

    class Runner(LookupRunner):
        handler_class = handler

    class Server(TestServer):
        async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
            assert isinstance(self.app, web.Application)
            return Runner(self.app, **kwargs)

    return Server
