"""Upstream answers held in memory: the ``upstream`` scope (issue #17).

Every process holds every live upstream answer of the deployment, kept equal
to table ``upstream_answers`` by the change feed (change-log rows of kind
``upstream``), so a number one daemon paid for is answered from memory by all.
A dict, apart from the trie: these answers expire, and the trie's base is
immutable. An answer is a name, or None when the source knows none (a
negative answer, held so that it is not paid for again). Compiled with mypyc
(setup.py): a dip answered from here reads it on every call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from cnamd.upstream.account import Account

_INF: Final = math.inf


@dataclass(frozen=True, slots=True)
class Held:
    """One upstream answer: the name (None: the source knows none), who gave it, until when
    (epoch seconds; ``math.inf`` when an operator pinned it)."""

    name: str | None
    source: str
    expires: float


class UpstreamAnswers:
    """Number -> live upstream answer; written only by the change feed and the chain."""

    def __init__(self) -> None:
        self._by_number: dict[str, Held] = {}
        #: tenants whose policy is 'off': their lookups never reach the upstream scope
        self.off_tenants: frozenset[int] = frozenset()
        #: tenant id -> source name -> the tenant's own account with that source
        self.accounts: dict[int, dict[str, Account]] = {}
        #: called with the number of every answer put (the chain wakes who waits for it)
        self.arrived: Callable[[str], None] | None = None

    def __len__(self) -> int:
        return len(self._by_number)

    def get(self, number: str, now: float | None = None) -> Held | None:
        """The live answer for an E.164 number, or None (never asked, or expired)."""
        held = self._by_number.get(number)
        if held is None:
            return None
        if held.expires <= (time.time() if now is None else now):
            return None
        return held

    def put(self, number: str, name: str | None, source: str | None, expires: float | None) -> None:
        """Apply one change: ``source`` None removes the answer; ``expires`` None: pinned."""
        if source is None:
            self._by_number.pop(number, None)
        else:
            self._by_number[number] = Held(name, source, _INF if expires is None else expires)
            arrived = self.arrived
            if arrived is not None:
                arrived(number)

    def replace(self, rows: Iterable[tuple[str, str | None, str, float | None]]) -> None:
        """Hold exactly ``rows`` (number, name, source, expires) from now on."""
        fresh = {}
        for number, name, source, expires in rows:
            fresh[number] = Held(name, source, _INF if expires is None else expires)
        self._by_number = fresh
