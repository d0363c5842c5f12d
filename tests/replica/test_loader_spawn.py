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


async def test_a_cancelled_load_kills_and_reaps_its_child(demo_url: str, tmp_path: Path) -> None:
    holder = await asyncpg.connect(demo_url)
    try:
        # the child's stream waits behind this lock until the load is cancelled
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("LOCK TABLE cnam_entries IN ACCESS EXCLUSIVE MODE")
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
                "SELECT count(*) FROM pg_locks WHERE relation = 'cnam_entries'::regclass"
                " AND NOT granted"
            )
            if children and waiting:
                break
            await asyncio.sleep(0.05)
        assert children and waiting, "the loader child never waited for the lock"
        load.cancel()
        with pytest.raises(asyncio.CancelledError):
            await load
        for child in children:
            assert not psutil.pid_exists(child.pid) or child.status() != psutil.STATUS_ZOMBIE
        assert _loader_children() == []
        await transaction.rollback()
    finally:
        await holder.close()
    assert not (tmp_path / "cache.snapshot").exists()
