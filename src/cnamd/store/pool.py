"""The asyncpg pool: one place that knows how to reach PostgreSQL and when a connection is lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import asyncpg
from asyncpg import exceptions as pgerr
from asyncpg.pool import PoolConnectionProxy

from cnamd import metrics
from cnamd.errors import StoreUnavailable

log = logging.getLogger(__name__)

Pool = asyncpg.Pool

#: ``application_name`` of the pool's connections, so pg_stat_activity tells them apart
APPLICATION_NAME = "cnamd-pool"

#: The client's own deadline beyond the server's statement_timeout: a slow statement
#: is cancelled by the server first (57014, the connection stays usable); only a
#: database that does not answer at all hits asyncpg's command_timeout.
CLIENT_GRACE = 0.25

#: Every exception that means "this connection is gone (or hung), use another one".
#: TimeoutError is an OSError: a statement past asyncpg's ``command_timeout`` counts
#: as lost, since its connection may still be busy with it. InternalClientError is
#: here because asyncpg raises it for a connection whose server went away while it
#: was idle (see ``checked_out``); InterfaceError for a connection already closed.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,  # class 08, ConnectionDoesNotExistError among them
    pgerr.AdminShutdownError,  # 57P01: pg_terminate_backend, a fast shutdown
    pgerr.CrashShutdownError,  # 57P02
    pgerr.CannotConnectNowError,  # 57P03: starting up or shutting down
    pgerr.DatabaseDroppedError,  # 57P04
    pgerr.IdleSessionTimeoutError,  # 57P05
    pgerr.IdleInTransactionSessionTimeoutError,  # 25P03
    pgerr.TooManyConnectionsError,  # 53300: no connection to be had now
)

#: What a background loop (order worker, change-log pruner) waits out and tries
#: again at its next round: a lost or hung database, or a statement it refused.
TRANSIENT: tuple[type[BaseException], ...] = (
    *CONNECTION_LOST,
    StoreUnavailable,
    asyncpg.PostgresError,
)

_CONNECT_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
_ACQUIRE_ERRORS: tuple[type[BaseException], ...] = (*_CONNECT_ERRORS, *CONNECTION_LOST)


def describe_failure(exc: BaseException) -> str:
    """A one-line reason for a failed connection, without a traceback."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {text}"


async def connect_once(url: str, timeout: float) -> asyncpg.Connection:
    """One connection, or StoreUnavailable naming why."""
    try:
        conn: asyncpg.Connection = await asyncpg.connect(url, timeout=timeout)
    except _CONNECT_ERRORS as exc:
        raise StoreUnavailable(
            f"cannot connect: {describe_failure(exc)}", field="database.url"
        ) from exc
    return conn


async def open_pool(
    url: str, *, min_size: int, max_size: int, timeout: float, statement_timeout: float = 5.0
) -> Pool:
    """The pool for API requests; never fails for an unreachable database.

    With the database away, the pool starts empty (min_size 0) and connects on
    first use, so requests fail one by one with StoreUnavailable instead of the
    daemon failing to start; lookups never need it. Every connection carries
    ``statement_timeout`` (seconds, ``database.statement_timeout``) on the
    server, and asyncpg gives up CLIENT_GRACE later, so a hung database fails
    a statement as fast as a slow one.
    """
    server_settings = {
        "application_name": APPLICATION_NAME,
        "statement_timeout": str(round(statement_timeout * 1000)),
    }
    command_timeout = statement_timeout + CLIENT_GRACE
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            command_timeout=command_timeout,
            server_settings=server_settings,
        )
    except _CONNECT_ERRORS as exc:
        log.warning("database pool starts empty", extra={"reason": describe_failure(exc)})
        pool = await asyncpg.create_pool(
            url,
            min_size=0,
            max_size=max_size,
            timeout=timeout,
            command_timeout=command_timeout,
            server_settings=server_settings,
        )
    assert pool is not None
    return pool


async def ping(conn: asyncpg.Connection, timeout: float) -> None:
    """StoreUnavailable unless ``SELECT 1`` answers within ``timeout`` seconds.

    A connection that fails is terminated at once (a hung server cannot hold up
    a graceful close), so nobody uses it again. Ping between operations only:
    asyncpg runs one at a time per connection, and a ping beside another fails
    (InterfaceError) and so terminates the connection.
    """
    try:
        await conn.execute("SELECT 1", timeout=timeout)
    except CONNECTION_LOST as exc:
        discard(conn)
        if isinstance(exc, TimeoutError):
            reason = f"the database did not answer a ping within {timeout:g} s"
        else:
            reason = f"the database connection is lost: {describe_failure(exc)}"
        raise StoreUnavailable(reason, field="database") from exc


@asynccontextmanager
async def checked_out(pool: Pool, *, timeout: float) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection that has just answered a ping; never a broken one.

    Why the ping: when PostgreSQL ends an idle connection (pg_terminate_backend,
    idle_session_timeout, a shutdown) it sends a FATAL ErrorResponse and closes
    the socket. asyncpg 0.32 reads that message in the IDLE state as a protocol
    error of its own and waits for a ReadyForQuery that never comes
    (PROTOCOL_ERROR_CONSUME); until the EOF is read a loop iteration or two
    later the connection is not ``is_closed()``, so the pool hands it out and
    the first statement fails with InternalClientError "cannot switch to state
    N; another operation (2) is in progress" (asyncpg issues #784, #1069; the
    pool's reset on release fails the same way). A SELECT 1 on such a
    connection fails before sending anything and asyncpg aborts it, so the
    ping costs a broken connection nothing and a sound one a round trip.

    ``timeout`` bounds the hand-out (waiting for the pool, connecting, pinging
    up to ``max_size + 1`` connections) and, separately, the release. A
    connection whose work failed as CONNECTION_LOST is terminated, not pooled;
    a release that finds the connection lost is no error of the work done on
    it. StoreUnavailable (field ``database``) when no connection answers in
    time, or when the release times out: the work is done, but the database
    has stopped answering. Whatever the body raises passes through.
    """
    proxy = await _first_answering(pool, timeout)
    lost = False
    try:
        # the proxy forwards every Connection method
        yield cast(asyncpg.Connection, proxy)
    except CONNECTION_LOST:
        lost = True
        raise
    finally:
        if lost:
            discard(proxy)
        else:
            await _release(pool, proxy, timeout)


def discard(conn: asyncpg.Connection | PoolConnectionProxy) -> None:
    """Terminate ``conn`` at once (a pooled one's slot goes back to its pool); idempotent."""
    # a pooled connection whose socket closed is already detached from its proxy
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


async def _release(pool: Pool, proxy: PoolConnectionProxy, timeout: float) -> None:
    """Back to the pool (asyncpg resets it there, a round trip); terminated when that fails."""
    try:
        await pool.release(proxy, timeout=timeout)
    except TimeoutError as exc:
        raise StoreUnavailable(
            f"the database did not answer within {timeout:g} s", field="database"
        ) from exc
    except CONNECTION_LOST as exc:
        # the pool has terminated it; whatever ran on it had completed
        log.info("a connection was lost on release", extra={"reason": describe_failure(exc)})


async def _first_answering(pool: Pool, timeout: float) -> PoolConnectionProxy:
    clock = asyncio.get_running_loop().time
    deadline = clock() + timeout
    lost: StoreUnavailable | None = None
    for _ in range(pool.get_max_size() + 1):
        try:
            proxy = await pool.acquire(timeout=max(0.0, deadline - clock()))
        except _ACQUIRE_ERRORS as exc:
            raise StoreUnavailable(
                f"the database is unreachable: {describe_failure(exc)}", field="database"
            ) from exc
        try:
            await ping(cast(asyncpg.Connection, proxy), max(0.001, deadline - clock()))
        except StoreUnavailable as exc:
            if isinstance(exc.__cause__, TimeoutError):
                raise  # hung, not lost: another connection would not answer either
            lost = exc
            continue
        except BaseException:
            # cancelled mid-ping (a client gone, a shutdown): the proxy was never handed
            # out, so nobody would release it and its slot would be lost to the pool for
            # good; terminated, as its ping's answer may still be on the way
            discard(proxy)
            raise
        return proxy
    assert lost is not None
    raise lost


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
