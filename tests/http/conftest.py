"""A running management API over a real socket: demo data, a pool, a cache that follows.

``api`` gives an ``Api`` (api_client.py) whose ``call`` sends a request with a
token; ``api.key(...)`` mints keys straight in the store, as ``cnamd apikey
create`` does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

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


@pytest.fixture
def api_settings() -> list[str]:
    """Setting overrides for ``api``; a test module overrides this fixture to change them."""
    return []


@pytest.fixture
async def api(db_url: str, tmp_path: Path, api_settings: list[str]) -> AsyncIterator[Api]:
    conn = await asyncpg.connect(db_url)
    await load_demo(conn)
    await conn.close()
    overrides = [f"cache.snapshot_path={tmp_path / 's'}", *api_settings]
    settings = load(environ={}, overrides=overrides)
    directory = Directory()
    feed = ChangeFeed(db_url, directory, settings.cache, settings.database, settings.sip.allow)
    await feed.start()
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    server = TestServer(make_app(settings, directory, AlwaysReady(), pool), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield Api(session, f"http://127.0.0.1:{server.port}", pool, directory)
    await server.close()
    await pool.close()
    await feed.stop()
