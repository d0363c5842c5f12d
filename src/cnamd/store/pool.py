"""The asyncpg pool: one place that knows how to reach PostgreSQL."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator

import asyncpg

from cnamd import metrics
from cnamd.errors import StoreUnavailable

log = logging.getLogger(__name__)

Pool = asyncpg.Pool


def describe_failure(exc: BaseException) -> str:
    """A one-line reason for a failed connection, without a traceback."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {text}"


_CONNECT_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


async def connect_once(url: str, timeout: float) -> asyncpg.Connection:
    """One connection, or StoreUnavailable naming why."""
    try:
        conn: asyncpg.Connection = await asyncpg.connect(url, timeout=timeout)
    except _CONNECT_ERRORS as exc:
        raise StoreUnavailable(
            f"cannot connect: {describe_failure(exc)}", field="database.url"
        ) from exc
    return conn


async def open_pool(url: str, *, min_size: int, max_size: int, timeout: float) -> Pool:
    """The pool for API requests; never fails for an unreachable database.

    With the database away, the pool starts empty (min_size 0) and connects on
    first use, so requests fail one by one with StoreUnavailable instead of the
    daemon failing to start; lookups never need it.
    """
    try:
        pool = await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, timeout=timeout, command_timeout=60
        )
    except _CONNECT_ERRORS as exc:
        log.warning("database pool starts empty", extra={"reason": describe_failure(exc)})
        pool = await asyncpg.create_pool(
            url, min_size=0, max_size=max_size, timeout=timeout, command_timeout=60
        )
    assert pool is not None
    return pool


def publish_pool_metrics(pool: Pool) -> None:
    """cnamd_db_pool_connections{state}: open connections, busy and idle."""
    size, idle = pool.get_size(), pool.get_idle_size()
    metrics.DB_POOL_CONNECTIONS.labels("idle").set(idle)
    metrics.DB_POOL_CONNECTIONS.labels("busy").set(size - idle)


def backoff_delays(cap: float, first: float = 0.25) -> AsyncIterator[float]:
    """Capped exponential backoff with jitter, forever."""

    async def delays() -> AsyncIterator[float]:
        delay = first
        while True:
            yield delay * random.uniform(0.8, 1.2)
            delay = min(cap, delay * 2)

    return delays()
