"""Keeps the Directory equal to PostgreSQL: full loads off to the side, then the change log.

Start-up: a full load in one REPEATABLE READ snapshot (entries, context maps and
the change id they reflect), built in a child process (``cache/loader.py``),
written to the snapshot file, mapped and swapped in. After that the feed LISTENs, and on every
notification (or poll tick, which also proves the connection alive) applies
change-log rows with id > last applied, in id order. Ids are gapless (see the
schema), so a jump means the log was pruned under us: reload. A periodic
reconciliation compares a digest (count and XOR of entry hashes) with
the one kept in step with each applied change, and reloads on a difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import asyncpg

from cnamd import metrics
from cnamd.cache.contexts import Contexts
from cnamd.cache.directory import Directory
from cnamd.cache.loader import load_in_child, open_snapshot
from cnamd.cache.trie import NameCache
from cnamd.errors import SnapshotError, StoreUnavailable
from cnamd.settings import CacheSettings, DatabaseSettings, LogSettings
from cnamd.store import entries
from cnamd.store.contexts import load_context_rows
from cnamd.store.entries import Change, Digest, entry_hash
from cnamd.store.pool import backoff_delays, connect_once, describe_failure

log = logging.getLogger(__name__)

CHANNEL = "cnamd_changes"
_DB_ERRORS = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    TimeoutError,
    StoreUnavailable,
)


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
    ) -> None:
        self.url = url
        self.directory = directory
        self.settings = cache_settings
        self.db = db_settings
        self.allowed = tuple(allowed_networks)
        self.poll_interval = poll_interval
        self.snapshot_path = (
            Path(cache_settings.snapshot_path) if cache_settings.snapshot_path else None
        )
        self.log_settings = log_settings or LogSettings()
        self.db_up = False
        self._count = 0
        self._hash_xor = 0
        self._last_id = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_reconcile = 0.0

    # -- start-up ----------------------------------------------------------

    async def start(self, *, prefer_snapshot: bool = False) -> None:
        """First load: from PostgreSQL, else from the snapshot (stale), else per policy.

        ``prefer_snapshot``: map a usable snapshot first and catch up from its
        change id, as stale until the digest confirms it. A restart at 10M names
        then serves in well under a second instead of after a two-minute load,
        and workers share the mapped pages.
        Raises StoreUnavailable when the database is unreachable, no snapshot
        can be served and ``database.on_unreachable`` is ``exit``.
        """
        if prefer_snapshot and self._warm_start(None):
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
            self._spawn(full_reload=True)
            return
        await conn.close()
        await self._full_load(cause="startup")
        self._set_db_up(True)
        self._spawn()

    def _warm_start(self, reason: str | None) -> bool:
        """Install the snapshot as stale until the database confirms it; True if installed.

        ``reason`` says why the database is not used (None: by choice, in a worker).
        """
        if self.snapshot_path is None or not self.snapshot_path.exists():
            return False
        try:
            cache, info = open_snapshot(self.snapshot_path)
        except SnapshotError as exc:
            log.error(
                "snapshot refused", extra={"path": str(self.snapshot_path), "reason": exc.reason}
            )
            return False
        self._install(cache, info, stale=True)
        # the last full load is the one that wrote this snapshot
        metrics.CACHE_LAST_FULL_LOAD.set(info.get("built_at") or self.snapshot_path.stat().st_mtime)
        if "load_seconds" in info:
            metrics.CACHE_FULL_LOAD_SECONDS.set(info["load_seconds"])
        fields = {"entries": len(cache), "change_id": self._last_id}
        if reason is None:
            log.info("cache mapped from snapshot", extra=fields)
        else:
            log.warning(
                "serving from snapshot while the database is unreachable",
                extra={"reason": reason, **fields},
            )
        return True

    def _spawn(self, *, full_reload: bool = False) -> None:
        self._task = asyncio.create_task(self._follow(full_reload), name="cnamd-change-feed")

    async def stop(self) -> None:
        """Cancel the follower and wait for it to end; a cancel of the caller is not swallowed."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
            if not task.cancelled():
                task.result()  # the follower died of something else: say so

    # -- following ---------------------------------------------------------

    async def _follow(self, full_reload: bool) -> None:
        """Forever: connect, catch up, listen; on any database error back off and retry."""
        delays = backoff_delays(self.db.retry_max_seconds)
        while True:
            conn: Any = None
            try:
                conn = await connect_once(self.url, self.db.connect_timeout)
                await conn.add_listener(CHANNEL, self._notified)
                conn.add_termination_listener(lambda _c: self._wake.set())
                self._set_db_up(True)
                if full_reload or self.directory.stale:
                    full_reload = await self._resync(conn, full_reload)
                delays = backoff_delays(self.db.retry_max_seconds)
                await self._listen(conn)
            except asyncio.CancelledError:
                raise
            except _DB_ERRORS as exc:
                self._set_db_up(False)
                delay = await anext(delays)
                log.warning(
                    "change feed lost the database, retrying",
                    extra={
                        "reason": describe_failure(exc),
                        "retry_in": round(delay, 2),
                        "change_id": self._last_id,
                    },
                )
                await asyncio.sleep(delay)
            finally:
                if conn is not None and not conn.is_closed():
                    conn.terminate()

    async def _resync(self, conn: Any, full_reload: bool) -> bool:
        """After a warm start: catch up from the snapshot's change id if the log still has it."""
        if not full_reload and self.directory.ready:
            first = await entries.first_change_id(conn)
            if first <= self._last_id + 1 or first == 0:
                await self._catch_up(conn)
                if await self._reconcile(conn, cause="resync"):
                    self.directory.stale = False
                    metrics.CACHE_STALE.set(0)
                    log.info(
                        "snapshot confirmed by the database", extra={"change_id": self._last_id}
                    )
                    return False
        await self._full_load(cause="resync")
        return False

    async def _listen(self, conn: Any) -> None:
        self._next_reconcile = time.monotonic() + self.settings.reconcile_interval
        while True:
            # not wait_for: on 3.11 it drops a cancel that meets a finished wait (stop() hung)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
            self._wake.clear()
            if conn.is_closed():
                raise StoreUnavailable("listener connection closed")
            await self._catch_up(conn)
            if self.directory.cache is not None and (
                self.directory.cache.overlay_size > self.settings.compact_threshold
            ):
                await self._full_load(cause="compact")
            if time.monotonic() >= self._next_reconcile:
                await self._reconcile(conn, cause="reconcile")
                self._next_reconcile = time.monotonic() + self.settings.reconcile_interval

    def set_allowed(self, networks: Iterable[str]) -> None:
        """A new ``sip.allow`` (SIGHUP): the context maps are rebuilt with it, at once."""
        self.allowed = tuple(networks)
        contexts = self.directory.contexts
        if contexts is not None:
            self.directory.contexts = Contexts(contexts.rows, self.allowed)

    def reconcile_soon(self) -> None:
        """Compare digests at the next wake-up instead of waiting for the interval."""
        self._next_reconcile = 0.0
        self._wake.set()

    def _notified(self, *_args: object) -> None:
        self._wake.set()

    def _set_db_up(self, up: bool) -> None:
        self.db_up = up
        metrics.DB_UP.set(1 if up else 0)

    async def _catch_up(self, conn: Any, upto: int | None = None) -> None:
        """Apply every change after the last applied one (up to ``upto``), in id order."""
        while True:
            batch = await entries.changes_after(conn, self._last_id, upto)
            if not batch:
                return
            if batch[0].id != self._last_id + 1:
                log.warning(
                    "gap in the change log, reloading",
                    extra={"expected": self._last_id + 1, "got": batch[0].id},
                )
                await self._full_load(cause="gap")
                return
            if self._apply(batch):
                rows = await load_context_rows(conn)
                self.directory.contexts = Contexts(rows, self.allowed)
            self.directory.digest = self._digest()
            self._publish_counts()

    def _apply(self, batch: list[Change]) -> bool:
        """Apply entry changes to the cache; True if the context maps must be reloaded."""
        cache = self.directory.cache
        assert cache is not None
        contexts_changed = False
        now = time.time()
        for change in batch:
            if change.kind == "entry" and change.scope is not None:
                if change.name is None:
                    cache.delete(change.scope, change.owner, change.key)
                else:
                    cache.put(change.scope, change.owner, change.key, change.name)
                if change.old_name is not None:
                    self._count -= 1
                    self._hash_xor ^= entry_hash(
                        change.scope, change.owner, change.key, change.old_name
                    )
                if change.name is not None:
                    self._count += 1
                    self._hash_xor ^= entry_hash(
                        change.scope, change.owner, change.key, change.name
                    )
            else:
                contexts_changed = True
            metrics.CACHE_PROPAGATION.observe(max(0.0, now - change.at.timestamp()))
            self._last_id = change.id
        return contexts_changed

    async def _reconcile(self, conn: Any, *, cause: str) -> bool:
        """Compare digests at one change id; reload on a difference. True if they agreed."""
        want = await entries.served_digest(conn)
        await self._catch_up(conn, upto=want.last_change_id)
        have = self._digest()
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
        await self._full_load(cause=cause)
        return False

    # -- full load -----------------------------------------------------------

    async def _full_load(self, *, cause: str) -> None:
        """Build in a child process (cache/loader.py), map its snapshot, swap it in.

        Lookups go on from the old cache meanwhile; the changes committed while
        the child worked are applied by the next catch-up, from the snapshot's id.
        """
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
            cache, info = open_snapshot(path)
        except SnapshotError as exc:  # the follower retries a failed load, like a lost database
            raise StoreUnavailable(f"the loaded snapshot is unreadable: {exc.reason}") from exc
        finally:
            if scratch:
                path.unlink(missing_ok=True)
        self._install(cache, info, stale=False)
        elapsed = time.monotonic() - started
        metrics.CACHE_FULL_LOAD_SECONDS.set(elapsed)
        metrics.CACHE_LAST_FULL_LOAD.set(time.time())
        metrics.CACHE_RELOADS.labels(cause).inc()
        log.info(
            "cache loaded",
            extra={
                "entries": len(cache),
                "change_id": self._last_id,
                "seconds": round(elapsed, 3),
                "cause": cause,
            },
        )

    # -- bookkeeping -----------------------------------------------------------

    def _install(self, cache: NameCache, info: dict[str, Any], *, stale: bool) -> None:
        """Swap in a mapped snapshot and take over the digest and change id it records."""
        self._count, self._hash_xor = info["count"], info["hash_xor"]
        self._last_id = info["last_change_id"]
        contexts = Contexts.from_json(info["contexts"], self.allowed)
        self.directory.install(cache, contexts, self._digest(), stale=stale)
        metrics.CACHE_STALE.set(1 if stale else 0)
        self._publish_counts()

    def _digest(self) -> Digest:
        return Digest(self._count, self._hash_xor, self._last_id)

    def _publish_counts(self) -> None:
        for scope, n in self.directory.counts().items():
            metrics.CACHE_ENTRIES.labels(scope.label).set(n)
        metrics.CACHE_LAST_CHANGE_ID.set(self._last_id)

    @property
    def last_change_id(self) -> int:
        return self._last_id
