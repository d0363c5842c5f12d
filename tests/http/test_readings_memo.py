"""The lookups' memo of number readings (http/answers.readings): the same answers as
number_readings, refusals included, bounded, and invisible to the collector."""

from __future__ import annotations

import gc

import pytest

from cnamd.errors import InvalidNumber
from cnamd.http import answers
from cnamd.numbers import number_readings


def refusal(raw: str, region: str | None) -> tuple[str, str, str | None]:
    with pytest.raises(InvalidNumber) as caught:
        answers.readings(raw, region)
    return caught.value.reason, caught.value.status, caught.value.field


@pytest.fixture(autouse=True)
def empty_memo() -> None:
    answers._READINGS.clear()
    answers._REFUSALS.clear()


def test_readings_and_refusals_are_number_readings_twice() -> None:
    for _ in range(2):  # computed, then remembered
        assert answers.readings("12125550123", "US") == number_readings("12125550123", "US")
        assert answers.readings("+492216698712", None) == ("+492216698712",)
        with pytest.raises(InvalidNumber) as direct:
            number_readings("19576339411", "US")
        assert refusal("19576339411", "US") == (direct.value.reason, "invalid-phone", "number")
        assert refusal("abc", "US")[1:] == ("invalid-phone", "number")
    assert len(answers._READINGS) == 2 and len(answers._REFUSALS) == 2


def test_the_memo_starts_over_at_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(answers, "READINGS_MEMO", 4)
    for n in range(10):
        answers.readings(f"+1212555{n:04d}", None)
        refusal(f"1957633{n:04d}", "US")
        assert len(answers._READINGS) + len(answers._REFUSALS) <= 4


def test_remembered_entries_leave_the_collector_after_its_first_pass() -> None:
    """Exact tuples of strings only: a memo of 16,384 objects the collector kept
    tracking made full collections of 35 ms during the benchmark."""
    answers.readings("12125550123", "US")
    refusal("19576339411", "US")
    gc.collect()
    for memo in (answers._READINGS, answers._REFUSALS):
        for key, value in memo.items():
            assert not gc.is_tracked(key) and not gc.is_tracked(value), (key, value)
