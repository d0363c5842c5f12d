"""Hot-path tallies end up in the metrics exactly as direct calls would have."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram

from cnamd import metrics


def samples(registry: CollectorRegistry, name: str) -> dict[str, float]:
    found = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.startswith(name) and not sample.name.endswith("_created"):
                found[sample.name + str(sorted(sample.labels.items()))] = sample.value
    return found


def test_tally_histogram_flush_equals_observe() -> None:
    direct_reg, tallied_reg = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("d", "x", buckets=metrics.LOOKUP_BUCKETS, registry=direct_reg)
    tallied = Histogram("d", "x", buckets=metrics.LOOKUP_BUCKETS, registry=tallied_reg)
    tally = metrics.TallyHistogram(tallied, metrics.LOOKUP_BUCKETS)
    rng = random.Random(3)
    values = [rng.choice([0.0, 0.00001, 0.0004, 0.003, 2.0]) * rng.random() for _ in range(500)]
    values += list(metrics.LOOKUP_BUCKETS)  # exactly on every bound: "le" is inclusive
    for value in values:
        direct.observe(value)
        tally.observe(value)
    tally.flush()
    tally.flush()  # a second flush adds nothing
    got, want = samples(tallied_reg, "d"), samples(direct_reg, "d")
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert abs(got[key] - value) < 1e-9, key


def test_tally_counts_reach_the_counter_on_flush() -> None:
    registry = CollectorRegistry()
    counter = Counter("c", "x", registry=registry)
    tally = metrics.Tally(counter)
    for _ in range(7):
        tally.n += 1
    assert samples(registry, "c_total")["c_total[]"] == 0
    metrics.flush_tallies()
    assert samples(registry, "c_total")["c_total[]"] == 7
    metrics.flush_tallies()
    assert samples(registry, "c_total")["c_total[]"] == 7
