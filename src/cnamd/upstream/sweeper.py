"""Deletes expired upstream answers, and the budget rows of past months (one process per
daemon runs it): the answers' deletions
reach every cache through the change log. A process's cache already ignores an
expired answer, so a late sweep costs rows, never a wrong answer."""

from __future__ import annotations

import asyncio
import logging

from cnamd.store import upstream as store
from cnamd.store.pool import Pool, checked_out

log = logging.getLogger(__name__)


async def sweep_forever(pool: Pool, interval: float, timeout: float) -> None:
    """Every ``interval``: delete expired answers in batches until none is left."""
    while True:
        await asyncio.sleep(interval)
        try:
            async with checked_out(pool, timeout=timeout) as conn:
                while await store.sweep(conn) > 0:
                    pass
                await store.sweep_budgets(conn)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database away: the next round tries again
            log.warning("expired upstream answers not swept", extra={"reason": str(exc)[:200]})
