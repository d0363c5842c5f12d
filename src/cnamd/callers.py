"""The SIP dip's question answered from the Directory (implements ``lookup.CallerNames``).

Composition glue: the SIP front knows nothing of caches and the cache knows
nothing of SIP; only the server wires this in. Pre-bound metric children and
no exceptions: this runs once per INVITE, so counts are tallied in plain ints
(``metrics.Tally``) and flushed every second.
"""

from __future__ import annotations

from time import perf_counter

from cnamd import metrics
from cnamd.cache.directory import Directory
from cnamd.lookup import NameAnswer, NameKind
from cnamd.model import Scope

_INVALID = NameAnswer(NameKind.INVALID)


class DirectoryCallers:
    """``CallerNames`` over the live Directory, counting each lookup once."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        tally = metrics.Tally
        self._hit = {s: tally(metrics.LOOKUPS.labels("sip", "hit", s.label)) for s in Scope}
        self._miss = tally(metrics.LOOKUPS.labels("sip", "miss", "none"))
        self._invalid = tally(metrics.LOOKUPS.labels("sip", "invalid", "none"))
        self._denied = tally(metrics.LOOKUPS.labels("sip", "denied", "none"))
        self._duration = metrics.TallyHistogram(
            metrics.LOOKUP_DURATION.labels("sip"), metrics.LOOKUP_BUCKETS
        )

    def admit(self, source_ip: str) -> bool:
        if self.directory.admit(source_ip):
            return True
        self._denied.inc()
        return False

    def caller_name(self, calling: str, called: str, source_ip: str) -> NameAnswer:
        started = perf_counter()
        number, found = self.directory.caller_lookup(calling, called, source_ip)
        self._duration.observe(perf_counter() - started)
        if number is None:
            self._invalid.n += 1
            return _INVALID
        if found is None:
            self._miss.n += 1
            return NameAnswer(NameKind.MISS, number=number)
        self._hit[found.scope].n += 1
        return NameAnswer(NameKind.HIT, found.name, number)
