"""A share of one turn of the event loop: how long a front may go on answering before it
leaves the rest of its work for the next turn.

Work that arrives together -- 200 new connections each with a lookup, or one client's
2,000 pipelined lookups in one read -- is otherwise all answered in the turn it
arrives in, and every timer (an upstream dip's retransmission, a deadline, the
loop-lag probe) waits behind it: 8.6 ms for the 200 lookups of issue #17's burst
(bench/README.md).
A front asks ``spent()`` before each answer; once it says so, the front puts the rest
off with ``call_soon``. uvloop (libuv) runs the timers due at the start of each turn,
before the callbacks put off in the turn before; asyncio's own loop runs them after
those, in the same turn: a timer waits for one more share there, not for the rest.

The turn is measured in wall time from the first question in it, so the work of others
that the loop ran meanwhile (datagrams, tasks) counts too: what a timer waits for is
the turn's length, not the front's own share of it. For the same reason a worker's
fronts -- the HTTP connections (http/front.py) and the SIP streams (sip/transport.py)
-- share one budget, the loop's (``of_running_loop``). The first question of each turn
is always answered "not spent", so a front gets somewhere in every turn.
"""

from __future__ import annotations

import asyncio
import weakref
from time import perf_counter

__all__ = ["TURN_BUDGET", "TurnBudget", "of_running_loop"]

#: how long a turn may run, from a front's first answer in it, before the front stops;
#: below the 5 ms a timer may be late (issue #17), since others' work shares the turn
TURN_BUDGET = 0.002


class TurnBudget:
    """A share of each turn; a loop's fronts share one (``of_running_loop``)."""

    __slots__ = ("_until", "seconds")

    def __init__(self, seconds: float = TURN_BUDGET) -> None:
        #: how long a turn may run from the first question in it
        self.seconds = seconds
        #: when this turn's share ends; None until the turn's first question
        self._until: float | None = None

    def spent(self) -> bool:
        """Whether this turn has run its share: put the rest off to a later turn."""
        now = perf_counter()
        until = self._until
        if until is None:
            self._until = now + self.seconds
            # the ready queue runs once per turn: this reset runs in the next one,
            # before the work put off with call_soon after it
            asyncio.get_running_loop().call_soon(self._new_turn)
            return False
        return now >= until

    def _new_turn(self) -> None:
        self._until = None


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TurnBudget] = (
    weakref.WeakKeyDictionary()
)


def of_running_loop() -> TurnBudget:
    """The running loop's budget, made at its first use, shared by every front on it."""
    loop = asyncio.get_running_loop()
    budget = _BY_LOOP.get(loop)
    if budget is None:
        budget = _BY_LOOP[loop] = TurnBudget()
    return budget
