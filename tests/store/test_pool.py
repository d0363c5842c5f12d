"""The pool against a real PostgreSQL whose backends end or hang under it.

A backend is ended with SIGTERM, which is what pg_terminate_backend sends;
sending it from here, and waiting (blocking the event loop on purpose) until
the backend has exited, leaves its FATAL message and the EOF unread in the
client's socket, so the test then lets exactly ``spins`` loop iterations pass:
after two, asyncpg has read the message but not the EOF (asyncpg #784, #1069).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import asyncpg
import psutil
import pytest

from cnamd.errors import StoreUnavailable
from cnamd.store.pool import APPLICATION_NAME, Pool, checked_out, open_pool, ping

SPINS = range(4)  # loop iterations between a backend's exit and the next use
EXIT_SECONDS = 10.0


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[Pool]:
    opened = await open_pool(db_url, min_size=4, max_size=4, timeout=5, statement_timeout=5)
    yield opened
    await asyncio.wait_for(opened.close(), 20)


def _wait_exited(pid: int) -> None:
    """Block until backend ``pid`` is gone; the loop must not read its last words yet."""
    deadline = time.monotonic() + EXIT_SECONDS
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.001)
    raise AssertionError(f"backend {pid} still running {EXIT_SECONDS:g} s after SIGTERM")


def _end_backends(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    for pid in pids:
        _wait_exited(pid)


async def _spin(times: int) -> None:
    for _ in range(times):
        await asyncio.sleep(0)


async def _pool_pids(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = $1",
        APPLICATION_NAME,
    )
    return [row["pid"] for row in rows]


async def _select_one(pool: Pool) -> int:
    async with checked_out(pool, timeout=5) as conn:
        value: int = await conn.fetchval("SELECT 1")
    return value


@pytest.mark.parametrize("spins", SPINS)
async def test_checked_out_never_hands_out_a_connection_whose_backend_was_terminated(
    pool: Pool, conn: asyncpg.Connection, spins: int
) -> None:
    for _ in range(3):
        pids = await _pool_pids(conn)
        assert pids
        _end_backends(pids)
        await _spin(spins)
        # more users at once than the pool has connections, every one a broken one
        assert await asyncio.gather(*(_select_one(pool) for _ in range(6))) == [1] * 6


@pytest.mark.parametrize("spins", SPINS)
async def test_a_connection_lost_while_held_is_no_error_on_release(pool: Pool, spins: int) -> None:
    async with checked_out(pool, timeout=5) as held:
        assert await held.fetchval("SELECT 1") == 1
        _end_backends([held.get_server_pid()])
        await _spin(spins)
    assert await _select_one(pool) == 1


async def test_a_statement_on_a_lost_connection_terminates_it_instead_of_pooling_it(
    pool: Pool,
) -> None:
    with pytest.raises(asyncpg.InternalClientError):
        async with checked_out(pool, timeout=5) as held:
            _end_backends([held.get_server_pid()])
            await _spin(2)
            await held.fetchval("SELECT 1")
    assert await asyncio.gather(*(_select_one(pool) for _ in range(6))) == [1] * 6


async def test_ping_of_a_terminated_connection_is_store_unavailable(
    conn: asyncpg.Connection,
) -> None:
    _end_backends([conn.get_server_pid()])
    await _spin(2)
    with pytest.raises(StoreUnavailable) as info:
        await ping(conn, 2.0)
    assert info.value.field == "database" and "lost" in info.value.reason
    assert conn.is_closed()


async def test_ping_of_a_hung_backend_gives_up_after_its_timeout_and_terminates(
    conn: asyncpg.Connection,
) -> None:
    pid = conn.get_server_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        async with asyncio.timeout(5):  # only a bound; the ping's own timeout is 0.3 s
            with pytest.raises(StoreUnavailable) as info:
                await ping(conn, 0.3)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert info.value.field == "database" and "within 0.3 s" in info.value.reason
    assert conn.is_closed()


async def test_ping_of_a_sound_connection_passes(conn: asyncpg.Connection) -> None:
    await ping(conn, 2.0)
    assert await conn.fetchval("SELECT 1") == 1


async def test_the_server_cancels_a_statement_past_statement_timeout(db_url: str) -> None:
    short = await open_pool(db_url, min_size=1, max_size=1, timeout=5, statement_timeout=0.2)
    try:
        async with checked_out(short, timeout=5) as conn:
            assert await conn.fetchval("SHOW statement_timeout") == "200ms"
            with pytest.raises(asyncpg.QueryCanceledError):
                await conn.execute("SELECT pg_sleep(2)")
            # the server's cancel leaves the connection usable
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await asyncio.wait_for(short.close(), 20)


async def test_a_release_the_database_does_not_answer_is_store_unavailable(pool: Pool) -> None:
    stopped = 0
    try:
        with pytest.raises(StoreUnavailable) as info:
            async with checked_out(pool, timeout=0.5) as held:
                assert await held.fetchval("SELECT 1") == 1
                stopped = held.get_server_pid()
                os.kill(stopped, signal.SIGSTOP)
    finally:
        if stopped:
            os.kill(stopped, signal.SIGCONT)
    assert info.value.field == "database" and "within 0.5 s" in info.value.reason
    # the pool terminated that connection and hands out sound ones
    assert await asyncio.gather(*(_select_one(pool) for _ in range(6))) == [1] * 6


async def test_a_request_cancelled_at_any_point_of_its_hand_out_loses_no_connection(
    pool: Pool,
) -> None:
    """A client that goes away cancels its handler (aiohttp), possibly while the
    connection it was being handed is answering its ping: the pool must get every
    slot back. Cancelled after 0..40 loop iterations, four at a time, so each step of
    the hand-out (acquire, the ping's round trip, the body, the release) is hit."""

    async def request() -> None:
        async with checked_out(pool, timeout=5) as conn:
            await conn.execute("SELECT 1")

    for spins in range(40):
        tasks = [asyncio.create_task(request()) for _ in range(4)]
        await _spin(spins)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for _ in range(200):  # terminated connections hand their slots back as they close
        if pool.get_idle_size() == pool.get_size():
            break
        await asyncio.sleep(0.01)
    held = [await asyncio.wait_for(pool.acquire(), 5) for _ in range(pool.get_max_size())]
    for conn in held:
        await pool.release(conn)
