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
from cnamd.cache.directory import Directory
from cnamd.cache.upstream import UpstreamAnswers
from cnamd.lookup import NameAnswer, NameKind, UpstreamAsker
from cnamd.model import Scope

_INVALID = NameAnswer(NameKind.INVALID)


class DirectoryCallers:
    """``CallerNames`` over the live Directory, then the held upstream answers, then
    (PENDING) the upstream chain within ``deadline``; each lookup counted once."""

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
        #: (number, asking tenant) of the PENDING answer just given, for later()
        self._pending: tuple[str, int | None] | None = None
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
            upstream = self.upstream
            tenant = None
            if upstream is not None and (upstream.off_tenants or upstream.accounts):
                tenant = self._tenant(called, source_ip)
            if upstream is not None and (
                not upstream.off_tenants or tenant not in upstream.off_tenants
            ):
                held = upstream.get(number)
                if held is not None:
                    if held.name is None:  # a negative answer: known to have no name
                        self._miss.n += 1
                        return NameAnswer(NameKind.MISS, number=number)
                    self._hit[Scope.UPSTREAM].n += 1
                    return NameAnswer(NameKind.HIT, held.name, number)
                chain = self.chain
                if chain is not None and chain.wants(number):
                    # the dip calls later() for this answer at once, in the same call
                    self._pending = (number, tenant)
                    return NameAnswer(NameKind.PENDING, number=number)
            self._miss.n += 1
            return NameAnswer(NameKind.MISS, number=number)
        self._hit[found.scope].n += 1
        return NameAnswer(NameKind.HIT, found.name, number)

    def _tenant(self, called: str, source_ip: str) -> int | None:
        """The asking tenant, chosen as ``Directory.caller_lookup`` chooses the context."""
        contexts = self.directory.contexts
        if contexts is None:
            return None
        owner = contexts.called_context(called)
        if owner is None and called and called[0] != "+":
            owner = contexts.called_context("+" + called)
        ctx = owner if owner is not None else contexts.source_context(source_ip)
        return ctx.tenant_id

    def later(self, number: str, done: Callable[[NameAnswer], None]) -> None:
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
        pending, self._pending = self._pending, None
        upstream = self.upstream
        if pending is not None and pending[0] == number and pending[1] is not None and upstream:
            accounts = upstream.accounts.get(pending[1])
        chain.later(number, self.deadline, "sip", settled, accounts)
