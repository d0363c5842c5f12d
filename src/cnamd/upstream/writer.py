"""Upstream answers to PostgreSQL in batches: one transaction per ``batch_size``
answers or per ``flush_interval``, so a burst of misses is not a write per dip."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from cnamd import metrics
from cnamd.store import upstream as store
from cnamd.store.pool import Pool, checked_out

log = logging.getLogger(__name__)

_KEEP_BATCHES = 100  # answers held while the database is away, in batches


class Writer:
    """Queues answers and writes them in the background until ``stop()``."""

    def __init__(self, pool: Pool, *, batch_size: int, flush_interval: float, timeout: float):
        self.pool = pool
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.timeout = timeout
        self.pending: list[store.Answer] = []
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ok = metrics.UPSTREAM_WRITES.labels("ok")
        self._dropped = metrics.UPSTREAM_WRITES.labels("dropped")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cnamd-upstream-writer")

    def add(self, answer: store.Answer) -> None:
        self.pending.append(answer)
        if len(self.pending) >= self.batch_size:
            self._full.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval):
                    await self._full.wait()
            self._full.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write what is queued, ``batch_size`` answers per transaction."""
        while self.pending:
            batch = self.pending[: self.batch_size]
            try:
                async with checked_out(self.pool, timeout=self.timeout) as conn:
                    await store.save(conn, batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away: keep a bounded backlog, retry
                excess = len(self.pending) - _KEEP_BATCHES * self.batch_size
                if excess > 0:
                    del self.pending[:excess]
                    self._dropped.inc(excess)
                log.warning(
                    "upstream answers not written, retrying",
                    extra={"reason": str(exc)[:200], "pending": len(self.pending)},
                )
                return
            del self.pending[: len(batch)]
            self._ok.inc(len(batch))

    async def stop(self) -> None:
        """Write what is left (bounded), then end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.timeout):
                await self.flush()
