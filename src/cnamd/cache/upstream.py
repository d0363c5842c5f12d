"""Upstream answers held in memory: the ``upstream`` scope (issue #17).

Every process answers from every live upstream answer of the deployment, kept
equal to table ``upstream_answers`` by the change feed (change-log rows of kind
``upstream``), so a number one daemon paid for is answered from memory by all.
Apart from the trie: these answers expire, and the trie's base is immutable.
An answer is a name, or None when the source knows none (a negative answer,
held so that it is not paid for again).

Two layers, as the names' cache has: a *base*, the host's held-answers file
(``cache/held_file.py``) built by the loader and mapped read-only by every
process, so memory per worker does not grow with the answers held; and a small
per-process *overlay* of the changes since that build (answers put, numbers
removed), which the loader folds into a new file when it outgrows
``cache.compact_threshold``. Without a file (a pure Python build, or a file
refused) the overlay holds everything, as a dict per process did before.
Compiled with mypyc (setup.py): a dip answered from here reads it on every call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from cnamd.cache.held_file import HeldFile

if TYPE_CHECKING:  # held for the chain, never used here: no import of upstream/ at run time
    from cnamd.upstream.account import Account

_INF: Final = math.inf
#: ``name_of``'s answer for a held negative answer (a name is never empty: the name rule)
NO_NAME: Final = ""

#: an answer in the overlay: (name, source, expires), a plain tuple rather than a ``Held``.
#: The collector untracks a tuple of strings and floats at its first pass, so the
#: overlay's answers (up to ``cache.compact_threshold`` of them) are no longer walked by
#: any pass; as ``Held`` objects they were, in every full pass, most of what it walked
#: after a burst of upstream answers (bench/README.md, "The burst with its callers on
#: other cores").
_Entry = tuple[str | None, str, float]


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
        self._file: HeldFile | None = None
        self._table: Any = None  # self._file.table, one attribute away from a dip
        self._sources: tuple[str, ...] = ()
        #: answers put since the base was built (all of them when there is no base)
        self._overlay: dict[str, _Entry] = {}
        #: numbers of the base removed since it was built
        self._removed: set[str] = set()
        self._count = 0
        #: tenants whose policy is 'off': their lookups never reach the upstream scope
        self.off_tenants: frozenset[int] = frozenset()
        #: tenant id -> source name -> the tenant's own account with that source
        self.accounts: dict[int, dict[str, Account]] = {}
        #: called with the number of every answer put (the chain wakes who waits for it)
        self.arrived: Callable[[str], None] | None = None

    def serves(self, tenant_id: int | None) -> bool:
        """Whether lookups asked for ``tenant_id`` (None: no tenant) reach this scope."""
        off = self.off_tenants
        return not off or tenant_id not in off

    def __len__(self) -> int:
        """Numbers held, expired ones included until the sweeper removes them."""
        return self._count

    @property
    def overlay_size(self) -> int:
        """Changes held beside the base: what a new file would fold in."""
        return len(self._overlay) + len(self._removed)

    @property
    def mapped(self) -> bool:
        """Whether a held-answers file is the base."""
        return self._file is not None

    def get(self, number: str, now: float | None = None) -> Held | None:
        """The live answer for an E.164 number, or None (never asked, or expired)."""
        when = time.time() if now is None else now
        entry = self._overlay.get(number)
        if entry is not None:
            name, source, expires = entry
            return None if expires <= when else Held(name, source, expires)
        hf = self._file
        if hf is None or number in self._removed:
            return None
        found = hf.table.get(number, when)
        if found is None:
            return None
        found_name, source_index, found_expires = found
        return Held(found_name, self._sources[source_index], found_expires)

    def name_of(self, number: str, now: float | None = None) -> str | None:
        """``get``'s answer as a dip needs it, without building a ``Held``: the live
        name, ``NO_NAME`` for a live negative answer, None when nothing live is held."""
        when = time.time() if now is None else now
        entry = self._overlay.get(number)
        if entry is not None:
            name, _, expires = entry
            if expires <= when:
                return None
            return NO_NAME if name is None else name
        table = self._table
        if table is None or number in self._removed:
            return None
        found: str | None = table.name(number, when)
        return found

    def put(self, number: str, name: str | None, source: str | None, expires: float | None) -> None:
        """Apply one change: ``source`` None removes the answer; ``expires`` None: pinned."""
        present = self._holds(number)
        if source is None:
            self._overlay.pop(number, None)
            hf = self._file
            if hf is not None and hf.table.holds(number):
                self._removed.add(number)
            if present:
                self._count -= 1
        else:
            self._overlay[number] = (name, source, _INF if expires is None else expires)
            self._removed.discard(number)
            if not present:
                self._count += 1
            arrived = self.arrived
            if arrived is not None:
                arrived(number)

    def _holds(self, number: str) -> bool:
        if number in self._overlay:
            return True
        hf = self._file
        return hf is not None and number not in self._removed and bool(hf.table.holds(number))

    def replace(self, rows: Iterable[tuple[str, str | None, str, float | None]]) -> None:
        """Hold exactly ``rows`` (number, name, source, expires) from now on, without a file."""
        fresh: dict[str, _Entry] = {}
        for number, name, source, expires in rows:
            fresh[number] = (name, source, _INF if expires is None else expires)
        self._drop_file()
        self._overlay = fresh
        self._removed = set()
        self._count = len(fresh)

    def use_file(self, hf: HeldFile) -> None:
        """Hold exactly the answers of ``hf`` from now on (this object closes it)."""
        self._drop_file()
        self._file = hf
        self._table = hf.table
        self._sources = hf.sources
        self._overlay = {}
        self._removed = set()
        self._count = int(hf.table.count)
        for number, name, source, expires in hf.extra:
            self.put(number, name, source, expires)

    def adopt(self, other: UpstreamAnswers) -> None:
        """Take ``other``'s answers (base and overlay) whole; the tenant policies and the
        ``arrived`` hook stay. ``other`` must not be used afterwards."""
        if other is self:
            return
        if self._file is not other._file:
            self._drop_file()
        self._file = other._file
        self._table = other._table
        self._sources = other._sources
        self._overlay = other._overlay
        self._removed = other._removed
        self._count = other._count
        other._file = None
        other._table = None

    def close(self) -> None:
        """Unmap the base, if any; the answers are then those of the overlay alone."""
        self._drop_file()

    def _drop_file(self) -> None:
        hf = self._file
        self._file = None
        self._table = None
        self._sources = ()
        if hf is not None:
            hf.close()
