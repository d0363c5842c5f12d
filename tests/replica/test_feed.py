"""The change feed against a real PostgreSQL with real LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cnamd.cache.directory import Directory
from cnamd.errors import StoreUnavailable
from cnamd.model import GLOBAL_ONLY, LookupContext, Scope
from cnamd.replica.feed import ChangeFeed, _unmap
from cnamd.settings import CacheSettings, DatabaseSettings

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"

INSERT = (
    "INSERT INTO cnam_entries (scope, tenant_id, key, is_prefix, name, approval, approved_at)"
    " VALUES ($1, $2, $3, $4, $5, 'approved', now())"
)


def make_feed(
    url: str, snapshot: Path | None, cache_settings: dict[str, Any] | None = None, **db: Any
) -> tuple[ChangeFeed, Directory]:
    directory = Directory()
    cache = CacheSettings(
        snapshot_path=str(snapshot) if snapshot else "",
        reconcile_interval=3600,
        **(cache_settings or {}),
    )
    db_settings = DatabaseSettings(connect_timeout=2, retry_max_seconds=0.2, **db)
    feed = ChangeFeed(url, directory, cache, db_settings, ["127.0.0.0/8"], poll_interval=0.2)
    return feed, directory


async def eventually(check: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll ``check`` until true; bounded."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@pytest.fixture
async def running(demo_url: str, tmp_path: Path) -> AsyncIterator[tuple[ChangeFeed, Directory]]:
    feed, directory = make_feed(demo_url, tmp_path / "cache.snapshot")
    await feed.start()
    yield feed, directory
    await feed.stop()


@dataclass
class Writer:
    """A connection of the test's own to the demo database, and the demo tenant's id."""

    conn: Any
    tenant: int


@pytest.fixture
async def writer(demo_url: str) -> AsyncIterator[Writer]:
    conn = await asyncpg.connect(demo_url)
    yield Writer(conn, await tenant_id(conn))
    await conn.close()


async def tenant_id(conn: Any) -> int:
    value: int = await conn.fetchval("SELECT id FROM tenants WHERE slug = 'demo'")
    return value


def name_of(directory: Directory, number: str, ctx: LookupContext) -> str | None:
    found = directory.resolve(number, ctx)
    return found.name if found else None


async def test_full_load_serves_the_demo_names(running: tuple[ChangeFeed, Directory]) -> None:
    _feed, directory = running
    demo = directory.contexts.tenant("demo") if directory.contexts else None
    assert demo is not None
    assert name_of(directory, "+492216698712", LookupContext(demo.id)) == "John Doe"
    assert name_of(directory, "+492216698799", LookupContext(demo.id)) == "ACME Cologne"
    assert name_of(directory, "+492216698712", GLOBAL_ONLY) is None
    assert name_of(directory, "+18005550100", GLOBAL_ONLY) == "US Toll Free"


async def test_committed_write_is_served_after_the_notification(
    running: tuple[ChangeFeed, Directory], writer: Writer
) -> None:
    _feed, directory = running
    conn, tid = writer.conn, writer.tenant
    await conn.execute(INSERT, "enterprise", tid, "+493012345678", False, "Berlin Office")
    ctx = LookupContext(tid)
    await eventually(lambda: name_of(directory, "+493012345678", ctx) == "Berlin Office")
    await conn.execute("DELETE FROM cnam_entries WHERE key = '+493012345678'")
    await eventually(lambda: name_of(directory, "+493012345678", ctx) is None)


async def test_unapproved_names_are_never_served(
    running: tuple[ChangeFeed, Directory], writer: Writer
) -> None:
    _feed, directory = running
    conn, tid = writer.conn, writer.tenant
    await conn.execute(
        "INSERT INTO cnam_entries (scope, tenant_id, key, name, approval)"
        " VALUES ('enterprise', $1, '+4940111', 'Pending Co', 'pending')",
        tid,
    )
    await conn.execute(INSERT, "enterprise", tid, "+4940222", False, "Marker")
    await eventually(lambda: name_of(directory, "+4940222", LookupContext(tid)) == "Marker")
    assert name_of(directory, "+4940111", LookupContext(tid)) is None


async def test_dropped_listener_is_detected_and_caught_up(
    running: tuple[ChangeFeed, Directory], writer: Writer
) -> None:
    feed, directory = running
    conn, tid = writer.conn, writer.tenant
    ctx = LookupContext(tid)
    # kill the feed's backend, then write while it is away
    await conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    for i in range(20):
        await conn.execute(INSERT, "enterprise", tid, f"+4989000{i:02d}", False, f"Munich {i}")
    await eventually(
        lambda: all(name_of(directory, f"+4989000{i:02d}", ctx) == f"Munich {i}" for i in range(20))
    )
    await eventually(lambda: feed.db_up)


async def test_context_changes_reach_the_directory(
    running: tuple[ChangeFeed, Directory], writer: Writer
) -> None:
    _feed, directory = running
    await writer.conn.execute(
        "INSERT INTO tenants (slug, name, region) VALUES ('newco', 'New', 'US')"
    )
    await eventually(
        lambda: directory.contexts is not None and directory.contexts.tenant("newco") is not None
    )


async def write_behind_the_log(conn: Any, tid: int, key: str, name: str) -> None:
    """A write with triggers off: the change log never hears of it."""
    await conn.execute("SET session_replication_role = replica")
    await conn.execute(INSERT, "enterprise", tid, key, False, name)
    await conn.execute("SET session_replication_role = DEFAULT")


async def test_reconciliation_repairs_a_cache_that_missed_a_write(
    running: tuple[ChangeFeed, Directory], writer: Writer
) -> None:
    feed, directory = running
    conn, tid = writer.conn, writer.tenant
    await write_behind_the_log(conn, tid, "+4969123", "Sneaky")
    feed.reconcile_soon()
    await eventually(lambda: name_of(directory, "+4969123", LookupContext(tid)) == "Sneaky")


async def test_gap_in_change_ids_forces_a_reload(
    running: tuple[ChangeFeed, Directory], writer: Writer
) -> None:
    feed, directory = running
    conn, tid = writer.conn, writer.tenant
    await write_behind_the_log(conn, tid, "+4971100", "Stuttgart")
    last = feed.last_change_id
    await conn.execute("INSERT INTO change_log (id, kind) VALUES ($1, 'contexts')", last + 5)
    await eventually(lambda: name_of(directory, "+4971100", LookupContext(tid)) == "Stuttgart")
    assert feed.last_change_id == last + 5
    # the replaced snapshot is unmapped on the feed's own thread, not on the loop
    assert any(thread.name.startswith("cache-unmap") for thread in threading.enumerate())
    await eventually(lambda: not replaced_and_mapped(feed))


def replaced_and_mapped(feed: ChangeFeed) -> bool:
    """Whether this process still maps a snapshot file the loader has replaced."""
    with open("/proc/self/maps") as maps:
        return any(f"{feed.snapshot_path} (deleted)" in line for line in maps)


async def test_snapshot_serves_when_the_database_is_down(
    running: tuple[ChangeFeed, Directory], tmp_path: Path
) -> None:
    warm, directory = make_feed(UNREACHABLE, tmp_path / "cache.snapshot")
    await warm.start()
    try:
        assert directory.stale
        assert not warm.db_up
        demo = directory.contexts.tenant("demo") if directory.contexts else None
        assert demo is not None
        assert name_of(directory, "+492216698712", LookupContext(demo.id)) == "John Doe"
        # who-asks maps came from the snapshot too: a dip from loopback is the demo tenant's
        found = directory.caller_lookup("+492216698712", "+4999", "127.0.0.1")[:2]
        assert found[1] is not None and found[1].name == "John Doe"
    finally:
        await warm.stop()


async def test_snapshot_is_confirmed_when_the_database_returns(
    running: tuple[ChangeFeed, Directory], demo_url: str, writer: Writer, tmp_path: Path
) -> None:
    warm, directory = make_feed(demo_url, tmp_path / "cache.snapshot")
    assert warm._warm_start("test")  # as if the first connection had failed
    try:
        await writer.conn.execute(
            INSERT, "enterprise", writer.tenant, "+4921100", False, "Duesseldorf"
        )
        warm._spawn()
        await eventually(lambda: not directory.stale, timeout=10)
        assert name_of(directory, "+4921100", LookupContext(writer.tenant)) == "Duesseldorf"
    finally:
        await warm.stop()


async def test_truncated_snapshot_is_refused(
    running: tuple[ChangeFeed, Directory], tmp_path: Path
) -> None:
    snapshot = tmp_path / "cache.snapshot"
    data = snapshot.read_bytes()
    snapshot.write_bytes(data[: len(data) // 2])
    warm, directory = make_feed(UNREACHABLE, snapshot)
    with pytest.raises(StoreUnavailable):
        await warm.start()
    assert not directory.ready


async def test_unreachable_database_without_snapshot_fails_by_default(tmp_path: Path) -> None:
    feed, _ = make_feed(UNREACHABLE, tmp_path / "absent.snapshot")
    with pytest.raises(StoreUnavailable) as info:
        await feed.start()
    assert info.value.field == "database.url"


async def test_retry_policy_waits_for_the_database(demo_url: str, tmp_path: Path) -> None:
    feed, directory = make_feed(UNREACHABLE, None, on_unreachable="retry")
    await feed.start()
    try:
        assert not directory.ready
        feed.url = demo_url  # the database "comes back"
        await eventually(lambda: directory.ready, timeout=10)
        assert directory.counts()[Scope.ENTERPRISE] >= 3
    finally:
        await feed.stop()


async def test_failed_load_in_the_child_is_reported_not_half_installed(
    demo_url: str, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    feed, directory = make_feed(demo_url, blocker / "cache.snapshot")
    with pytest.raises(StoreUnavailable, match="loader exit code 1"):
        await feed.start()
    assert not directory.ready


async def test_snapshots_off_still_load_through_a_scratch_file(demo_url: str) -> None:
    feed, directory = make_feed(demo_url, None)
    await feed.start()
    try:
        assert directory.counts()[Scope.ENTERPRISE] >= 3
    finally:
        await feed.stop()


async def test_restart_maps_the_snapshot_and_catches_up(
    running: tuple[ChangeFeed, Directory], demo_url: str, writer: Writer, tmp_path: Path
) -> None:
    first, _ = running
    await first.stop()  # the snapshot stays; a change lands while no daemon runs
    await writer.conn.execute(INSERT, "enterprise", writer.tenant, "+4934100", False, "Leipzig")
    again, directory = make_feed(demo_url, tmp_path / "cache.snapshot")
    await again.start(prefer_snapshot=True)
    try:
        assert directory.stale  # mapped, not yet confirmed
        await eventually(lambda: not directory.stale)
        assert name_of(directory, "+4934100", LookupContext(writer.tenant)) == "Leipzig"
        assert again.db_up
    finally:
        await again.stop()


async def test_snapshot_of_another_database_is_replaced_by_a_full_load(
    running: tuple[ChangeFeed, Directory], other_db_url: str, tmp_path: Path
) -> None:
    # the snapshot holds the demo data; this feed's database is another one, empty
    feed, directory = make_feed(other_db_url, tmp_path / "cache.snapshot")
    await feed.start(prefer_snapshot=True)
    try:
        await eventually(lambda: not directory.stale)
        assert directory.counts().get(Scope.ENTERPRISE, 0) == 0
        assert name_of(directory, "+18005550100", GLOBAL_ONLY) is None
    finally:
        await feed.stop()


async def test_stop_ends_the_feed_when_a_wake_up_meets_the_cancel(
    running: tuple[ChangeFeed, Directory],
) -> None:
    feed, _ = running
    await eventually(lambda: feed.db_up)
    await asyncio.sleep(0.05)  # the follower now waits for a notification or the poll tick
    # a wake-up in the same loop pass as the cancel, as a NOTIFY at shutdown can be: Python
    # 3.11's wait_for returned the finished wait and dropped the cancel, and stop() hung
    feed.reconcile_soon()
    stopping = asyncio.create_task(feed.stop())
    try:
        done, _ = await asyncio.wait({stopping}, timeout=5)
        assert done, "stop() hung: the follower lost its cancel and kept polling"
    finally:
        stopping.cancel()  # a second cancel ends a hung follower
        await asyncio.wait({stopping})


async def replace_in_one_transaction(conn: Any, tid: int, prefix: str, new: int) -> None:
    """A replace-import as one transaction: every name under ``prefix`` out, ``new`` in."""
    async with conn.transaction():
        await conn.execute("DELETE FROM cnam_entries WHERE key LIKE $1", prefix + "%")
        await conn.executemany(
            INSERT,
            [("enterprise", tid, f"{prefix}{i:05d}", False, f"New {i}") for i in range(new)],
        )


async def watch_counts(directory: Directory, seen: set[int], stop: asyncio.Event) -> None:
    """Every event-loop turn: the number of enterprise names a lookup could see."""
    while not stop.is_set():
        seen.add(directory.counts().get(Scope.ENTERPRISE, 0))
        await asyncio.sleep(0)


async def test_a_replace_import_is_seen_whole_or_not_at_all(
    running: tuple[ChangeFeed, Directory], writer: Writer
) -> None:
    feed, directory = running
    conn, tid = writer.conn, writer.tenant
    # more rows than one fetch of the change log (5000): today's main applied 5000 of
    # them, awaited the next fetch, and lookups saw a state the database never had
    await conn.executemany(
        INSERT, [("enterprise", tid, f"+4961{i:05d}", False, f"Old {i}") for i in range(6000)]
    )
    await eventually(lambda: name_of(directory, "+496105999", LookupContext(tid)) == "Old 5999")
    before = directory.counts()[Scope.ENTERPRISE]
    seen: set[int] = set()
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_counts(directory, seen, stop))
    try:
        await replace_in_one_transaction(conn, tid, "+4961", 5)
        await eventually(lambda: name_of(directory, "+496100004", LookupContext(tid)) == "New 4")
    finally:
        stop.set()
        await watcher
    assert seen <= {before, before - 6000 + 5}, f"half-applied states seen: {sorted(seen)}"
    assert name_of(directory, "+496105999", LookupContext(tid)) is None
    assert feed.last_change_id == await conn.fetchval("SELECT max(id) FROM change_log")


async def test_a_transaction_over_the_threshold_is_loaded_whole(
    demo_url: str, writer: Writer, tmp_path: Path
) -> None:
    feed, directory = make_feed(demo_url, tmp_path / "cache.snapshot", {"compact_threshold": 100})
    await feed.start()
    conn, tid = writer.conn, writer.tenant
    try:
        before = directory.counts()[Scope.ENTERPRISE]
        seen: set[int] = set()
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_counts(directory, seen, stop))
        try:
            await conn.executemany(
                INSERT,
                [("enterprise", tid, f"+4962{i:05d}", False, f"Big {i}") for i in range(250)],
            )
            await eventually(
                lambda: name_of(directory, "+496200249", LookupContext(tid)) == "Big 249"
            )
        finally:
            stop.set()
            await watcher
        assert seen <= {before, before + 250}, f"half-applied states seen: {sorted(seen)}"
        # not applied change by change: a full load swapped in at once
        assert directory.cache is not None and directory.cache.overlay_size == 0
    finally:
        await feed.stop()


async def test_a_big_transaction_committed_during_the_full_load_loads_again_quietly(
    demo_url: str, writer: Writer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two big imports back to back, the second committed while the full load the first
    one caused is reading: the fresh load's catch-up meets it. The loader loads again;
    before, it counted a feed failure and logged the database lost, on an ordinary day."""
    feed, directory = make_feed(demo_url, tmp_path / "cache.snapshot", {"compact_threshold": 100})
    await feed.start()
    conn, tid = writer.conn, writer.tenant
    second = await asyncpg.connect(demo_url)
    failures = feed_failures()
    seen: set[int] = set()
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_counts(directory, seen, stop))
    try:
        before = directory.counts()[Scope.ENTERPRISE]
        await conn.executemany(
            INSERT, [("enterprise", tid, f"+4963{i:05d}", False, f"A {i}") for i in range(250)]
        )
        async with second.transaction():
            # the loader child reads the names behind this lock, its snapshot already taken
            await second.execute("LOCK TABLE cnam_entries IN ACCESS EXCLUSIVE MODE")
            waiting = (
                "SELECT count(*) FROM pg_locks"
                " WHERE relation = 'cnam_entries'::regclass AND NOT granted"
            )
            for _ in range(300):
                if await second.fetchval(waiting):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("no full load came to read the names")
            await second.executemany(
                INSERT, [("enterprise", tid, f"+4964{i:05d}", False, f"B {i}") for i in range(250)]
            )
        await eventually(lambda: name_of(directory, "+496400249", LookupContext(tid)) == "B 249")
    finally:
        stop.set()
        await watcher
        await second.close()
        await feed.stop()
    assert name_of(directory, "+496300249", LookupContext(tid)) == "A 249"
    assert seen <= {before, before + 250, before + 500}, f"half-applied states: {sorted(seen)}"
    assert feed_failures() == failures, "a feed failure counted for an import"
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_the_loader_keeps_a_tail_so_a_restart_starts_current(
    running: tuple[ChangeFeed, Directory], demo_url: str, writer: Writer, tmp_path: Path
) -> None:
    first, _ = running  # its tail is refreshed every cache.snapshot_interval (2 s)
    await writer.conn.execute(INSERT, "enterprise", writer.tenant, "+4935100", False, "Dresden")
    last = await writer.conn.fetchval("SELECT max(id) FROM change_log")
    await eventually(lambda: tail_change_id(tmp_path) == last)
    # the database is away now: a warm start serves the snapshot's base and its tail
    warm, directory = make_feed(UNREACHABLE, tmp_path / "cache.snapshot")
    await warm.start()
    try:
        assert directory.stale
        assert name_of(directory, "+4935100", LookupContext(writer.tenant)) == "Dresden"
        assert warm.last_change_id == first.last_change_id
    finally:
        await warm.stop()


def tail_change_id(tmp_path: Path) -> int:
    from cnamd.cache.snapshot import map_sections
    from cnamd.replica.loader import tail_path

    path = tail_path(tmp_path / "cache.snapshot")
    if not path.exists():
        return -1
    snapshot = map_sections(path)
    try:
        info = json.loads(bytes(snapshot.view(b"META")))
    finally:
        snapshot.close()
    value: int = info["last_change_id"]
    return value


async def test_a_follower_maps_the_loaders_new_base_and_never_loads(
    running: tuple[ChangeFeed, Directory], demo_url: str, writer: Writer, tmp_path: Path
) -> None:
    loader, _ = running
    snapshot = tmp_path / "cache.snapshot"
    follower_dir = Directory()
    follower = ChangeFeed(
        demo_url,
        follower_dir,
        CacheSettings(snapshot_path="", reconcile_interval=3600),
        DatabaseSettings(connect_timeout=2, retry_max_seconds=0.2),
        ["127.0.0.0/8"],
        poll_interval=0.2,
        loader=False,
        snapshot_path=snapshot,
    )
    await follower.start()
    try:
        await eventually(follower.caught_up.is_set)
        inode = snapshot.stat().st_ino
        # a gap makes the loader reload; the follower must map the loader's new base
        await writer.conn.execute(
            "INSERT INTO change_log (id, kind) VALUES ($1, 'contexts')", loader.last_change_id + 5
        )
        await eventually(lambda: snapshot.stat().st_ino != inode)
        await writer.conn.execute(INSERT, "enterprise", writer.tenant, "+4936100", False, "Erfurt")
        await eventually(
            lambda: name_of(follower_dir, "+4936100", LookupContext(writer.tenant)) == "Erfurt"
        )
        assert follower_dir.cache is not None
        assert follower._installed().base_inode == snapshot.stat().st_ino
        # the loader swaps its own reload in after catching it up: it may come second
        await eventually(lambda: follower.last_change_id == loader.last_change_id)
    finally:
        await follower.stop()


async def test_an_unexpected_failure_is_logged_counted_and_retried(
    running: tuple[ChangeFeed, Directory], writer: Writer, caplog: pytest.LogCaptureFixture
) -> None:
    feed, directory = running
    conn, tid = writer.conn, writer.tenant
    failures = metric_value("cnamd_cache_feed_failures_total", reason="internal")
    # a change the cache refuses (a key no number could be) stands in for a bug: the
    # follower must log it, count it and go on instead of dying silently
    await conn.execute(
        "INSERT INTO change_log (id, kind, scope, owner_id, key, name)"
        " VALUES ($1, 'entry', 'enterprise', $2, 'not-a-key', 'X')",
        feed.last_change_id + 1,
        tid,
    )
    await eventually(
        lambda: metric_value("cnamd_cache_feed_failures_total", reason="internal") > failures
    )
    assert any("change feed failed" in r.getMessage() for r in caplog.records)
    assert not feed.failed and feed._task is not None and not feed._task.done()
    # its cache may hold half of what failed: it reloads whole, past the bad change
    await conn.execute(INSERT, "enterprise", tid, "+4937100", False, "Jena")
    await eventually(lambda: name_of(directory, "+4937100", LookupContext(tid)) == "Jena")


def feed_failures() -> float:
    """Feed failures counted so far, for either reason."""
    return sum(
        metric_value("cnamd_cache_feed_failures_total", reason=reason)
        for reason in ("database", "internal")
    )


def metric_value(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    found = REGISTRY.get_sample_value(name, labels)
    return found or 0.0


def test_an_unmap_that_fails_on_its_thread_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """The unmapping thread's failure is not lost in a future nobody reads."""

    def exported() -> None:
        raise BufferError("cannot close exported pointers exist")

    with caplog.at_level(logging.ERROR, logger="cnamd.replica.feed"):
        _unmap(exported)
    assert "a replaced cache could not be unmapped" in caplog.text
    assert "exported pointers" in caplog.text
