"""A source's daily budget counted for the whole deployment, not per process.

Every process (each worker of each daemon on the database) reserves the paid
requests it may send in blocks from table ``upstream_budget`` (source, UTC
day, reserved), one short transaction per block, and spends them from memory.
A reservation never passes the budget, so all processes together never send
more than ``daily_budget`` requests a day; the price is that requests reserved
and not yet spent are not available to the others: at most ``block - 1`` per
process (a stopping process gives its rest back). Only the request that finds
its process's block spent waits for the database, and concurrent ones share
that one reservation.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

from cnamd.store import upstream as store
from cnamd.store.pool import Pool, checked_out
from cnamd.upstream.source import Result

log = logging.getLogger(__name__)

_MAX_BLOCK = 100
_EXHAUSTED_RECHECK = 10.0  # seconds before a spent budget is asked again (returns happen)
_UNAVAILABLE_RECHECK = 1.0  # seconds before an unreachable ledger is tried again


def block_for(budget: int) -> int:
    """Requests reserved at once: 1% of the budget, from 1 to 100, so the requests a
    process may hold unspent stay small against the budget."""
    return max(1, min(_MAX_BLOCK, budget // 100))


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


class Ledger:
    """One process's share of one source's daily budget."""

    def __init__(self, pool: Pool, source: str, budget: int, *, timeout: float) -> None:
        self.pool = pool
        self.source = source
        self.budget = budget
        self.block = block_for(budget)
        self.timeout = timeout
        self.day = _today()
        self.held = 0  # reserved for ``day`` and not spent yet
        self.reserved = 0  # the deployment's reservations of ``day`` when last asked
        self._retry_at = 0.0  # no reservation asked before (monotonic)
        self._refusal: Result = Result.OVER_BUDGET
        self._lock = asyncio.Lock()

    @property
    def left(self) -> int:
        """Today's requests not yet spent as this process knows it: the budget less the
        deployment's reservations, plus its own unspent ones."""
        if _today() != self.day:
            return self.budget
        return max(0, self.budget - self.reserved) + self.held

    def needs_refill(self) -> bool:
        """Whether the next request should wait for a reservation first."""
        if _today() != self.day:
            return True
        return self.held == 0 and time.monotonic() >= self._retry_at

    async def refill(self) -> None:
        """Reserve a block for today when none is held; concurrent callers share one."""
        async with self._lock:
            if not self.needs_refill():
                return
            day = _today()
            if day != self.day:
                self.day, self.held, self.reserved = day, 0, 0
            try:
                async with checked_out(self.pool, timeout=self.timeout) as conn:
                    async with asyncio.timeout(self.timeout):
                        granted, reserved = await store.reserve(
                            conn, self.source, day, self.block, self.budget
                        )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away: no money spent without the ledger
                self._refusal = Result.BUDGET_UNAVAILABLE
                self._retry_at = time.monotonic() + _UNAVAILABLE_RECHECK
                log.warning(
                    "upstream budget not reserved",
                    extra={"source": self.source, "reason": str(exc)[:200]},
                )
                return
            self.held += granted
            self.reserved = reserved
            if granted == 0:
                self._refusal = Result.OVER_BUDGET
                self._retry_at = time.monotonic() + _EXHAUSTED_RECHECK

    async def acquire(self) -> Result | None:
        """Spend one request of today's budget (None), reserving a block first when this
        process holds none; else why not (over budget, or the ledger unreachable)."""
        while True:
            refused = self.take()
            if refused is None or not self.needs_refill():
                return refused
            await self.refill()

    def take(self) -> Result | None:
        """Spend one reserved request (None), else why not."""
        if self.held > 0 and _today() == self.day:
            self.held -= 1
            return None
        return self._refusal

    async def give_back(self) -> None:
        """Return what is held unspent (a process stopping), so others may spend it."""
        unused, self.held = self.held, 0
        if unused <= 0:
            return
        try:
            async with checked_out(self.pool, timeout=self.timeout) as conn:
                await store.give_back(conn, self.source, self.day, unused)
        except Exception as exc:  # lost for today only
            log.warning(
                "unspent upstream budget not returned",
                extra={"source": self.source, "reason": str(exc)[:200]},
            )
