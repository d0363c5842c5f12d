"""What the metrics cost one SIP dip, in microseconds, without sockets.

Times ``Dip.answer`` on the anchor's INVITE through ``DirectoryCallers`` (the
product's lookup glue, over a real directory holding the one caller) with the
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
from cnamd.cache.contexts import Contexts
from cnamd.cache.directory import Directory
from cnamd.cache.trie import CacheBuilder
from cnamd.callers import DirectoryCallers
from cnamd.model import ContextRows, Digest, Scope
from cnamd.sip import Dip, DipSettings

sys.path.insert(0, os.path.dirname(__file__))
from bench_sip_parse import INVITE

ROUNDS = 15
LOOPS = 20000
SOURCE = ("127.0.0.1", 5061)
CALLER = "+492216698712"


def one_entry_directory() -> Directory:
    """A real Directory holding the INVITE's caller (the global directory, no tenants)."""
    builder = CacheBuilder()
    builder.add(Scope.GLOBAL, 0, CALLER, "John Doe")
    directory = Directory()
    directory.install(
        builder.build(),
        Contexts(ContextRows([], [], [], [], []), ["0.0.0.0/0"]),
        Digest(0, 0, 0),
        stale=False,
    )
    return directory


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


def build(stubbed: bool) -> Dip:
    """The dip as shipped, or with every tally it and its lookup glue make a no-op
    (the lookup's two perf_counter() calls stay: ~0.1 us)."""
    tally, histogram = metrics.Tally, metrics.TallyHistogram
    if stubbed:
        metrics.Tally = metrics.TallyHistogram = Null  # type: ignore[misc,assignment]
    try:
        return Dip(DipSettings(), DirectoryCallers(one_entry_directory()))
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
