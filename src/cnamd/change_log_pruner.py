"""Keeps the change log bounded: every ``database.change_log_prune_interval`` the host's
cache loader deletes changes past the retention (``database.change_log_max_age`` and
``database.change_log_keep_rows``) in small batches (store/change_log.py).

On the primary (``database.primary_url``, else ``database.url``; a standby takes no
writes, it replays the primary's deletions), so daemons that all follow standbys
still prune; one daemon at a time per database (an advisory lock): the others skip.
"""

from __future__ import annotations

import asyncio
import logging

from cnamd import metrics
from cnamd.background import BackgroundLoop
from cnamd.settings import DatabaseSettings
from cnamd.store.change_log import PRUNE_LOCK, prune_batch
from cnamd.store.pool import TRANSIENT, connect_once, describe_failure, discard

__all__ = ["ChangeLogPruner"]

log = logging.getLogger(__name__)

BATCH = 5000  # rows per transaction: a few tens of milliseconds of row locks
_PAUSE = 0.01  # seconds between batches: writers, followers and replication go first


class ChangeLogPruner(BackgroundLoop):
    """Prunes the change log of ``url``'s database now and then, until stopped."""

    task_name = "cnamd-change-log-pruner"

    def __init__(self, url: str, settings: DatabaseSettings) -> None:
        super().__init__()
        self.url = url
        self.settings = settings

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.change_log_prune_interval)
            try:
                await self.prune()
            except TRANSIENT as exc:
                log.warning(
                    "change log not pruned; next time", extra={"reason": describe_failure(exc)}
                )

    async def prune(self) -> int:
        """One pruning: every batch past the retention; how many rows were deleted."""
        conn = await connect_once(self.url, self.settings.connect_timeout)
        deleted = 0
        try:
            bound = self.settings.statement_timeout
            if await conn.fetchval("SELECT pg_is_in_recovery()", timeout=bound):
                return 0
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", PRUNE_LOCK):
                return 0  # another daemon's loader is at it
            while True:
                async with asyncio.timeout(bound):
                    done = await prune_batch(
                        conn,
                        keep_rows=self.settings.change_log_keep_rows,
                        max_age=self.settings.change_log_max_age,
                        batch=BATCH,
                    )
                deleted += done
                metrics.CHANGE_LOG_PRUNED.inc(done)
                if done < BATCH:
                    break
                await asyncio.sleep(_PAUSE)
        finally:
            discard(conn)  # the session ends, and its advisory lock with it
        if deleted:
            log.info("change log pruned", extra={"deleted": deleted})
        return deleted
