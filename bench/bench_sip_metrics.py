"""What the metrics cost one SIP dip, in microseconds, without sockets.

Times ``Dip.answer`` on the anchor's INVITE through ``DirectoryCallers`` (the
product's lookup glue, over a directory that answers at once) with the
metrics as shipped (tallies in the dip, a timed and tallied lookup) and with
them stubbed out, as ``bench/no_metrics/sitecustomize.py`` does for the
daemon. The two alternate ROUNDS times and the best of each is kept, so a
busy machine hurts both alike. Runs in multiprocess mode, as a worker does,
and also times the once-a-second flush. Divide the difference by a dip's
whole CPU cost (``bench/sip_metrics_cost.sh``) for the share.

Reproduce: ``.venv/bin/python bench/bench_sip_metrics.py``
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-metrics-")

from cnamd import metrics
from cnamd.callers import DirectoryCallers
from cnamd.model import LookupResult, Scope
from cnamd.sip import Dip, DipSettings, NameAnswer, NameKind

sys.path.insert(0, os.path.dirname(__file__))
from bench_sip_parse import INVITE

ROUNDS = 15
LOOPS = 20000
SOURCE = ("127.0.0.1", 5061)
FOUND = ("+492216698712", LookupResult("John Doe", "+4922166987", Scope.ENTERPRISE))


class InstantDirectory:
    """The Directory's two calls the dip makes, answered at once."""

    def admit(self, source_ip: str) -> bool:
        return True

    def caller_lookup(self, calling: str, called: str, source_ip: str) -> object:
        return FOUND


class Null:
    """A tally that counts nothing."""

    __slots__ = ("n",)

    def __init__(self, *_args: object) -> None:
        self.n = 0

    def inc(self, amount: int = 1) -> None:
        pass

    def observe(self, value: float) -> None:
        pass

    def flush(self) -> None:
        pass


class UntimedCallers(DirectoryCallers):
    """DirectoryCallers without its lookup timing and tallies."""

    def caller_name(self, calling: str, called: str, source_ip: str) -> NameAnswer:
        number, found = self.directory.caller_lookup(calling, called, source_ip)
        if number is None:
            return NameAnswer(NameKind.INVALID)
        if found is None:
            return NameAnswer(NameKind.MISS, number=number)
        return NameAnswer(NameKind.HIT, found.name, number)


def build(stubbed: bool) -> Dip:
    tally, histogram = metrics.Tally, metrics.TallyHistogram
    if stubbed:
        metrics.Tally = metrics.TallyHistogram = Null  # type: ignore[misc,assignment]
    try:
        callers = (UntimedCallers if stubbed else DirectoryCallers)(InstantDirectory())  # type: ignore[arg-type]
        return Dip(DipSettings(), callers)
    finally:
        metrics.Tally, metrics.TallyHistogram = tally, histogram  # type: ignore[misc]


def per_call_us(dip: Dip) -> float:
    answer = dip.answer
    t = time.perf_counter()
    for _ in range(LOOPS):
        answer(INVITE, SOURCE, "udp")
    return (time.perf_counter() - t) / LOOPS * 1e6


def flush_us(dip: Dip) -> float:
    """One flush_tallies() with the dip's tallies dirty (a busy second), best of 20."""
    best = float("inf")
    for _ in range(20):
        for _ in range(100):
            dip.answer(INVITE, SOURCE, "udp")
        t = time.perf_counter()
        metrics.flush_tallies()
        best = min(best, time.perf_counter() - t)
    return best * 1e6


def main() -> None:
    shipped, stubbed = build(False), build(True)
    assert shipped.answer(INVITE, SOURCE, "udp") == stubbed.answer(INVITE, SOURCE, "udp")
    best = {"shipped": float("inf"), "stubbed": float("inf")}
    for _ in range(ROUNDS):
        best["shipped"] = min(best["shipped"], per_call_us(shipped))
        best["stubbed"] = min(best["stubbed"], per_call_us(stubbed))
    cost = best["shipped"] - best["stubbed"]
    compiled = (sys.modules[Dip.__module__].__file__ or "").endswith(".so")
    print(f"python {sys.version.split()[0]}, dip compiled by mypyc: {compiled}")
    print(f"Dip.answer INVITE -> 302, metrics as shipped   {best['shipped']:6.2f} us")
    print(f"Dip.answer INVITE -> 302, metrics stubbed out  {best['stubbed']:6.2f} us")
    print(f"metrics per dip                                {cost:6.2f} us")
    print(f"flush_tallies() once a second (multiprocess)   {flush_us(shipped):6.1f} us")
    print("reproduce: .venv/bin/python bench/bench_sip_metrics.py")


if __name__ == "__main__":
    main()
