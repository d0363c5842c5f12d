"""The loop-lag probe sees a loop held by a blocking call, and not an idle one."""

from __future__ import annotations

import asyncio
import time

from cnamd import metrics
from cnamd.loop_lag import LoopLag


def _counts() -> list[float]:
    """Cumulative bucket counts of cnamd_event_loop_lag_seconds, in bound order."""
    metrics.flush_tallies()
    samples = metrics.LOOP_LAG.collect()[0].samples
    return [s.value for s in samples if s.name.endswith("_bucket")]


async def test_a_held_loop_is_measured_and_an_idle_one_reads_low() -> None:
    bounds = (*metrics.LOOP_LAG_BUCKETS, float("inf"))
    over_25ms = bounds.index(0.025)
    probe = LoopLag(interval=0.005)
    before = _counts()
    probe.start()
    try:
        # idle: a few dozen ticks, none late by 25 ms on a quiet loop
        ticks = asyncio.Event()
        asyncio.get_running_loop().call_later(0.1, ticks.set)
        await ticks.wait()
        idle = _counts()
        assert idle[-1] - before[-1] >= 5
        time.sleep(0.08)  # noqa: ASYNC251 -- holds the loop on purpose: the probe runs late
        resumed = asyncio.Event()  # set once the loop has run the overdue probe before it
        asyncio.get_running_loop().call_later(0.01, resumed.set)
        await resumed.wait()
    finally:
        probe.stop()
    after = _counts()
    late = (after[-1] - after[over_25ms]) - (idle[-1] - idle[over_25ms])
    assert late >= 1, after
