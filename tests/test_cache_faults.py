"""The cache never lies, under the faults of an operator's bad day, with writers at work.

Each test runs a real ``cnamd serve`` (two workers unless it needs one) on a
real PostgreSQL, writes names through SQL while lookups run, breaks something
(the feed's connections, a worker, the database itself) and checks that what
the daemon answers and what /readyz says stay true. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
import pytest

from db_faults import terminate_backends
from ops_daemon import Daemon, parse_metrics, value

INSERT = (
    "INSERT INTO cnam_entries (scope, tenant_id, key, is_prefix, name, approval, approved_at)"
    " VALUES ('enterprise', $1, $2, false, $3, 'approved', now())"
)
WRITER = {"application_name": "test-writer"}  # spared by the backend killer
# a committed write reaches every worker in milliseconds; a stale snapshot is seconds
# to minutes behind: an answer older than a write acknowledged this long before is a lie
PROPAGATION_ALLOWANCE = 0.5


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as resp:
        body = await resp.read()
        try:
            return resp.status, json.loads(body)
        except ValueError:
            return resp.status, body.decode(errors="replace")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=5)
    # a new connection per request: the shared HTTP socket hands each to any worker
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)
    ) as found:
        yield found


async def tenant_of(conn: asyncpg.Connection) -> int:
    tid: int = await conn.fetchval("SELECT id FROM tenants WHERE slug = 'demo'")
    return tid


async def head(conn: asyncpg.Connection) -> int:
    found: int = await conn.fetchval("SELECT coalesce(max(id), 0) FROM change_log")
    return found


async def all_workers_at(
    session: aiohttp.ClientSession, daemon: Daemon, change_id: int, count: int
) -> bool:
    """/readyz is 200 and the supervisor sees ``count`` workers, each at ``change_id``."""
    try:
        status, body = await get_json(session, daemon.base + "/readyz")
    except (aiohttp.ClientError, TimeoutError):
        return False
    workers = body.get("workers", []) if isinstance(body, dict) else []
    return (
        status == 200
        and len(workers) == count
        and all(w["change_id"] == change_id for w in workers)
    )


@pytest.mark.timeout(150)
async def test_feed_backends_killed_in_a_loop_lose_no_acknowledged_write(
    db_url: str, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    daemon = Daemon(tmp_path, workers=2, database_url=db_url)
    try:
        await asyncio.to_thread(daemon.wait_ready, 60)
        admin = await asyncpg.connect(db_url, server_settings=WRITER)
        tid = await tenant_of(admin)
        acknowledged: dict[str, str] = {}
        stop = asyncio.Event()

        async def writer(w: int) -> None:
            conn = None
            i = 0
            while not stop.is_set():
                key, name = f"+4970{w}{i:05d}", f"W{w} n{i}"
                try:
                    if conn is None or conn.is_closed():
                        conn = await asyncpg.connect(db_url, server_settings=WRITER)
                    await conn.execute(INSERT, tid, key, name)
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    conn = None
                    continue
                acknowledged[key] = name
                i += 1
                await asyncio.sleep(0.01)
            if conn is not None:
                await conn.close()

        async def killer() -> int:
            kills = 0
            while not stop.is_set():
                kills += await terminate_backends(admin, spare=WRITER["application_name"])
                await asyncio.sleep(0.15)
            return kills

        async def reader() -> int:
            answered = 0
            while not stop.is_set():
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    status, _ = await get_json(
                        session, daemon.base + "/v1/lookup/+492216698712?tenant=demo"
                    )
                    assert status in (200, 503), status
                    answered += status == 200
                await asyncio.sleep(0.02)
            return answered

        tasks = [asyncio.create_task(writer(w)) for w in range(6)]
        killing = asyncio.create_task(killer())
        reading = asyncio.create_task(reader())
        await asyncio.sleep(6)
        stop.set()
        await asyncio.gather(*tasks)
        kills, answered = await killing, await reading
        assert kills > 20 and len(acknowledged) > 100 and answered > 0

        last = await head(admin)
        await until(lambda: all_workers_at(session, daemon, last, 2), 45, "workers caught up")
        for key, name in acknowledged.items():
            for _ in range(2):  # each a new connection, so both workers answer some
                status, body = await get_json(session, f"{daemon.base}/v1/lookup/{key}?tenant=demo")
                assert (status, body.get("name")) == (200, name), (key, status, body)
        async with session.get(daemon.base + "/metrics") as resp:
            samples = parse_metrics(await resp.text())
        assert value(samples, "cnamd_cache_feed_failures_total", reason="database") > 0
        assert value(samples, "cnamd_cache_feed_failures_total", reason="internal") == 0
        await admin.close()
    finally:
        output = daemon.stop()
    assert "Traceback" not in output, output[-4000:]


@pytest.mark.timeout(120)
async def test_a_replaced_worker_never_answers_older_than_the_last_acknowledged_write(
    db_url: str, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    daemon = Daemon(tmp_path, workers=2, database_url=db_url)
    try:
        await asyncio.to_thread(daemon.wait_ready, 60)
        conn = await asyncpg.connect(db_url)
        tid = await tenant_of(conn)
        key = "+4971000000"
        await conn.execute(INSERT, tid, key, "v0")
        acked: list[tuple[float, int]] = [(time.monotonic(), 0)]  # (when, version)
        stop = asyncio.Event()

        async def writer() -> None:
            version = 0
            while not stop.is_set():
                version += 1
                await conn.execute(
                    "UPDATE cnam_entries SET name = $1 WHERE key = $2", f"v{version}", key
                )
                acked.append((time.monotonic(), version))
                await asyncio.sleep(0.005)

        def floor(sent: float) -> int:
            """The newest version acknowledged a propagation allowance before ``sent``."""
            return max((v for at, v in acked if at <= sent - PROPAGATION_ALLOWANCE), default=0)

        stale: list[tuple[int, int]] = []
        answers = 0

        async def reader() -> None:
            nonlocal answers
            url = f"{daemon.base}/v1/lookup/{key}?tenant=demo"
            while not stop.is_set():
                sent = time.monotonic()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    status, body = await get_json(session, url)
                    if status == 200:
                        answers += 1
                        seen, oldest = int(body["name"][1:]), floor(sent)
                        if seen < oldest:
                            stale.append((seen, oldest))

        writing = asyncio.create_task(writer())
        readers = [asyncio.create_task(reader()) for _ in range(4)]
        # long enough for the snapshot's tail to fall behind the writes, then a crash
        await asyncio.sleep(3)
        victim = min(daemon.workers())
        os.kill(victim, signal.SIGKILL)
        await until(
            lambda: asyncio.to_thread(lambda: len(daemon.workers() - {victim}) == 2),
            30,
            "a replacement worker",
        )
        await asyncio.sleep(4)  # the replacement serves alongside the survivor
        stop.set()
        await asyncio.gather(writing, *readers)
        assert answers > 50
        assert not stale, f"{len(stale)} answers older than an acknowledged write: {stale[:5]}"
        await conn.close()
    finally:
        daemon.stop()


def postgres_family(data_dir: Path) -> list[psutil.Process]:
    """The postmaster of ``data_dir`` and every process it started."""
    with (data_dir / "postmaster.pid").open() as pidfile:
        postmaster = psutil.Process(int(pidfile.readline()))
    return [postmaster, *postmaster.children(recursive=True)]


@pytest.mark.timeout(120)
async def test_a_hung_database_turns_readyz_stale_within_seconds(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    daemon = Daemon(tmp_path, workers=1, args=("--set", "cache.stale_ready_status=503"))
    frozen: list[psutil.Process] = []
    try:
        await asyncio.to_thread(daemon.wait_ready, 60)
        frozen = postgres_family(daemon.data_dir)
        for proc in frozen:
            proc.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()

        async def stale() -> bool:
            status, body = await get_json(session, daemon.base + "/readyz")
            return status == 503 and body["database"] == "down" and body["stale"] is True

        # database.ping_interval (1 s) + database.ping_timeout (2 s), and a margin
        await until(stale, 8, "/readyz stale with the database hung")
        assert time.monotonic() - stopped < 8
        # lookups still answer from memory meanwhile
        status, body = await get_json(session, daemon.base + "/v1/lookup/+492216698712?tenant=demo")
        assert (status, body["name"]) == (200, "John Doe")
        async with session.get(daemon.base + "/metrics") as resp:
            assert value(parse_metrics(await resp.text()), "cnamd_db_up") == 0
    finally:
        for proc in frozen:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGCONT)
        if frozen:
            with contextlib.suppress(AssertionError):
                await until(
                    lambda: asyncio.to_thread(lambda: daemon.readyz()[0] == 200), 20, "ready again"
                )
        daemon.stop()


@pytest.mark.timeout(120)
async def test_a_worker_that_falls_behind_is_reported_and_restarted(
    db_url: str, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    daemon = Daemon(
        tmp_path, workers=2, database_url=db_url, args=("--set", "cache.max_worker_lag=1.5")
    )
    try:
        await asyncio.to_thread(daemon.wait_ready, 60)
        conn = await asyncpg.connect(db_url)
        tid = await tenant_of(conn)
        victim = min(daemon.workers())
        os.kill(victim, signal.SIGSTOP)  # frozen: it serves nothing and applies nothing
        reasons: list[str] = []

        async def reported() -> bool:
            await conn.execute(
                INSERT, tid, f"+49720{int(time.monotonic() * 1000) % 10**6:06d}", "x"
            )
            status, body = await get_json(session, daemon.base + "/readyz")
            reasons[:] = body["reasons"]
            return status == 503 and any("behind the host's cache" in r for r in body["reasons"])

        # the other worker answers /readyz, and says its sibling is behind
        await until(reported, 15, "/readyz reports the frozen worker")
        await asyncio.to_thread(daemon.replaced, victim, 2, 20)
        last = await head(conn)
        await until(lambda: all_workers_at(session, daemon, last, 2), 30, "ready again")
        async with session.get(daemon.base + "/metrics") as resp:
            samples = parse_metrics(await resp.text())
        assert (
            sum(
                v for (name, _labels), v in samples.items() if name == "cnamd_worker_restarts_total"
            )
            >= 1
        )
        await conn.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGCONT)
        output = daemon.stop()
    assert "worker behind the host's cache, restarting it" in output


def mapped_inodes(pid: int, path: Path) -> set[int]:
    """Inodes of ``path`` (any generation of it) that process ``pid`` has mapped."""
    found = set()
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5] == str(path):
                found.add(int(fields[4]))
    return found


@pytest.mark.timeout(150)
async def test_one_loader_per_host_and_every_worker_maps_its_file(
    db_url: str, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    snapshot = tmp_path / "host.snapshot"
    daemon = Daemon(
        tmp_path,
        workers=2,
        database_url=db_url,
        snapshot=snapshot,
        args=("--set", "cache.compact_threshold=100", "--set", "cache.reconcile_interval=1"),
    )
    try:
        await asyncio.to_thread(daemon.wait_ready, 60)
        conn = await asyncpg.connect(db_url)
        tid = await tenant_of(conn)

        def loads(cause: str) -> int:
            return sum(
                'event="cache loaded"' in line and f"cause={cause}" in line
                for line in list(daemon.lines)
            )

        async def same_file_everywhere() -> bool:
            inode = snapshot.stat().st_ino
            workers = await asyncio.to_thread(daemon.workers)
            return len(workers) == 2 and all(
                mapped_inodes(pid, snapshot) == {inode} for pid in workers
            )

        async def reloaded(cause: str, before: int) -> None:
            await until(lambda: asyncio.to_thread(lambda: loads(cause) > before), 30, cause)
            last = await head(conn)
            await until(lambda: all_workers_at(session, daemon, last, 2), 30, f"{cause}: caught up")
            await until(same_file_everywhere, 10, f"{cause}: one file mapped by both workers")
            assert loads(cause) == before + 1, f"{cause}: {loads(cause) - before} full loads"

        # compaction: more live changes than the threshold, each its own transaction
        before = loads("compact")
        for i in range(120):
            await conn.execute(INSERT, tid, f"+4973{i:05d}", f"Compact {i}")
        await reloaded("compact", before)

        # a gap in the change log
        before = loads("gap")
        await conn.execute(
            "INSERT INTO change_log (id, kind) VALUES ($1, 'contexts')", await head(conn) + 5
        )
        await reloaded("gap", before)

        # a digest difference: a write the change log never heard of
        before = loads("reconcile")
        await conn.execute("SET session_replication_role = replica")
        await conn.execute(INSERT, tid, "+4974000001", "Behind the log")
        await conn.execute("SET session_replication_role = DEFAULT")
        await reloaded("reconcile", before)
        status, body = await get_json(session, f"{daemon.base}/v1/lookup/+4974000001?tenant=demo")
        assert (status, body["name"]) == (200, "Behind the log")
        # the workers never loaded: only the supervisor's feed writes "cache loaded"
        assert sum("cache mapped from the host's snapshot" in line for line in daemon.lines) >= 2
        await conn.close()
    finally:
        daemon.stop()
