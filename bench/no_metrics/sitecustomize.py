"""cnamd with its SIP-path metrics stubbed out, for bench/sip_metrics_cost.sh only.

Put on PYTHONPATH, Python imports this at start-up in every cnamd process: the
dip's and the lookups' tallies become no-ops, so the difference in CPU per dip
against a normal run is what the metrics cost. (The dip's ``n += 1`` on a stub
stays, ~20 ns, and so do the lookup's two perf_counter() calls, ~0.1 us:
``DirectoryCallers`` is compiled, and its methods cannot be replaced.)
"""

from __future__ import annotations

from cnamd import metrics


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


metrics.Tally = _Null  # type: ignore[misc,assignment]
metrics.TallyHistogram = _Null  # type: ignore[misc,assignment]
