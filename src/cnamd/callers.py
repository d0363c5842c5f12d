"""The SIP dip's question answered from the Directory (implements ``lookup.CallerNames``).

Composition glue: the SIP front knows nothing of caches and the cache knows
nothing of SIP; only the server wires this in. Pre-bound metric children and
no exceptions: this runs once per INVITE, so counts are tallied in plain ints
(``metrics.Tally``) and flushed every second.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter

from cnamd import metrics
from cnamd.cache.directory import NAMELESS, Directory
from cnamd.cache.upstream import UpstreamAnswers
from cnamd.lookup import NameAnswer, NameKind, UpstreamAsker
from cnamd.model import Scope

_INVALID = NameAnswer(NameKind.INVALID)


class DirectoryCallers:
    """``CallerNames`` over the live Directory and the held upstream answers (read by
    ``Directory.caller_lookup``), then (PENDING) the upstream chain within ``deadline``;
    each lookup counted once."""

    def __init__(
        self,
        directory: Directory,
        upstream: UpstreamAnswers | None = None,
        chain: UpstreamAsker | None = None,
        deadline: float = 0.5,
    ) -> None:
        self.directory = directory
        self.upstream = upstream
        self.chain = chain
        self.deadline = deadline
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
        upstream = self.upstream
        number, found, ctx = self.directory.caller_lookup(calling, called, source_ip, upstream)
        self._duration.observe(perf_counter() - started)
        if number is None:
            self._invalid.n += 1
            return _INVALID
        if found is None:
            chain = self.chain
            if upstream is not None and chain is not None and chain.wants(number):
                tenant = None if ctx is None else ctx.tenant_id
                if upstream.serves(tenant):
                    return NameAnswer(NameKind.PENDING, number=number, tenant=tenant)
            self._miss.n += 1
            return NameAnswer(NameKind.MISS, number=number)
        if found is NAMELESS:  # held from upstream: known to have no name
            self._miss.n += 1
            return NameAnswer(NameKind.MISS, number=number)
        self._hit[found.scope].n += 1
        return NameAnswer(NameKind.HIT, found.name, number)

    def later(self, pending: NameAnswer, done: Callable[[NameAnswer], None]) -> None:
        number = pending.number
        chain = self.chain
        if chain is None:
            self._miss.n += 1
            done(NameAnswer(NameKind.MISS, number=number))
            return

        def settled(name: str | None, _source: str | None) -> None:
            if name is None:
                self._miss.n += 1
                done(NameAnswer(NameKind.MISS, number=number))
            else:
                self._hit[Scope.UPSTREAM].n += 1
                done(NameAnswer(NameKind.HIT, name, number))

        accounts = None
        upstream = self.upstream
        if pending.tenant is not None and upstream is not None:
            accounts = upstream.accounts.get(pending.tenant)
        chain.later(number, self.deadline, "sip", settled, accounts)
