"""The loader child, started with ``subprocess.Popen`` in a thread and waited for in one
(replica/loader.py says why not the loop's own subprocess support): what it builds,
what its exit codes mean, and that a cancelled load leaves no child behind."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg
import psutil
import pytest

from cnamd.errors import StoreUnavailable
from cnamd.replica import loader
from cnamd.settings import LogSettings

LOG = LogSettings(level="warning", format="kv")


def _loader_children() -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process(os.getpid()).children()
        if "cnamd.replica.loader" in " ".join(child.cmdline())
    ]


async def test_a_load_in_a_child_writes_the_snapshot_of_what_is_served(
    demo_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "cache.snapshot"
    await loader.load_in_child(
        demo_url, path, connect_timeout=10, log_settings=LOG, cause="transaction"
    )
    cache, info = loader.open_snapshot(path)
    try:
        assert info["count"] == len(cache) > 0
    finally:
        cache.close()
    assert _loader_children() == []  # waited for: no zombie left


async def test_an_unreachable_database_is_store_unavailable_naming_the_setting(
    tmp_path: Path,
) -> None:
    with pytest.raises(StoreUnavailable) as raised:
        await loader.load_in_child(
            "postgresql://postgres@127.0.0.1:9/cnamd",
            tmp_path / "cache.snapshot",
            connect_timeout=2,
            log_settings=LOG,
            cause="transaction",
        )
    assert raised.value.field == "database.url"
    assert not (tmp_path / "cache.snapshot").exists()


INSERT = (
    "INSERT INTO cnam_entries (scope, key, is_prefix, name, approval, approved_at)"
    " VALUES ('global', $1, false, $2, 'approved', now())"
)


async def test_a_cancelled_load_kills_and_reaps_its_child_while_writers_go_on(
    demo_url: str, tmp_path: Path
) -> None:
    holder = await asyncpg.connect(demo_url)
    writers = [await asyncpg.connect(demo_url) for _ in range(3)]
    stop = asyncio.Event()
    acknowledged: list[str] = []

    async def write(conn: asyncpg.Connection, lane: int) -> None:
        n = 0
        while not stop.is_set():
            key = f"+1777{lane}{n:06d}"
            await conn.execute(INSERT, key, f"Writer {lane}")
            acknowledged.append(key)
            n += 1

    writing = [asyncio.ensure_future(write(conn, lane)) for lane, conn in enumerate(writers)]
    try:
        # the child waits behind this lock on a table its load reads and the writers do
        # not touch, until the load is cancelled
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        load = asyncio.ensure_future(
            loader.load_in_child(
                demo_url,
                tmp_path / "cache.snapshot",
                connect_timeout=10,
                log_settings=LOG,
                cause="transaction",
            )
        )
        children: list[psutil.Process] = []
        for _ in range(300):  # the child started and is waiting for the lock
            children = _loader_children()
            waiting = await holder.fetchval(
                "SELECT count(*) FROM pg_locks WHERE relation = 'api_keys'::regclass"
                " AND NOT granted"
            )
            if children and waiting:
                break
            await asyncio.sleep(0.05)
        assert children and waiting, "the loader child never waited for the lock"
        written_before = len(acknowledged)
        load.cancel()
        with pytest.raises(asyncio.CancelledError):
            await load
        for child in children:
            assert not psutil.pid_exists(child.pid) or child.status() != psutil.STATUS_ZOMBIE
        assert _loader_children() == []
        await transaction.rollback()
        await asyncio.sleep(0.2)  # the writers go on after the cancel
        stop.set()
        await asyncio.gather(*writing)
        assert len(acknowledged) > written_before > 0
        stored = await holder.fetchval(
            "SELECT count(*) FROM cnam_entries WHERE key = ANY($1::text[])", acknowledged
        )
        assert stored == len(acknowledged)  # every acknowledged write is there
    finally:
        stop.set()
        await asyncio.gather(*writing, return_exceptions=True)
        for conn in (holder, *writers):
            await conn.close()
    assert not (tmp_path / "cache.snapshot").exists()
