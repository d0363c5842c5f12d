"""Shared fixtures: one real embedded PostgreSQL per test run, a fresh database per test."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from cnamd.cache.directory import Directory
from cnamd.replica.feed import ChangeFeed
from cnamd.settings import load
from cnamd.store.demo import load_demo
from cnamd.store.embedded import EmbeddedPostgres
from cnamd.store.migrations import migrate
from databases import ADMIN_SECONDS, TEMPLATE, Database
from test_daemon import Daemon

DEMO_TEMPLATE = "cnamd_demo_template"  # TEMPLATE plus the demo data, made once per run
SHM_FREE_NEEDED = 1 << 30  # bytes free in /dev/shm to put the session PostgreSQL there


@pytest.fixture(scope="session")
async def pg(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedPostgres]:
    """The embedded PostgreSQL, started once for the whole run (once per xdist worker)."""
    root = _in_memory_dir()
    server = EmbeddedPostgres((root or tmp_path_factory.mktemp("pg")) / "data", database=TEMPLATE)
    try:
        await server.start()
        conn = await asyncpg.connect(server.url(TEMPLATE))
        try:
            await _skip_durability(conn)
            await migrate(conn)
        finally:
            await conn.close()
        yield server
    finally:
        await server.stop()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


def _in_memory_dir() -> Path | None:
    """A new directory in /dev/shm for ``pg``'s data, or None where there is none to spare.

    Most tests clone a database from a template and drop it; on this VM's disk
    each clone waited 0.1-0.25 s even without fsync, against about 13 ms in
    memory. The server holds only throwaway databases (tens of MB); a small
    /dev/shm (a container's 64 MB) is left to PostgreSQL's shared memory.
    """
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        return None
    fs = os.statvfs(shm)
    if fs.f_bavail * fs.f_frsize < SHM_FREE_NEEDED:
        return None
    return Path(tempfile.mkdtemp(prefix="cnamd-test-pg-", dir=shm))


async def _skip_durability(conn: asyncpg.Connection) -> None:
    """No fsync and no full-page writes on this throwaway server.

    Every test creates and drops a database (a checkpoint each) and commits a
    great deal; waiting for the disk was a large share of the suite's time.
    What the tests check (transactions, visibility, the change log) is the same.
    """
    for setting in ("fsync", "synchronous_commit", "full_page_writes"):
        await conn.execute(f"ALTER SYSTEM SET {setting} = off")
    await conn.execute("SELECT pg_reload_conf()")


@pytest.fixture(scope="session")
async def demo_template(pg: EmbeddedPostgres) -> str:
    """A template database holding the demo data: cloning it costs less than loading it."""
    admin = await asyncpg.connect(pg.url("postgres"), timeout=ADMIN_SECONDS)
    try:
        await admin.execute(
            f'CREATE DATABASE "{DEMO_TEMPLATE}" TEMPLATE "{TEMPLATE}" STRATEGY FILE_COPY',
            timeout=ADMIN_SECONDS,
        )
    finally:
        await admin.close()
    conn = await asyncpg.connect(pg.url(DEMO_TEMPLATE))
    try:
        await load_demo(conn)
    finally:
        await conn.close()  # a template must have no connections when it is cloned
    return DEMO_TEMPLATE


@pytest.fixture
async def demo_db_url(pg: EmbeddedPostgres, demo_template: str) -> AsyncIterator[str]:
    """A database of its own for this test, holding the demo data."""
    async with Database(pg, demo_template) as url:
        yield url


@pytest.fixture(scope="session")
async def demo_snapshot(
    pg: EmbeddedPostgres, demo_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A snapshot of the demo template, made by one full load for the whole run."""
    path = tmp_path_factory.mktemp("demo-snapshot") / "s"
    settings = load(environ={}, overrides=[f"cache.snapshot_path={path}"])
    async with Database(pg, demo_template) as url:
        feed = ChangeFeed(url, Directory(), settings.cache, settings.database, settings.sip.allow)
        await feed.start()
        await feed.stop()
    assert path.exists()
    return path


@pytest.fixture
async def empty_db_url(pg: EmbeddedPostgres) -> AsyncIterator[str]:
    """A database with no schema at all."""
    async with Database(pg, None) as url:
        yield url


@pytest.fixture
async def db_url(pg: EmbeddedPostgres) -> AsyncIterator[str]:
    """A freshly migrated database of its own for this test."""
    async with Database(pg, TEMPLATE) as url:
        yield url


@pytest.fixture
async def other_db_url(pg: EmbeddedPostgres) -> AsyncIterator[str]:
    """A second migrated database, for "the wrong database" cases."""
    async with Database(pg, TEMPLATE) as url:
        yield url


@pytest.fixture
async def demo_url(db_url: str) -> str:
    """``db_url`` holding the demo data (``make run``'s tenants, people and names)."""
    conn = await asyncpg.connect(db_url)
    try:
        await load_demo(conn)
    finally:
        await conn.close()
    return db_url


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(db_url)
    yield connection
    await connection.close()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A one-worker ``cnamd serve --demo`` on its own embedded PostgreSQL, stopped after."""
    started = Daemon(tmp_path, "--workers", "1")
    try:
        yield started
    finally:
        started.stop()
