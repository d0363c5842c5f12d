"""Per-source token buckets in a bounded table; pure: the caller passes the clock.

The SIP front meters dips with it, the HTTP front failed logins.
"""

from __future__ import annotations

import math
from collections import OrderedDict


class TokenBucket:
    """``rate`` requests per second per source, bursts up to ``burst``, at most
    ``max_sources`` sources remembered.

    The table is an LRU: when full, the source seen longest ago is forgotten.
    A forgotten source comes back with a full bucket, which is what its
    bucket would hold anyway once it has been quiet for ``burst / rate``
    seconds; a source that keeps sending stays recent and keeps its debt.
    """

    __slots__ = ("_table", "burst", "max_sources", "rate", "retry_after")

    def __init__(self, rate: float, burst: float, max_sources: int = 65536) -> None:
        if rate <= 0 or burst < 1 or max_sources < 1:
            raise ValueError("rate must be > 0, burst >= 1 and max_sources >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_sources = max_sources
        self.retry_after = max(1, math.ceil(1.0 / self.rate))  # seconds until one token
        self._table: OrderedDict[str, list[float]] = OrderedDict()

    def retune(self, rate: float, burst: float) -> None:
        """New limits (SIGHUP) for every source, keeping what each has spent."""
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.retry_after = max(1, math.ceil(1.0 / self.rate))

    def __len__(self) -> int:
        return len(self._table)

    def allow(self, source: str, now: float) -> bool:
        """Take one token for ``source`` at time ``now`` (seconds, monotonic); False when empty."""
        table = self._table
        bucket = table.get(source)
        if bucket is None:
            if len(table) >= self.max_sources:
                table.popitem(last=False)
            table[source] = [self.burst - 1.0, now]
            return True
        table.move_to_end(source)
        elapsed = now - bucket[1]
        tokens = bucket[0] + elapsed * self.rate if elapsed > 0 else bucket[0]
        tokens = min(tokens, self.burst)
        if elapsed > 0:
            bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return True
        bucket[0] = tokens
        return False

    def available(self, source: str, now: float) -> float:
        """Tokens ``source`` holds at ``now``, without taking one."""
        bucket = self._table.get(source)
        if bucket is None:
            return self.burst
        elapsed = now - bucket[1]
        return min(bucket[0] + elapsed * self.rate if elapsed > 0 else bucket[0], self.burst)
