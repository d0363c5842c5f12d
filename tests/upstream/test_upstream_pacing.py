"""Upstream requests start a few per turn of the event loop (upstream/chain.py,
``STARTS_PER_TURN``): a burst of misses must not start all its requests back to back
in one turn, which held the loop 11-13 ms at the burst's first instant (bench/README.md,
"The burst with its callers on other cores"). The requests go to the real provider;
the source is wrapped only to note the turn in which each one starts."""

from __future__ import annotations

import asyncio
from collections import Counter

from fake_provider import FAST, FakeProvider, asking, unguarded_source

from cnamd.upstream.chain import STARTS_PER_TURN
from cnamd.upstream.source import Outcome, Source
from loop_turns import Turns

MISSES = 40


class Noting:
    """The real source, noting the turn each request starts in."""

    def __init__(self, source: Source, turns: Turns) -> None:
        self.source = source
        self.turns = turns
        self.started: list[int] = []

    async def fetch(self, number: str) -> Outcome:
        self.started.append(self.turns.now)
        return await self.source.fetch(number)

    async def close(self) -> None:
        await self.source.close()


async def test_a_burst_of_misses_starts_its_requests_a_few_per_turn(fake: FakeProvider) -> None:
    numbers = [f"{FAST}555{i:04d}" for i in range(MISSES)]
    async with asking(unguarded_source(fake.port, timeout=5, countries=(FAST,))) as chain:
        turns = Turns()
        noting = Noting(chain.links[0].source, turns)
        chain.links[0].source = noting
        try:
            found = await asyncio.gather(*(chain.within(n, 5, "http") for n in numbers))
        finally:
            turns.stop()
    assert [f.name for f in found] == [f"Fake {n[-4:]}" for n in numbers]  # all answered
    per_turn = Counter(noting.started)
    assert len(noting.started) == MISSES
    assert max(per_turn.values()) <= STARTS_PER_TURN, per_turn
    assert len(per_turn) >= MISSES // STARTS_PER_TURN
