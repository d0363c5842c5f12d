"""The per-source token bucket: pure, clock passed in, bounded table."""

from __future__ import annotations

import pytest

from cnamd.ratelimit import TokenBucket


def test_burst_is_allowed_then_refused_until_tokens_refill() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    assert [bucket.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.allow("a", 0.05) is False
    assert bucket.allow("a", 0.1) is True


def test_sources_are_metered_separately() -> None:
    bucket = TokenBucket(rate=1, burst=1)
    assert bucket.allow("a", 0.0) and bucket.allow("b", 0.0)
    assert not bucket.allow("a", 0.0)


def test_tokens_never_exceed_the_burst() -> None:
    bucket = TokenBucket(rate=100, burst=2)
    bucket.allow("a", 0.0)
    assert [bucket.allow("a", 1000.0) for _ in range(3)] == [True, True, False]


def test_clock_going_backwards_does_not_mint_tokens() -> None:
    bucket = TokenBucket(rate=1, burst=1)
    assert bucket.allow("a", 10.0)
    assert not bucket.allow("a", 5.0)
    assert not bucket.allow("a", 10.5)


def test_table_is_bounded_and_forgets_the_least_recently_seen() -> None:
    bucket = TokenBucket(rate=1, burst=1, max_sources=100)
    bucket.allow("busy", 0.0)
    for i in range(10_000):
        bucket.allow(f"10.0.{i // 256}.{i % 256}", 0.0)
        if i % 50 == 0:
            bucket.allow("busy", 0.0)  # keeps being seen: keeps its debt
        assert len(bucket) <= 100
    assert not bucket.allow("busy", 0.0)


def test_retry_after_is_the_time_to_one_token() -> None:
    assert TokenBucket(rate=0.1, burst=1).retry_after == 10
    assert TokenBucket(rate=50, burst=1).retry_after == 1


@pytest.mark.parametrize(("rate", "burst", "size"), [(0, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_bad_parameters_are_refused(rate: float, burst: float, size: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, size)
