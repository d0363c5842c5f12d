"""Per-source limits in a region shared by processes: TokenBucket's rules, one table
for every process that maps it, and a limit that holds under concurrent load."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from cnamd import sharedlimits
from cnamd.sharedlimits import LimitRegion

pytestmark = pytest.mark.skipif(
    sharedlimits.SharedBucket is None, reason="built without the C extension"
)


@pytest.fixture
def region() -> Iterator[LimitRegion]:
    made = LimitRegion.create(slots=1024)
    yield made
    made.close()


def test_burst_is_allowed_then_refused_until_tokens_refill(region: LimitRegion) -> None:
    bucket = region.bucket("sip", rate=10, burst=3)
    assert [bucket.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.allow("a", 0.05) is False
    assert bucket.allow("a", 0.1) is True


def test_sources_are_metered_separately(region: LimitRegion) -> None:
    bucket = region.bucket("sip", rate=1, burst=1)
    assert bucket.allow("a", 0.0) and bucket.allow("b", 0.0)
    assert not bucket.allow("a", 0.0)


def test_tokens_never_exceed_the_burst(region: LimitRegion) -> None:
    bucket = region.bucket("sip", rate=100, burst=2)
    bucket.allow("a", 0.0)
    assert [bucket.allow("a", 1000.0) for _ in range(3)] == [True, True, False]


def test_clock_going_backwards_does_not_mint_tokens(region: LimitRegion) -> None:
    bucket = region.bucket("sip", rate=1, burst=1)
    assert bucket.allow("a", 10.0)
    assert not bucket.allow("a", 5.0)
    assert not bucket.allow("a", 10.5)
    assert bucket.allow("a", 11.0)


def test_available_counts_tokens_without_taking_one(region: LimitRegion) -> None:
    bucket = region.bucket("auth", rate=1, burst=10)
    assert bucket.available("a", 0.0) == 10
    for _ in range(10):
        bucket.allow("a", 0.0)
    assert bucket.available("a", 0.0) == 0
    assert bucket.available("a", 2.5) == pytest.approx(2.5)
    assert bucket.available("a", 2.5) == pytest.approx(2.5)


def test_the_tables_of_a_region_are_separate(region: LimitRegion) -> None:
    sip, auth = region.bucket("sip", 1, 1), region.bucket("auth", 1, 1)
    assert sip.allow("a", 0.0) and not sip.allow("a", 0.0)
    assert auth.allow("a", 0.0)


def test_retune_keeps_each_sources_debt_and_reasking_returns_the_same_bucket(
    region: LimitRegion,
) -> None:
    bucket = region.bucket("sip", rate=1, burst=2)
    assert bucket.allow("a", 0.0) and bucket.allow("a", 0.0)
    again = region.bucket("sip", rate=2, burst=2)
    assert again is bucket and (bucket.rate, bucket.retry_after) == (2.0, 1)
    assert not bucket.allow("a", 0.0)
    assert bucket.allow("a", 1.5)  # the debt (2 s) is kept as time; the new burst is 1 s


def test_a_busy_source_keeps_its_debt_while_a_flood_of_sources_passes(
    region: LimitRegion,
) -> None:
    bucket = region.bucket("sip", rate=1, burst=5)
    for _ in range(5):
        bucket.allow("busy", 0.0)
    for i in range(20_000):  # 20x the table: every window overflows many times
        assert bucket.allow(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 0.0)
        if i % 50 == 0:
            bucket.allow("busy", 0.0)  # keeps sending: keeps its debt
    assert not bucket.allow("busy", 0.0)


def test_a_second_mapping_of_the_descriptor_sees_the_same_buckets(region: LimitRegion) -> None:
    other = LimitRegion.attach(os.dup(region.fd))
    try:
        mine, theirs = region.bucket("sip", 1, 2), other.bucket("sip", 1, 2)
        assert mine.allow("a", 0.0) and theirs.allow("a", 0.0)
        assert not mine.allow("a", 0.0) and not theirs.allow("a", 0.0)
    finally:
        other.close()


def test_a_descriptor_that_is_not_a_region_is_refused() -> None:
    fd = os.memfd_create("not-limits")
    os.ftruncate(fd, 8192)
    try:
        with pytest.raises(ValueError, match="not a limits region"):
            LimitRegion.attach(fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (1, 0), (-1, 5)])
def test_bad_parameters_are_refused(region: LimitRegion, rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        region.bucket("sip", rate, burst)


HAMMER = """
import os, sys, time
from cnamd.sharedlimits import LimitRegion
region = LimitRegion.attach(int(sys.argv[1]))
bucket = region.bucket("sip", float(sys.argv[2]), float(sys.argv[3]))
start = float(sys.argv[4])
while time.monotonic() < start:
    pass
end = start + float(sys.argv[5])
allowed = tried = 0
while (now := time.monotonic()) < end:
    tried += 1
    allowed += bucket.allow("198.51.100.7", now)
print(allowed, tried)
"""


@pytest.mark.timeout(60)
def test_processes_hammering_one_source_together_get_the_limit_not_a_multiple(
    region: LimitRegion,
) -> None:
    rate, burst, seconds = 2000.0, 100.0, 1.5
    start = time.monotonic() + 1.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HAMMER, *map(str, (region.fd, rate, burst, start, seconds))],
            pass_fds=[region.fd],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [tuple(map(int, p.communicate(timeout=30)[0].split())) for p in procs]
    allowed = sum(a for a, _ in results)
    assert all(tried > 10 * rate * seconds / 3 for _, tried in results), results  # real load
    assert burst + rate * seconds * 0.8 <= allowed <= burst + rate * seconds * 1.02, results
