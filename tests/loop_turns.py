"""Counting the event loop's turns, for tests of work spread over them (turn_budget.py)."""

from __future__ import annotations

import asyncio


class Turns:
    """A callback that puts itself back on the ready queue, which the loop runs once per
    turn: ``now`` is the turn the loop is in. ``stop()`` before the test ends."""

    def __init__(self) -> None:
        self.now = 0
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.now += 1
        self._handle = self._loop.call_soon(self._tick)

    def stop(self) -> None:
        self._handle.cancel()
