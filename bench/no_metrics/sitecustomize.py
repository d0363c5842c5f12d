"""cnamd with its SIP-path metrics stubbed out, for bench/sip_metrics_cost.sh only.

Put on PYTHONPATH, Python imports this at start-up in every cnamd process: the
dip's and the lookups' tallies become no-ops and ``DirectoryCallers`` stops
timing lookups, so the difference in CPU per dip against a normal run is what
the metrics cost. (The dip's ``n += 1`` on a stub stays: ~20 ns.)
"""

from __future__ import annotations

from cnamd import callers, metrics
from cnamd.sip.dip import NameAnswer, NameKind


class _Null:
    __slots__ = ("n",)

    def __init__(self, *_args: object) -> None:
        self.n = 0

    def inc(self, amount: int = 1) -> None:
        pass

    def observe(self, value: float) -> None:
        pass

    def flush(self) -> None:
        pass


def _caller_name(
    self: callers.DirectoryCallers, calling: str, called: str, source_ip: str
) -> NameAnswer:
    number, found = self.directory.caller_lookup(calling, called, source_ip)
    if number is None:
        return callers._INVALID
    if found is None:
        return NameAnswer(NameKind.MISS, number=number)
    return NameAnswer(NameKind.HIT, found.name, number)


metrics.Tally = _Null  # type: ignore[misc,assignment]
metrics.TallyHistogram = _Null  # type: ignore[misc,assignment]
callers.DirectoryCallers.caller_name = _caller_name  # type: ignore[method-assign]
