"""The management API's database connections: an unreachable store is a 503, not a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import asyncpg
from aiohttp import web

from cnamd.errors import Conflict, StoreUnavailable
from cnamd.http.keys import POOL, SETTINGS
from cnamd.store.pool import describe_failure

_UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
)


@asynccontextmanager
async def connection(request: web.Request) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection for one request.

    A database that is down or drops the connection mid-request becomes
    StoreUnavailable (503); a constraint the store's own checks missed
    becomes Conflict (409) rather than an internal error.
    """
    pool = request.app.get(POOL)
    if pool is None:
        raise StoreUnavailable("this daemon has no database connection", field="database")
    timeout = request.app[SETTINGS].database.connect_timeout
    try:
        async with pool.acquire(timeout=timeout) as proxy:
            # the pool hands out a proxy that forwards every Connection method
            yield cast(asyncpg.Connection, proxy)
    except _UNREACHABLE as exc:
        raise StoreUnavailable(
            f"the database is unreachable: {describe_failure(exc)}", field="database"
        ) from exc
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise Conflict(f"the database refused the write: {exc.detail or exc}") from exc
