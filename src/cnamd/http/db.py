"""The management API's database connections: a lost or hung store is a 503, never a 500."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Concatenate, ParamSpec, TypeVar

import asyncpg
from aiohttp import web

from cnamd.errors import Conflict, ReadOnlyStore, StoreUnavailable
from cnamd.http.keys import POOL, SETTINGS, main_app
from cnamd.store.pool import CONNECTION_LOST, checked_out, describe_failure

P = ParamSpec("P")
T = TypeVar("T")


class ConnectionLost(StoreUnavailable):
    """The connection went away under a request's work (503; safe work is retried once)."""


#: why this request's database work failed fast: set when a release found the database
#: hung after its work had completed, so the request's next step need not wait again
_HUNG = web.RequestKey("database_hung", str)


@asynccontextmanager
async def connection(request: web.Request) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection for one request, just checked to answer (store/pool.py).

    A database that is down, drops the connection or does not answer within
    ``database.statement_timeout`` becomes StoreUnavailable (503, field
    ``database``): each step waits at most that long, and once the database
    has not answered, the request's next step fails at once. A transaction rolled
    back for a deadlock or a serialization failure is a 503 too (the client sends
    it again). A write refused by a hot standby (SQLSTATE 25006) is ReadOnlyStore
    (503 saying writes go to the primary). A constraint the store's own checks
    missed becomes Conflict (409) rather than an internal error.
    """
    pool = main_app(request).get(POOL)
    if pool is None:
        raise StoreUnavailable("this daemon has no database connection", field="database")
    if _HUNG in request:
        raise StoreUnavailable(request[_HUNG], field="database")
    limit = main_app(request)[SETTINGS].database.statement_timeout
    done = False
    try:
        async with checked_out(pool, timeout=limit) as conn:
            yield conn
            done = True
    except StoreUnavailable as exc:
        if not done:
            raise
        request[_HUNG] = exc.reason  # only the release failed: the work stands
    except TimeoutError as exc:
        raise StoreUnavailable(
            f"the database did not answer within {limit:g} s (database.statement_timeout)",
            field="database",
        ) from exc
    except asyncpg.QueryCanceledError as exc:
        raise StoreUnavailable(
            f"the database cancelled the statement: {describe_failure(exc)}", field="database"
        ) from exc
    except CONNECTION_LOST as exc:
        raise ConnectionLost(
            f"the database connection was lost: {describe_failure(exc)}", field="database"
        ) from exc
    except asyncpg.TransactionRollbackError as exc:
        # a deadlock or serialization failure rolled the whole transaction back: nothing
        # was written, and the same request sent again will most likely go through
        raise StoreUnavailable(
            f"the write met a concurrent one and was rolled back; send it again"
            f" ({describe_failure(exc)})",
            field="database",
        ) from exc
    except asyncpg.ReadOnlySQLTransactionError as exc:
        raise ReadOnlyStore(
            "this daemon's database is a read-only hot standby; writes go to the primary"
            " (database.primary_url)",
            field="database.primary_url",
        ) from exc
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise Conflict(f"the database refused the write: {exc.detail or exc}") from exc


async def idempotent(
    request: web.Request,
    work: Callable[Concatenate[asyncpg.Connection, P], Awaitable[T]],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """``work(conn, *args, **kwargs)``, run once more on a fresh connection if the
    first is lost under it: only for work that is safe to repeat (reads, idempotent
    touches). A hung database is not retried; it would only wait twice."""
    with contextlib.suppress(ConnectionLost):
        async with connection(request) as conn:
            return await work(conn, *args, **kwargs)
    async with connection(request) as conn:
        return await work(conn, *args, **kwargs)
