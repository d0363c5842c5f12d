"""A share of one turn of the event loop: how long a front may go on answering before it
leaves the rest of its work for the next turn.

Work that arrives together -- 200 new connections each with a lookup, or 2,000
lookups or INVITEs in one write -- is otherwise all answered in the turn it arrives
in, and every timer (an upstream dip's retransmission, a deadline, the loop-lag probe)
waits behind it: 8.6 ms for the 200 lookups of issue #17's burst, 20-35 ms for the
2,000 (bench/README.md). A front asks ``spent()`` before each answer; once it says so,
the front puts the rest off with ``call_soon``. uvloop (libuv) runs the timers due at
the start of each turn, before the callbacks put off in the turn before; asyncio's own
loop runs them after those, in the same turn: a timer waits for one more share there,
not for the rest.

A share is measured in wall time from the question that opened it (in this turn, or
less than half a share before it: ``TurnBudget``), so the work of others that the loop
ran meanwhile (datagrams, tasks) counts too: what a timer waits for is the turn's
length, not the front's own share of it. For the same reason a worker's fronts -- the
HTTP connections (http/front.py) and the SIP streams (sip/transport.py) -- share one
budget, the loop's (``of_running_loop``). The first question of each turn is always
answered "not spent", so a front gets somewhere in every turn.
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
    """A share of each turn; a loop's fronts share one (``of_running_loop``).

    Marking every turn would cost the loop a turn of its own: a ``call_soon`` keeps the
    next poll from sleeping, and at 40,000 SIP dips/s over TCP that extra turn per read
    cost 6-15% more CPU per dip (bench/README.md). So a share is only watched once half
    of it is used: then the reset is scheduled for the next turn. A share opened in an
    earlier turn and never watched is opened afresh. The cost: when others' work runs
    longer than the whole share between two of the fronts' questions, the turn may
    run past it -- a turn that long is others'.
    """

    __slots__ = ("_opened", "_watched", "seconds")

    def __init__(self, seconds: float = TURN_BUDGET) -> None:
        #: how long a turn may run from the first question in it
        self.seconds = seconds
        self._opened = float("-inf")  # when the share began
        self._watched = False  # its reset is scheduled: the share is this turn's

    def spent(self) -> bool:
        """Whether this turn has run its share: put the rest off to a later turn."""
        now = perf_counter()
        if self._watched:
            return now - self._opened >= self.seconds
        if now - self._opened >= self.seconds:  # an earlier turn's, never watched
            self._opened = now
        if now - self._opened >= self.seconds / 2:
            self._watched = True
            # the ready queue runs once per turn: this reset runs in the next one,
            # before the work put off with call_soon after it
            asyncio.get_running_loop().call_soon(self._new_turn)
        return False

    def _new_turn(self) -> None:
        self._watched = False
        self._opened = float("-inf")


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
