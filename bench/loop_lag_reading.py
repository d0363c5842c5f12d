"""The daemon's ``cnamd_event_loop_lag_seconds`` over a phase of a benchmark, read from
its /metrics (every worker's, merged): how many of its 20 ms timers ran late."""

from __future__ import annotations

import aiohttp


async def buckets(base: str) -> dict[float, float]:
    """The histogram's cumulative bucket counts, by upper bound."""
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        text = await response.text()
    found: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("cnamd_event_loop_lag_seconds_bucket{"):
            le = float(line.split('le="', 1)[1].split('"', 1)[0])
            found[le] = found.get(le, 0) + float(line.rsplit(" ", 1)[1])
    return found


def described(before: dict[float, float], after: dict[float, float]) -> str:
    """One line: timers in the phase, how many ran over 2 and 5 ms late, the worst bucket."""
    lag = {le: n - before.get(le, 0) for le, n in after.items()}
    ticks = lag.get(float("inf"), 0)
    worst = min((le for le, n in lag.items() if n == ticks), default=float("inf"))
    return (
        f"loop lag: {ticks:.0f} timers, {ticks - lag.get(0.002, 0):.0f} over 2 ms,"
        f" {ticks - lag.get(0.005, 0):.0f} over 5 ms, all within {worst * 1e3:g} ms"
    )
