"""Keeps the Directory equal to PostgreSQL: full loads off to the side, then the change log.

Two roles. The *loader* (the supervisor, or a daemon running alone) builds full
loads in a child process (``replica/loader.py``) and writes the snapshot; every
few seconds it also writes the snapshot's tail (its overlay since that base), so
a process that maps the snapshot starts seconds behind, not a full load behind.
A *follower* (a worker of the supervisor) never loads: it maps the host's
snapshot (base and tail), and maps it again whenever the loader replaced the base.

Both then follow the change log: LISTEN, and on every notification or poll
tick (which also pings the connection, bounded, so a hung server is noticed
within seconds) apply the changes after the last applied one. A hot standby
refuses LISTEN: there the feed reads the log every ``database.poll_interval``
(the log is gapless and in commit order, so polling misses nothing), and once a
``database.ping_interval`` asks how far the standby's replay is behind its
primary (``replay_lag``; past ``database.max_replay_lag`` the daemon is stale).
A standby promoted under the feed is followed again as a primary, with LISTEN.

Changes come whole transactions at a time and are applied without yielding, so
a lookup sees the state before a transaction or after it, never a mix; a
transaction too large to apply at once becomes a reload. Ids are gapless, so a jump means
the log was pruned under us: reload. A periodic reconciliation compares a
digest (count and XOR of entry hashes) with the one kept in step with each
applied change, and reloads on a difference.

A reload is built off to the side and caught up before it is swapped in, so
what a lookup sees never goes back in time. Any failure of the follower is
logged, counted and retried on a new connection; the task cannot end silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from cnamd import metrics
from cnamd.cache.contexts import Contexts
from cnamd.cache.directory import Directory
from cnamd.cache.held_file import HeldFile, held_path
from cnamd.cache.held_file import available as held_file_available
from cnamd.cache.trie import NameCache
from cnamd.cache.upstream import UpstreamAnswers
from cnamd.errors import SnapshotError, StoreUnavailable
from cnamd.model import Digest
from cnamd.replica.loader import load_in_child, open_snapshot, save_tail
from cnamd.settings import CacheSettings, DatabaseSettings, LogSettings
from cnamd.store import entries, upstream
from cnamd.store.contexts import load_context_rows
from cnamd.store.entries import Change, entry_hash
from cnamd.store.pool import (
    CONNECTION_LOST,
    backoff_delays,
    connect_once,
    describe_failure,
    discard,
    ping,
)
from cnamd.store.replication import Replication, replication
from cnamd.upstream import tenants as tenant_policies

log = logging.getLogger(__name__)

CHANNEL = "cnamd_changes"
# the database lost, hung or refusing: retried quietly (store/pool.py says which are);
# asyncpg's InternalClientError after a terminated backend is among them (asyncpg#784)
_DB_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_LOST,
    asyncpg.PostgresError,
    StoreUnavailable,
)
_REMAP_RETRY = 0.5  # seconds between a follower's looks for a snapshot past its gap
#: full loads in a row the loader makes when big transactions overtake each, before it
#: backs off as from a failure (a run of imports, each committed during the last's load)
_LOADS_OVERTAKEN = 3
_DIGEST_BOUNDS = 12  # a digest scan may take this many query bounds (60 s by default)


class _Promoted(Exception):  # a signal inside the feed: reconnect at once, as a primary
    """The hot standby the feed polls was promoted: follow it with LISTEN from now on."""


class _Reload(Exception):  # a signal inside the feed, never seen outside
    """The change log cannot bring the cache forward (gap, oversized transaction, digest)."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


@dataclass(slots=True)
class _State:
    """A cache with the change id and digest it reflects; built, caught up, then installed."""

    cache: NameCache
    contexts: Contexts
    count: int
    hash_xor: int
    last_id: int
    base_id: str | None
    base_inode: int = 0  # the snapshot file's inode this cache maps (0: none)
    #: the upstream answers at this state: the host's held-answers file and the changes since
    upstream: UpstreamAnswers = field(default_factory=UpstreamAnswers)
    #: the change id ``upstream`` reflects (behind ``last_id`` when a tail brought the names
    #: further than the file; None: no file, every answer is read from PostgreSQL)
    upstream_id: int | None = None

    def digest(self) -> Digest:
        return Digest(self.count, self.hash_xor, self.last_id)


class ChangeFeed:
    """Loads the Directory and keeps it fresh; the only writer of the Directory."""

    def __init__(
        self,
        url: str,
        directory: Directory,
        cache_settings: CacheSettings,
        db_settings: DatabaseSettings,
        allowed_networks: Iterable[str],
        *,
        poll_interval: float = 1.0,
        log_settings: LogSettings | None = None,
        loader: bool = True,
        snapshot_path: Path | None = None,
        on_failure: Callable[[], None] | None = None,
        upstream_answers: UpstreamAnswers | None = None,
    ) -> None:
        self.url = url
        self.directory = directory
        self.settings = cache_settings
        self.db = db_settings
        self.allowed = tuple(allowed_networks)
        self.poll_interval = min(poll_interval, db_settings.ping_interval)
        self.loader = loader
        configured = cache_settings.snapshot_path
        self.snapshot_path = snapshot_path or (Path(configured) if configured else None)
        self.log_settings = log_settings or LogSettings()
        self.on_failure = on_failure
        # the upstream scope: loaded whole on each (re)connect, then kept by the log
        self.upstream = upstream_answers if upstream_answers is not None else UpstreamAnswers()
        self.db_up = False
        self.failed = False
        self.mode: str | None = None  # "primary" or "standby" once connected
        self.replay_lag = 0.0  # seconds the standby's replay is behind (0 on a primary)
        self._in_step_at: float | None = None  # monotonic time a standby was last caught up
        self._next_status = 0.0
        self.caught_up = asyncio.Event()  # set once the cache matched the database
        self._state: _State | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_reconcile = 0.0
        self._reconcile_asked = False  # reconcile_soon(): at the next wake-up
        self._next_tail = 0.0
        self._tail_id = -1
        self._suspect = False  # an unexpected failure may have left a batch half applied
        self._held_rewrite_tried = False  # _needs_compaction(): once per process
        # reached(): (change id, future) of callers waiting until it is served
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        # unmaps replaced caches in turn, off the loop (_unmap_later)
        self._unmapping: ThreadPoolExecutor | None = None

    # -- start-up ----------------------------------------------------------

    async def start(self, *, prefer_snapshot: bool = False) -> None:
        """First load: from PostgreSQL, else from the snapshot (stale), else per policy.

        ``prefer_snapshot``: map a usable snapshot first and catch up from its
        change id, as stale until the digest confirms it. A restart at 10M names
        then serves in well under a second instead of after a two-minute load,
        and workers share the mapped pages. A follower always starts this way
        (waiting in the background for the loader's first snapshot if none is there).
        Raises StoreUnavailable when the database is unreachable, no snapshot
        can be served and ``database.on_unreachable`` is ``exit``.
        """
        if (prefer_snapshot or not self.loader) and self._warm_start(None):
            self._spawn()
            return
        if not self.loader:
            self._spawn()
            return
        try:
            conn = await connect_once(self.url, self.db.connect_timeout)
        except StoreUnavailable as exc:
            if self._warm_start(exc.reason):
                self._spawn()
                return
            if self.db.on_unreachable == "exit":
                raise
            log.warning(
                "database unreachable and no snapshot: waiting for it", extra={"reason": exc.reason}
            )
            self._spawn()
            return
        started = time.monotonic()
        try:
            state = await self._full_load(cause="startup")
            await self._load_policies(conn)
            await self._catch_up(conn, state)
        finally:
            await conn.close()
        await self._swap_in(state, "startup", started)
        self._set_db_up(True)
        self.caught_up.set()
        self._spawn()

    def _warm_start(self, reason: str | None) -> bool:
        """Install the snapshot as stale until the database confirms it; True if installed.

        ``reason`` says why the database is not used (None: by choice, or a follower).
        """
        state = self._open_snapshot()
        if state is None:
            return False
        self._install(state, stale=True)
        fields = {"entries": len(state.cache), "change_id": state.last_id}
        if reason is None:
            log.info("cache mapped from snapshot", extra=fields)
        else:
            log.warning(
                "serving from snapshot while the database is unreachable",
                extra={"reason": reason, **fields},
            )
        return True

    def _open_snapshot(self) -> _State | None:
        """The snapshot (base and tail) as a state, or None when there is none usable."""
        path = self.snapshot_path
        if path is None or not path.exists():
            return None
        try:
            inode = path.stat().st_ino
            cache, info = open_snapshot(path)
        except (SnapshotError, OSError) as exc:
            reason = exc.reason if isinstance(exc, SnapshotError) else str(exc)
            log.error("snapshot refused", extra={"path": str(path), "reason": reason})
            return None
        # the last full load is the one that wrote this snapshot's base
        metrics.CACHE_LAST_FULL_LOAD.set(info.get("built_at") or path.stat().st_mtime)
        if "load_seconds" in info:
            metrics.CACHE_FULL_LOAD_SECONDS.set(info["load_seconds"])
        return self._state_of(cache, info, inode, _open_held(path, info))

    def _state_of(
        self, cache: NameCache, info: dict[str, Any], inode: int, held: HeldFile | None
    ) -> _State:
        state = _State(
            cache,
            Contexts.from_json(info["contexts"], self.allowed),
            info["count"],
            info["hash_xor"],
            info["last_change_id"],
            info.get("base_id"),
            inode,
        )
        if held is not None:
            state.upstream.use_file(held)
            state.upstream_id = held.last_change_id
        return state

    def _spawn(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="cnamd-change-feed")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The follower only ends when cancelled; anything else is a failure said aloud."""
        if task.cancelled():
            return
        exc = task.exception()
        self.failed = True
        metrics.CACHE_FEED_FAILURES.labels("ended").inc()
        log.critical(
            "change feed ended; the cache is no longer kept fresh",
            extra={"reason": describe_failure(exc) if exc else "returned"},
        )
        if self.on_failure is not None:
            self.on_failure()

    async def stop(self) -> None:
        """Cancel the follower and wait for it to end; a cancel of the caller is not swallowed."""
        task, self._task = self._task, None
        if task is not None:
            task.remove_done_callback(self._ended)
            task.cancel()
            await asyncio.wait({task})
        unmapping, self._unmapping = self._unmapping, None
        if unmapping is not None:
            unmapping.shutdown(wait=False)  # what it still holds is unmapped, then it ends

    async def reached(self, change_id: int) -> None:
        """Returns once this process serves change ``change_id`` or a later one: an
        import keeps its turn until then (store/imports.py)."""
        if self.last_change_id >= change_id:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((change_id, waiter))
        try:
            await waiter
        finally:
            with contextlib.suppress(ValueError):  # cancelled: no longer waited for
                self._waiters.remove((change_id, waiter))

    def _wake_waiters(self, served: int) -> None:
        if not self._waiters:
            return
        still = []
        for change_id, waiter in self._waiters:
            if change_id > served:
                still.append((change_id, waiter))
            elif not waiter.done():
                waiter.set_result(None)
        self._waiters = still

    # -- following ---------------------------------------------------------

    async def _follow(self) -> None:
        """Forever: connect, catch up, listen; on any failure log, count, back off, retry."""
        delays = backoff_delays(self.db.retry_max_seconds)
        while True:
            conn: Any = None
            try:
                conn = await connect_once(self.url, self.db.connect_timeout)
                self._observe(await replication(conn, self._query_bound))
                if self.mode == "primary":
                    async with asyncio.timeout(self._query_bound):  # LISTEN takes no timeout
                        await conn.add_listener(CHANNEL, self._notified)
                conn.add_termination_listener(lambda _c: self._wake.set())
                self._set_db_up(True)
                await self._resync(conn)
                delays = backoff_delays(self.db.retry_max_seconds)
                await self._listen(conn)  # returns only by raising
            except asyncio.CancelledError:
                raise
            except _Promoted:
                log.info("the standby was promoted: following it as the primary, with LISTEN")
                delay = 0.0
            except Exception as exc:  # the follower must never die
                self._set_db_up(False)
                known = isinstance(exc, _DB_ERRORS)
                metrics.CACHE_FEED_FAILURES.labels("database" if known else "internal").inc()
                delay = await anext(delays)
                fields = {
                    "reason": describe_failure(exc),
                    "retry_in": round(delay, 2),
                    "change_id": self.last_change_id,
                }
                if known:
                    log.warning("change feed lost the database, retrying", extra=fields)
                else:
                    self._suspect = True
                    log.error("change feed failed, reloading", exc_info=exc, extra=fields)
            finally:
                if conn is not None:
                    discard(conn)  # not held open through the backoff
            await asyncio.sleep(delay)

    async def _resync(self, conn: Any) -> None:
        """After (re)connecting: bring the cache forward; confirm a stale one by digest."""
        try:
            await self._load_policies(conn)
            if self._state is None:
                raise _Reload("startup")
            if self._suspect:
                raise _Reload("failure")
            await self._catch_up(conn, self._installed())
            if self.directory.stale:
                await self._reconcile(conn, cause="resync")
                self.directory.stale = False
                metrics.CACHE_STALE.set(0)
                log.info(
                    "snapshot confirmed by the database", extra={"change_id": self.last_change_id}
                )
        except _Reload as signal:
            await self._reload(conn, signal.cause)
        self.caught_up.set()

    async def _listen(self, conn: Any) -> None:
        self._next_reconcile = time.monotonic() + self.settings.reconcile_interval
        standby = self.mode == "standby"
        interval = self.db.poll_interval if standby else self.poll_interval
        while True:
            # not wait_for: on 3.11 it drops a cancel that meets a finished wait (stop() hung)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()
            if conn.is_closed():
                raise StoreUnavailable("listener connection closed")
            # bounded: a hung server (SIGSTOP, a dead link) must not look healthy
            if not standby:
                await ping(conn, self.db.ping_timeout)
            elif time.monotonic() >= self._next_status:
                # once a ping interval, not every poll: the change-log read is bounded too
                self._next_status = time.monotonic() + self.db.ping_interval
                self._observe(await replication(conn, self.db.ping_timeout))
                if self.mode == "primary":
                    raise _Promoted()
            try:
                await self._catch_up(conn, self._installed())
                if self._needs_compaction():
                    raise _Reload("compact")
                if self._reconcile_asked or time.monotonic() >= self._next_reconcile:
                    self._reconcile_asked = False
                    self._next_reconcile = time.monotonic() + self.settings.reconcile_interval
                    await self._reconcile(conn, cause="reconcile")
            except _Reload as signal:
                await self._reload(conn, signal.cause)
            await self._write_tail()

    @property
    def _query_bound(self) -> float:
        """Longest wait for one of the feed's queries before the database counts as hung."""
        return self.db.statement_timeout

    def _snapshot_inode(self) -> int | None:
        """The inode of the host's snapshot base now (None: there is none)."""
        path = self.snapshot_path
        try:
            return None if path is None else path.stat().st_ino
        except FileNotFoundError:
            return None

    def _needs_compaction(self) -> bool:
        """Loader: the overlay outgrew its bound. Follower: the loader replaced the base."""
        state = self._installed()
        if self.loader:
            bound = self.settings.compact_threshold
            held = self.upstream
            if state.cache.overlay_size > bound:
                return True
            if held.overlay_size <= bound:
                return False
            if held.mapped:
                return True
            # No file mapped though files are kept: one was refused at start (an older
            # format after an upgrade, a damaged file), so this process and every worker
            # hold each answer in memory; one full load writes the file they all map.
            # Tried once: a file that cannot be written must not loop reloads.
            if self.snapshot_path is None or not held_file_available() or self._held_rewrite_tried:
                return False
            self._held_rewrite_tried = True
            log.info("no held-answers file mapped: a full load writes one")
            return True
        path = self.snapshot_path
        try:
            return path is not None and path.stat().st_ino != state.base_inode
        except FileNotFoundError:
            return False

    def set_allowed(self, networks: Iterable[str]) -> None:
        """A new ``sip.allow`` (SIGHUP): the context maps are rebuilt with it, at once."""
        self.allowed = tuple(networks)
        state = self._state
        if state is not None:
            state.contexts = Contexts(state.contexts.rows, self.allowed)
            self.directory.contexts = state.contexts

    def reconcile_soon(self) -> None:
        """Compare digests at the next wake-up instead of waiting for the interval.

        A flag, not a due time: the follow loop sets its due time when it (re)starts,
        which must not drop a request made while it was connecting."""
        self._reconcile_asked = True
        self._wake.set()

    def _notified(self, *_args: object) -> None:
        self._wake.set()

    def _observe(self, status: Replication) -> None:
        """Take the server's replication state: the mode, and the replay lag.

        A standby caught up with a streaming primary is 0 s behind, however old its
        last replayed commit (an idle primary writes none). Otherwise the lag is the
        shorter of the time since the feed last saw it caught up and the age of the
        last replayed commit: after the primary stops it grows from 0, second by second.
        """
        now = time.monotonic()
        self.mode = "standby" if status.standby else "primary"
        if not status.standby or status.caught_up:
            self._in_step_at = now
            lag = 0.0
        else:
            since = now - self._in_step_at if self._in_step_at is not None else math.inf
            age = status.replay_age if status.replay_age is not None else math.inf
            lag = min(since, age)
            if math.isinf(lag):  # never caught up, nothing replayed: from the first look
                self._in_step_at = now
                lag = 0.0
        self.replay_lag = lag
        metrics.publish_database_mode(self.mode)
        metrics.DB_REPLAY_LAG.set(lag)

    @property
    def lagging(self) -> bool:
        """The standby is further behind its primary than ``database.max_replay_lag``."""
        return self.mode == "standby" and self.replay_lag > self.db.max_replay_lag

    def _set_db_up(self, up: bool) -> None:
        self.db_up = up
        metrics.DB_UP.set(1 if up else 0)

    def _installed(self) -> _State:
        state = self._state
        assert state is not None, "no cache installed"
        return state

    async def _catch_up(self, conn: Any, state: _State, upto: int | None = None) -> None:
        """Apply every change after ``state``'s (up to ``upto``), a whole transaction at a time.

        Raises _Reload on a gap or a transaction of more than ``compact_threshold``
        changes. Each batch is applied without yielding to the event loop, with
        the context maps it needs read beforehand, so lookups never see half of one.
        The upstream answers are first brought to the state's change id, if behind.
        """
        if state.upstream_id != state.last_id:
            await self._fill_upstream(conn, state)
        while True:
            # each round trip bounded: a server that hangs mid-catch-up must not look alive
            async with asyncio.timeout(self._query_bound):
                batch = await entries.transactions_after(
                    conn, state.last_id, upto, max_rows=self.settings.compact_threshold
                )
            changes = batch.changes
            if not changes:
                if batch.oversized:
                    log.info("a transaction too large to apply live: loading it whole")
                    raise _Reload("transaction")
                return
            if changes[0].id != state.last_id + 1:
                log.warning(
                    "gap in the change log, reloading",
                    extra={"expected": state.last_id + 1, "got": changes[0].id},
                )
                raise _Reload("gap")
            contexts = None
            policies = None
            if any(change.kind == "contexts" for change in changes):
                async with asyncio.timeout(self._query_bound):
                    rows = await load_context_rows(conn)
                    policies = await tenant_policies.load(conn)
                contexts = Contexts(rows, self.allowed)
            self._apply(state, changes)
            if contexts is not None:
                state.contexts = contexts
            if policies is not None:
                policies.install(self.upstream)
            if state is self._state:
                self._publish(state)

    def _apply(self, state: _State, batch: list[Change]) -> None:
        """Apply entry changes to ``state``'s cache and digest (no await: atomic to lookups)."""
        cache = state.cache
        held = state.upstream
        now = time.time()
        for change in batch:
            if change.kind == "entry" and change.scope is not None:
                if change.name is None:
                    cache.delete(change.scope, change.owner, change.key)
                else:
                    cache.put(change.scope, change.owner, change.key, change.name)
                if change.old_name is not None:
                    state.count -= 1
                    state.hash_xor ^= entry_hash(
                        change.scope, change.owner, change.key, change.old_name
                    )
                if change.name is not None:
                    state.count += 1
                    state.hash_xor ^= entry_hash(
                        change.scope, change.owner, change.key, change.name
                    )
            elif change.kind == "upstream":
                expires = change.expires_at
                held.put(
                    change.key,
                    change.name,
                    change.source,
                    None if expires is None else expires.timestamp(),
                )
            metrics.CACHE_PROPAGATION.observe(max(0.0, now - change.at.timestamp()))
        state.last_id = state.upstream_id = batch[-1].id

    async def _load_policies(self, conn: Any) -> None:
        """The tenants' upstream policies (off, own accounts), read now."""
        async with asyncio.timeout(self._query_bound):
            policies = await tenant_policies.load(conn)
        policies.install(self.upstream)

    async def _fill_upstream(self, conn: Any, state: _State) -> None:
        """Bring ``state``'s upstream answers to its change id: the upstream changes since
        its held-answers file was built (a names' tail got further), else every live
        answer read now (no file, or the log was pruned since): the catch-up that follows
        replays changes from the state's change id on, which ends at the same state."""
        held = state.upstream
        while state.upstream_id is not None and state.upstream_id < state.last_id:
            async with asyncio.timeout(self._query_bound):
                batch = await entries.transactions_after(
                    conn, state.upstream_id, state.last_id, max_rows=self.settings.compact_threshold
                )
            changes = batch.changes
            if not changes or changes[0].id != state.upstream_id + 1:
                state.upstream_id = None  # pruned, or a transaction too large: read them all
                break
            for change in changes:
                if change.kind == "upstream":
                    expires = change.expires_at
                    held.put(
                        change.key,
                        change.name,
                        change.source,
                        None if expires is None else expires.timestamp(),
                    )
            state.upstream_id = changes[-1].id
        if state.upstream_id is None or state.upstream_id > state.last_id:
            async with asyncio.timeout(_DIGEST_BOUNDS * self._query_bound):
                rows = await upstream.load_live(conn)
            held.replace(rows)
            # said aloud: each process then holds its own copy (no file, or one refused)
            log.info("upstream answers read whole from PostgreSQL", extra={"answers": len(rows)})
        state.upstream_id = state.last_id

    async def _reconcile(self, conn: Any, *, cause: str) -> bool:
        """Compare digests at one change id; _Reload on a difference. True if they agreed."""
        # a scan of every served name (~0.7 s per million): a longer bound than one fetch
        async with asyncio.timeout(_DIGEST_BOUNDS * self._query_bound):
            want = await entries.served_digest(conn)
        state = self._installed()
        await self._catch_up(conn, state, upto=want.last_change_id)
        have = state.digest()
        if (have.count, have.hash_xor) == (want.count, want.hash_xor):
            return True
        log.warning(
            "cache differs from the database, reloading",
            extra={
                "cause": cause,
                "cache_count": have.count,
                "db_count": want.count,
                "change_id": have.last_change_id,
            },
        )
        raise _Reload(cause)

    # -- reloads -------------------------------------------------------------

    async def _reload(self, conn: Any, cause: str) -> None:
        """A new cache, caught up off to the side, then swapped in at once.

        The loader builds a full load; a follower maps the loader's snapshot and
        waits (serving what it has) until one brings it past what stopped it.
        Lookups go on from the old cache meanwhile and never see it go back in time.
        """
        started = time.monotonic()
        await self._load_policies(conn)
        failed_base: int | None = None  # a follower's base that could not be caught up
        overtaken = 0  # the loader's full loads in a row that a big transaction overtook
        while True:
            if failed_base is not None and self._snapshot_inode() == failed_base:
                # Only the loader's next base gets past what stopped this one (its tail
                # cannot: the loader reloads for the same cause). Mapping it again and
                # reading the change log every retry cost each worker CPU it needed for
                # lookups while a big import was being loaded.
                await asyncio.sleep(_REMAP_RETRY)
                continue
            # mapped in a thread: the checksum pass over the file (zlib releases the GIL)
            # and the tail's changes would otherwise hold up lookups for as long
            state = (
                await self._full_load(cause=cause)
                if self.loader
                else await asyncio.to_thread(self._open_snapshot)
            )
            if state is not None:
                try:
                    # caught up to the database's head before it is seen: never back in time
                    await self._catch_up(conn, state)
                    break
                except _Reload as again:
                    self._unmap_later(state.cache.retire())
                    state.upstream.close()
                    if self.loader:
                        # a big import committed while this one loaded (two uploads at
                        # once): load again, not a failure of the feed
                        overtaken += 1
                        if again.cause == "transaction" and overtaken <= _LOADS_OVERTAKEN:
                            continue
                        raise StoreUnavailable(
                            f"a fresh full load cannot follow the change log ({again.cause})"
                        ) from again
                    failed_base = state.base_inode
            await asyncio.sleep(_REMAP_RETRY)
        await self._swap_in(state, cause, started)

    async def _swap_in(self, state: _State, cause: str, started: float) -> None:
        """Install a reloaded state (caught up already), count and log it, refresh the tail."""
        self._install(state, stale=False)
        self._suspect = False
        metrics.CACHE_RELOADS.labels(cause).inc()
        log.info(
            "cache loaded" if self.loader else "cache mapped from the host's snapshot",
            extra={
                "entries": len(state.cache),
                "change_id": state.last_id,
                "seconds": round(time.monotonic() - started, 3),
                "cause": cause,
            },
        )
        await self._write_tail()

    async def _full_load(self, *, cause: str) -> _State:
        """Build in a child process (replica/loader.py) and map its snapshot (not installed)."""
        started = time.monotonic()
        path = self.snapshot_path
        scratch = path is None
        if path is None:  # snapshots off: a private file, unlinked once mapped
            fd, name = tempfile.mkstemp(prefix="cnamd-load-", suffix=".snapshot")
            os.close(fd)
            path = Path(name)
        try:
            await load_in_child(
                self.url,
                path,
                connect_timeout=self.db.connect_timeout,
                log_settings=self.log_settings,
                cause=cause,
            )
            inode = path.stat().st_ino
            # mapped in a thread, as in _reload
            cache, info = await asyncio.to_thread(open_snapshot, path)
            held = await asyncio.to_thread(_open_held, path, info)
        except SnapshotError as exc:  # the follower retries a failed load, like a lost database
            raise StoreUnavailable(f"the loaded snapshot is unreadable: {exc.reason}") from exc
        finally:
            if scratch:
                path.unlink(missing_ok=True)
                held_path(path).unlink(missing_ok=True)
        elapsed = time.monotonic() - started
        metrics.CACHE_FULL_LOAD_SECONDS.set(elapsed)
        metrics.CACHE_LAST_FULL_LOAD.set(time.time())
        return self._state_of(cache, info, inode, held)

    # -- bookkeeping -----------------------------------------------------------

    def _install(self, state: _State, *, stale: bool) -> None:
        """Swap in ``state`` whole; the cache it replaces is closed (unmapped)."""
        self._state = state
        self.upstream.adopt(state.upstream)  # the answers' objects are shared: keep this one
        state.upstream = self.upstream
        unmap = self.directory.install(state.cache, state.contexts, state.digest(), stale=stale)
        if unmap is not None:
            self._unmap_later(unmap)
        metrics.CACHE_STALE.set(1 if stale else 0)
        self._publish(state)

    def _unmap_later(self, unmap: Callable[[], None]) -> None:
        """A replaced cache's snapshot unmapped on a thread of the feed's own, not on the
        loop: 17 ms at 1M entries, 49 ms at 3M (``NameCache.retire``), which every dip
        would wait out."""
        if self._unmapping is None:
            self._unmapping = ThreadPoolExecutor(1, thread_name_prefix="cache-unmap")
        self._unmapping.submit(_unmap, unmap)

    def _publish(self, state: _State) -> None:
        self.directory.contexts = state.contexts
        self.directory.digest = state.digest()
        for scope, n in state.cache.counts().items():
            metrics.CACHE_ENTRIES.labels(scope.label).set(n)
        metrics.CACHE_ENTRIES.labels("upstream").set(len(self.upstream))
        metrics.CACHE_LAST_CHANGE_ID.set(state.last_id)
        if state is self._state:
            self._wake_waiters(state.last_id)

    async def _write_tail(self) -> None:
        """Loader: every ``snapshot_interval``, the overlay since the base, if it moved.

        A few kB to a few MB (the overlay is bounded by ``compact_threshold``),
        encoded here and written (fsync included) in a thread, off the event loop.
        """
        state = self._state
        path = self.snapshot_path
        if not self.loader or state is None or path is None or state.base_id is None:
            return
        now = time.monotonic()
        if state.last_id == self._tail_id or now < self._next_tail:
            return
        self._next_tail = now + self.settings.snapshot_interval
        written = state.last_id
        info = {
            "base_id": state.base_id,
            "last_change_id": written,
            "count": state.count,
            "hash_xor": state.hash_xor,
            "contexts": state.contexts.to_json(),
            "tail_written_at": time.time(),
        }
        records = state.cache.overlay_records()
        try:
            await asyncio.to_thread(save_tail, path, records, info)
        except OSError as exc:
            log.error("snapshot tail not written", extra={"path": str(path), "reason": str(exc)})
            return
        self._tail_id = written
        metrics.CACHE_SNAPSHOT_CHANGE_ID.set(written)

    @property
    def last_change_id(self) -> int:
        return self._state.last_id if self._state is not None else 0


def _unmap(unmap: Callable[[], None]) -> None:
    """On the unmapping thread: a failure is logged, not lost in a future nobody reads."""
    try:
        unmap()
    except Exception:
        log.exception("a replaced cache could not be unmapped")


def _open_held(snapshot: Path, info: dict[str, Any]) -> HeldFile | None:
    """The held answers written with the names' base ``info`` describes, mapped; None (the
    answers are then read from PostgreSQL) if absent, refused or of another base."""
    path = held_path(snapshot)
    if not path.exists():
        return None
    try:
        held = HeldFile.open(path)
    except SnapshotError as exc:
        fields = {"path": str(path), "reason": exc.reason}
        log.warning("held upstream answers refused", extra=fields)
        return None
    if held.base_id != info.get("base_id") or held.last_change_id > info["last_change_id"]:
        held.close()  # written for another base (replaced between the two opens)
        return None
    return held
