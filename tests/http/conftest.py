"""A running management API over a real socket: demo data, a pool, a cache that follows.

``api`` gives an ``Api`` (api_client.py) whose ``call`` sends a request with a
token; ``api.key(...)`` mints keys straight in the store, as ``cnamd apikey
create`` does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import TypeVar

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from api_client import AlwaysReady, Api

from cnamd.cache.directory import Directory
from cnamd.cache.feed import ChangeFeed
from cnamd.http.app import make_app
from cnamd.settings import load
from cnamd.store.demo import load_demo
from cnamd.store.pool import open_pool

T = TypeVar("T")
STEP_SECONDS = 20.0  # each is well under a second unloaded; the test's own timeout is 60 s


@pytest.fixture
def api_settings() -> list[str]:
    """Setting overrides for ``api``; a test module overrides this fixture to change them."""
    return []


async def step(what: str, work: Awaitable[T]) -> T:
    """One setup or teardown step, bounded: a stall fails naming it, not as the test's timeout."""
    bound = asyncio.timeout(STEP_SECONDS)
    try:
        async with bound:
            return await work
    except TimeoutError:
        if not bound.expired():
            raise
        pytest.fail(f"api fixture: {what} took over {STEP_SECONDS:g} s", pytrace=False)


async def _load_demo(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await load_demo(conn)
    finally:
        await conn.close()


@pytest.fixture
async def api(db_url: str, tmp_path: Path, api_settings: list[str]) -> AsyncIterator[Api]:
    await step("loading the demo data", _load_demo(db_url))
    overrides = [f"cache.snapshot_path={tmp_path / 's'}", *api_settings]
    settings = load(environ={}, overrides=overrides)
    directory = Directory()
    feed = ChangeFeed(db_url, directory, settings.cache, settings.database, settings.sip.allow)
    await step("the change feed's first load", feed.start())
    db = settings.database
    pool = await step(
        "opening the pool",
        open_pool(
            db_url,
            min_size=1,
            max_size=4,
            timeout=db.connect_timeout,
            statement_timeout=db.statement_timeout,
        ),
    )
    server = TestServer(make_app(settings, directory, AlwaysReady(), pool), host="127.0.0.1")
    await step("starting the test server", server.start_server())
    async with aiohttp.ClientSession() as session:
        yield Api(session, f"http://127.0.0.1:{server.port}", pool, directory)
    await step("closing the test server", server.close())
    await step("closing the pool (a connection still acquired?)", pool.close())
    await step("stopping the change feed", feed.stop())
