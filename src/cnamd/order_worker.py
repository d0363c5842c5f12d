"""The background worker that carries out Atmosphere CNAM orders (store/cnam_orders.py).

One per daemon (worker process 0 under the supervisor); several daemons on
one database share the work safely, because each order is taken with
``FOR UPDATE SKIP LOCKED`` and each item's status is committed with its
effect. At start-up it resumes whatever is QUEUED or PENDING; afterwards it
looks every ``orders.poll_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from cnamd.background import BackgroundLoop
from cnamd.settings import Settings
from cnamd.store import cnam_orders
from cnamd.store.pool import TRANSIENT, Pool, checked_out

__all__ = ["OrderWorker"]

log = logging.getLogger(__name__)


class OrderWorker(BackgroundLoop):
    """Works off open orders a batch at a time until stopped."""

    task_name = "cnamd-order-worker"

    def __init__(self, pool: Pool, settings: Settings) -> None:
        super().__init__()
        self.pool = pool
        self.settings = settings

    async def _run(self) -> None:
        orders = self.settings.orders
        limit = self.settings.database.statement_timeout
        read_only = False
        while True:
            try:
                async with checked_out(self.pool, timeout=limit) as conn:
                    worked = await cnam_orders.process_next(
                        conn, require_approval=self.settings.directory.require_approval
                    )
            except asyncpg.ReadOnlySQLTransactionError:
                # a hot standby (no database.primary_url): orders wait for a primary,
                # found again after a promotion without a restart
                if not read_only:
                    log.info("order worker: the database is a read-only standby; waiting")
                read_only = True
                worked = False
            except TRANSIENT as exc:
                log.warning("order worker: database error", extra={"reason": str(exc)[:200]})
                worked = False
            else:
                read_only = False
            if worked:
                await asyncio.sleep(orders.batch_pause)
            else:
                await asyncio.sleep(orders.poll_interval)
