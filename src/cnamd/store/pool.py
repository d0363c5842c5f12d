"""The asyncpg pool: one place that knows how to reach PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator

import asyncpg

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


async def create_pool(url: str, *, min_size: int, max_size: int, timeout: float) -> Pool:
    """A pool whose first connection has been proven, or StoreUnavailable."""
    try:
        pool = await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, timeout=timeout, command_timeout=60
        )
    except _CONNECT_ERRORS as exc:
        raise StoreUnavailable(
            f"cannot connect: {describe_failure(exc)}", field="database.url"
        ) from exc
    assert pool is not None
    return pool


def backoff_delays(cap: float, first: float = 0.25) -> AsyncIterator[float]:
    """Capped exponential backoff with jitter, forever."""

    async def delays() -> AsyncIterator[float]:
        delay = first
        while True:
            yield delay * random.uniform(0.8, 1.2)
            delay = min(cap, delay * 2)

    return delays()


async def wait_until_reachable(url: str, *, timeout: float, cap: float) -> None:
    """Retry with capped backoff until a connection succeeds, logging each failure once."""
    delays = backoff_delays(cap)
    while True:
        try:
            conn = await connect_once(url, timeout)
        except StoreUnavailable as exc:
            delay = await anext(delays)
            log.warning(
                "database unreachable, retrying",
                extra={"reason": exc.reason, "retry_in": round(delay, 2)},
            )
            await asyncio.sleep(delay)
            continue
        await conn.close()
        return
