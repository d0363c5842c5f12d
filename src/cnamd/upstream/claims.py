"""Which worker of a host asks upstream for a number: concurrent misses of one number in
several workers make one request (issue #17).

The host's workers share a table in the limits region (``sharedlimits.py``,
``_buckets.c``): a bucket per number holding one token that comes back after
``window`` seconds. The worker that takes it asks the sources; another that
misses the same number meanwhile waits for the answer to reach it through the
change feed (the claimer stores it, the change log brings it), up to its
front's deadline. Best effort by design: an answer that is not stored (errors,
timeouts) or a slot evicted from the table leaves the others a miss or a second
request; daemons on other hosts do not share the table, so each asks once.
"""

from __future__ import annotations

import asyncio
import time

from cnamd import metrics
from cnamd.cache.upstream import Held, UpstreamAnswers
from cnamd.sharedlimits import RateLimiter


class Claims:
    """This process's side of the host's claim table, and its waits for others' answers."""

    def __init__(self, held: UpstreamAnswers, window: float) -> None:
        self.held = held
        self.window = window
        self.table: RateLimiter | None = None  # None: this process asks for every miss
        self._waits: dict[str, asyncio.Future[None]] = {}
        self._answered = metrics.UPSTREAM_SHARED.labels("answered")
        self._expired = metrics.UPSTREAM_SHARED.labels("expired")
        held.arrived = self._arrived

    def retune(self, window: float) -> None:
        """A new window (SIGHUP changed the sources); claims taken keep theirs."""
        self.window = window
        if self.table is not None:
            self.table.retune(1.0 / window, 1.0)

    def mine(self, number: str) -> bool:
        """Whether this process asks for ``number`` (no other worker does right now)."""
        table = self.table
        return table is None or table.allow(number, time.monotonic())

    async def answer(self, number: str) -> Held | None:
        """The answer another worker is fetching, once the change feed brings it; None
        when it does not come within the claim's window."""
        held = self.held.get(number)
        if held is None:
            waiting = self._waits.get(number)
            if waiting is None:
                waiting = self._waits[number] = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self.window):
                    await asyncio.shield(waiting)
            except TimeoutError:
                if self._waits.get(number) is waiting:
                    del self._waits[number]
            held = self.held.get(number)
        (self._expired if held is None else self._answered).inc()
        return held

    def _arrived(self, number: str) -> None:
        waiting = self._waits.pop(number, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    def close(self) -> None:
        self.held.arrived = None
        for waiting in self._waits.values():
            waiting.cancel()
        self._waits.clear()
