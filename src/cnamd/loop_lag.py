"""How late each worker's event loop runs a timer: the wait a new datagram or request
would have had, as ``cnamd_event_loop_lag_seconds``.

Everything a worker serves shares one event loop, so anything that holds it (a
parse, a big JSON answer, a slow callback) delays every dip behind it. A timer
due every ``INTERVAL`` notes how late it ran, the way Node's
``monitorEventLoopDelay`` does; a hold longer than ``INTERVAL`` is always seen.
uvloop keeps timers in whole milliseconds, so an idle loop reads 0-1 ms.
Written here because it is a dozen lines on ``call_later``; the libraries that
do it (aiodebug, aiomonitor) log or serve a console, not a metric.
"""

from __future__ import annotations

import asyncio
from time import perf_counter

from cnamd import metrics

__all__ = ["INTERVAL", "LoopLag"]

#: the probe's period: 50 timers a second, a few microseconds each
INTERVAL = 0.02


class LoopLag:
    """Started on the running loop; ``stop()`` cancels the pending timer."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self._lag = metrics.TallyHistogram(metrics.LOOP_LAG, metrics.LOOP_LAG_BUCKETS)
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._due = perf_counter() + self.interval
        self._handle = self._loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        now = perf_counter()
        self._lag.observe(max(0.0, now - self._due))
        self._due = now + self.interval
        assert self._loop is not None
        self._handle = self._loop.call_later(self.interval, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._lag.flush()
