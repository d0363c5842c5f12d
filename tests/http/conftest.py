"""A running management API over a real socket: demo data, a pool, a cache that follows.

``api`` gives an ``Api`` (api_client.py) whose ``call`` sends a request with a
token; ``api.key(...)`` mints keys straight in the store, as ``cnamd apikey
create`` does.

Every test gets its own database cloned from the demo template, and its feed
starts from a copy of one snapshot of that template built once per run (then
catches up and confirms it by digest, as a restarted daemon does): a full load
in a loader child per test was most of these tests' time. Full loads are
tested in tests/cache/.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from api_client import AlwaysReady, Api, demo_feed, step

from cnamd.cache.directory import Directory
from cnamd.http.app import make_app
from cnamd.http.keys import SERVED
from cnamd.settings import load
from cnamd.store.pool import open_pool


@pytest.fixture
def api_settings() -> list[str]:
    """Setting overrides for ``api``; a test module overrides this fixture to change them."""
    return []


@pytest.fixture
def db_url(demo_db_url: str) -> str:
    """Here the test's database holds the demo data from the start (the api serves it)."""
    return demo_db_url


@pytest.fixture
async def api(
    db_url: str, tmp_path: Path, api_settings: list[str], demo_snapshot: Path
) -> AsyncIterator[Api]:
    overrides = [f"cache.snapshot_path={tmp_path / 's'}", *api_settings]
    settings = load(environ={}, overrides=overrides)
    directory = Directory()
    feed = await demo_feed(db_url, directory, settings, demo_snapshot)
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
    app = make_app(settings, directory, AlwaysReady(), pool)
    app[SERVED] = feed.reached  # as server.py does: an upload is answered once served
    server = TestServer(app, host="127.0.0.1")
    await step("starting the test server", server.start_server())
    async with aiohttp.ClientSession() as session:
        yield Api(session, f"http://127.0.0.1:{server.port}", pool, directory)
    await step("closing the test server", server.close())
    await step("closing the pool (a connection still acquired?)", pool.close())
    await step("stopping the change feed", feed.stop())
