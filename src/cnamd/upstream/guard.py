"""Protects the money and the provider, per source: a concurrency limit, a request
rate, a daily budget, and a circuit breaker so a dead provider costs a few
milliseconds, not a deadline per call."""

from __future__ import annotations

import asyncio
import enum
import time

from cnamd.settings import SourceSettings
from cnamd.upstream.budget import Ledger
from cnamd.upstream.source import Result


class Breaker(enum.IntEnum):
    """The ``cnamd_upstream_breaker_state`` values."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class Guard:
    """The admission rules of one source. ``admit`` says why a request may not go
    (or None); ``done`` reports how one that went ended.

    With a ``ledger`` the daily budget is the deployment's (``budget.py``) and
    ``admit_paid`` spends from it; without, it is counted in this process."""

    def __init__(self, settings: SourceSettings, ledger: Ledger | None = None) -> None:
        self.settings = settings
        self.ledger = ledger
        self.slots = asyncio.Semaphore(settings.max_concurrency)
        self.state = Breaker.CLOSED
        self._failures = 0
        self._open_until = 0.0
        self._probing = False
        self._tokens = max(1.0, settings.rate)
        self._refilled = time.monotonic()
        self._day = self._today()
        self.spent = 0

    @staticmethod
    def _today() -> int:
        return int(time.time() // 86400)

    @property
    def budget_left(self) -> float:
        """Paid requests left today (inf without a budget)."""
        if not self.settings.daily_budget:
            return float("inf")
        if self.ledger is not None:
            return float(self.ledger.left)
        if self._today() != self._day:
            return float(self.settings.daily_budget)
        return float(max(0, self.settings.daily_budget - self.spent))

    def admit(self) -> Result | None:
        """None to go ahead (the request is then counted as spent), else why not."""
        now = time.monotonic()
        if self.state is Breaker.OPEN:
            if now < self._open_until:
                return Result.BREAKER_OPEN
            self.state = Breaker.HALF_OPEN
        if self.state is Breaker.HALF_OPEN and self._probing:
            return Result.BREAKER_OPEN
        settings = self.settings
        if settings.daily_budget and self.ledger is None:
            today = self._today()
            if today != self._day:
                self._day, self.spent = today, 0
            if self.spent >= settings.daily_budget:
                return Result.OVER_BUDGET
        if settings.rate:
            burst = max(1.0, settings.rate)
            self._tokens = min(burst, self._tokens + (now - self._refilled) * settings.rate)
            self._refilled = now
            if self._tokens < 1.0:
                return Result.RATE_LIMITED
            self._tokens -= 1.0
        if self.state is Breaker.HALF_OPEN:
            self._probing = True
        self.spent += 1
        return None

    async def admit_paid(self) -> Result | None:
        """``admit``, then a request of the deployment's budget when there is a ledger
        (waiting for the database only when this process's block is spent)."""
        refused = self.admit()
        if refused is None and self.ledger is not None:
            refused = await self.ledger.acquire()
            if refused is not None:
                self._probing = False  # the probe did not go: the next request may
        return refused

    def done(self, result: Result) -> None:
        """A request that went ended with ``result``: errors and timeouts count toward
        opening the breaker; any answer (a name or none) closes it."""
        self._probing = False
        if result in (Result.ERROR, Result.TIMEOUT):
            self._failures += 1
            if self.state is Breaker.HALF_OPEN or self._failures >= self.settings.breaker_errors:
                self.state = Breaker.OPEN
                self._open_until = time.monotonic() + self.settings.breaker_reset
        else:
            self._failures = 0
            self.state = Breaker.CLOSED
