"""The SIP dip's question answered from the Directory (implements ``sip.dip.CallerNames``).

Composition glue: the SIP front knows nothing of caches and the cache knows
nothing of SIP; only the server wires this in. Pre-bound metric children and
no exceptions: this runs once per INVITE.
"""

from __future__ import annotations

import time

from cnamd import metrics
from cnamd.cache.directory import Directory
from cnamd.model import Scope
from cnamd.sip.dip import NameAnswer, NameKind

_INVALID = NameAnswer(NameKind.INVALID)


class DirectoryCallers:
    """``CallerNames`` over the live Directory, counting each lookup once."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self._hit = {scope: metrics.LOOKUPS.labels("sip", "hit", scope.label) for scope in Scope}
        self._miss = metrics.LOOKUPS.labels("sip", "miss", "none")
        self._invalid = metrics.LOOKUPS.labels("sip", "invalid", "none")
        self._denied = metrics.LOOKUPS.labels("sip", "denied", "none")
        self._duration = metrics.LOOKUP_DURATION.labels("sip")

    def admit(self, source_ip: str) -> bool:
        if self.directory.admit(source_ip):
            return True
        self._denied.inc()
        return False

    def caller_name(self, calling: str, called: str, source_ip: str) -> NameAnswer:
        started = time.perf_counter()
        number, found = self.directory.caller_lookup(calling, called, source_ip)
        self._duration.observe(time.perf_counter() - started)
        if number is None:
            self._invalid.inc()
            return _INVALID
        if found is None:
            self._miss.inc()
            return NameAnswer(NameKind.MISS, number=number)
        self._hit[found.scope].inc()
        return NameAnswer(NameKind.HIT, found.name, number)
