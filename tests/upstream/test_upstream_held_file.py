"""The held upstream answers' file (cache/held_file.py, cache/_held.c) and the
per-process overlay over it (cache/upstream.py): what a mapped base answers, that
a file of another format or a torn one is refused, and that changes since the
build win over the base, with the count kept true."""

from __future__ import annotations

import gc
import json
import math
import time
from pathlib import Path

import pytest

from cnamd.cache.held_file import FORMAT, HeldFile, write_held
from cnamd.cache.snapshot import write_sections
from cnamd.cache.upstream import NO_NAME, Held, UpstreamAnswers
from cnamd.errors import SnapshotError

NOW = 1_800_000_000.0
ROWS = [
    ("+13135550001", "Alice Upstream", "opencnam", NOW + 60),
    ("+13135550002", None, "opencnam", NOW + 60),  # a negative answer
    ("+13135550003", "Bob Pinned", "operator", None),
    ("+13135550004", "Élodie Gone", "telnyx", NOW - 1),  # expired, not yet swept
]


def written(tmp_path: Path, rows: list[tuple[str, str | None, str, float | None]]) -> Path:
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "cache.snapshot.upstream"
    write_held(path, rows, base_id="b1", last_change_id=42)
    return path


def test_a_mapped_file_answers_as_the_rows_say(tmp_path: Path) -> None:
    held = HeldFile.open(written(tmp_path, ROWS))
    try:
        assert (held.base_id, held.last_change_id, held.table.count) == ("b1", 42, 4)
        answers = UpstreamAnswers()
        answers.use_file(held)
        assert answers.get("+13135550001", NOW) == Held("Alice Upstream", "opencnam", NOW + 60)
        assert answers.get("+13135550002", NOW) == Held(None, "opencnam", NOW + 60)
        assert answers.get("+13135550003", NOW) == Held("Bob Pinned", "operator", math.inf)
        assert answers.get("+13135550004", NOW) is None  # expired
        assert answers.get("+13135550001", NOW + 60) is None  # expires at its instant
        for never in ("+13135550009", "+1313555000", "13135550001", "+1313555000x", ""):
            assert answers.get(never, NOW) is None
        assert len(answers) == 4  # held until swept, as the dict held them
    finally:
        answers.close()


def test_changes_since_the_build_win_and_the_count_stays_true(tmp_path: Path) -> None:
    answers = UpstreamAnswers()
    answers.use_file(HeldFile.open(written(tmp_path, ROWS)))
    try:
        answers.put("+13135550001", None, None, None)  # purged
        answers.put("+13135550002", "Now Known", "telnyx", NOW + 5)
        answers.put("+13135550005", "New One", "opencnam", NOW + 5)
        answers.put("+13135550099", None, None, None)  # removing what is not held
        assert answers.get("+13135550001", NOW) is None
        assert answers.get("+13135550002", NOW) == Held("Now Known", "telnyx", NOW + 5)
        assert answers.get("+13135550005", NOW) == Held("New One", "opencnam", NOW + 5)
        assert len(answers) == 4 and answers.overlay_size == 3
        answers.put("+13135550001", "Back Again", "opencnam", None)  # pinned after the purge
        assert answers.get("+13135550001", NOW + 1e9) == Held("Back Again", "opencnam", math.inf)
        assert len(answers) == 5
        arrived: list[str] = []
        answers.arrived = arrived.append
        fresh = UpstreamAnswers()
        fresh.use_file(HeldFile.open(written(tmp_path / "next", ROWS[:1])))
        answers.adopt(fresh)  # a new base: the overlay of the old one is gone with it
        assert answers.get("+13135550005", NOW) is None and len(answers) == 1
        answers.put("+13135550006", "Heard", "opencnam", NOW + 5)
        assert arrived == ["+13135550006"]
    finally:
        answers.close()


def _name_as_get_says(answers: UpstreamAnswers, number: str, now: float) -> str | None:
    held = answers.get(number, now)
    if held is None:
        return None
    return NO_NAME if held.name is None else held.name


def test_the_dips_probe_says_what_get_says(tmp_path: Path) -> None:
    """``name_of`` (the dip's probe, no Held built) against ``get``, file and overlay."""
    answers = UpstreamAnswers()
    answers.use_file(HeldFile.open(written(tmp_path, ROWS)))
    try:
        answers.put("+13135550001", None, None, None)  # purged from the base
        answers.put("+13135550003", None, "telnyx", NOW + 5)  # now negative, in the overlay
        answers.put("+13135550005", "New One", "opencnam", NOW + 5)
        answers.put("+13135550006", "Gone Soon", "opencnam", NOW - 5)  # expired overlay
        numbers = [f"+131355500{i:02d}" for i in range(10)] + ["+1313555000x", "", "13135550002"]
        for now in (NOW - 100, NOW, NOW + 5, NOW + 60, NOW + 1e9):
            for number in numbers:
                assert answers.name_of(number, now) == _name_as_get_says(answers, number, now)
        assert answers.name_of("+13135550002", NOW) == NO_NAME
        assert answers.name_of("+13135550005", NOW) == "New One"
        overlay = UpstreamAnswers()
        overlay.replace(ROWS)
        for number in numbers:
            assert overlay.name_of(number, NOW) == _name_as_get_says(overlay, number, NOW)
    finally:
        answers.close()


def test_a_pure_overlay_holds_everything_without_a_file() -> None:
    answers = UpstreamAnswers()
    answers.replace(ROWS)
    assert answers.get("+13135550003", NOW) == Held("Bob Pinned", "operator", math.inf)
    assert len(answers) == 4 and not answers.mapped


@pytest.mark.parametrize("cut", [1, 40, 200, -1])
def test_a_torn_file_is_refused(tmp_path: Path, cut: int) -> None:
    path = written(tmp_path, ROWS)
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut > 0 else data[:-1])
    with pytest.raises(SnapshotError):
        HeldFile.open(path)


def test_a_flipped_byte_is_refused(tmp_path: Path) -> None:
    path = written(tmp_path, ROWS)
    data = bytearray(path.read_bytes())
    data[200] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="checksum"):
        HeldFile.open(path)


def test_a_file_of_another_format_is_refused(tmp_path: Path) -> None:
    path = written(tmp_path, ROWS)
    held = HeldFile.open(path)
    table = bytes(held.snapshot.view(b"UPST"))
    held.close()
    meta = {"format": FORMAT + 1, "base_id": "b1", "last_change_id": 1, "sources": [], "extra": []}
    write_sections(
        path, [(b"UPST", memoryview(table)), (b"META", memoryview(json.dumps(meta).encode()))]
    )
    with pytest.raises(SnapshotError, match="format"):
        HeldFile.open(path)
    wrong = bytearray(table)
    wrong[4] = 9  # the table's own version
    meta["format"] = FORMAT
    write_sections(
        path, [(b"UPST", memoryview(wrong)), (b"META", memoryview(json.dumps(meta).encode()))]
    )
    with pytest.raises(SnapshotError, match="version"):
        HeldFile.open(path)


def test_a_large_table_probes_every_number(tmp_path: Path) -> None:
    rows = [(f"+1414{i:07d}", f"N {i}", f"s{i % 3}", NOW + 1 + i) for i in range(20000)]
    answers = UpstreamAnswers()
    answers.use_file(HeldFile.open(written(tmp_path, rows)))
    try:
        started = time.perf_counter()
        for number, name, source, expires in rows:
            assert answers.get(number, NOW) == Held(name, source, expires)
            assert answers.name_of(number, NOW) == name
        assert time.perf_counter() - started < 30  # bounded, not a benchmark
        assert answers.get("+14140020000", NOW) is None
    finally:
        answers.close()


def test_the_overlays_answers_leave_the_collectors_walk() -> None:
    """Answers put in the overlay are untracked by the collector once it has seen them,
    so a full pass after a burst of upstream answers does not walk them (a ``Held``
    per answer was most of what it walked then: bench/README.md)."""
    answers = UpstreamAnswers()
    gc.collect()
    before = len(gc.get_objects())
    for i in range(5000):
        answers.put(f"+1414{i:07d}", f"Burst {i}" if i % 3 else None, "slow", NOW + 60)
    answers.put("+14149999999", "Pinned", "operator", None)
    gc.collect()
    assert len(gc.get_objects()) - before < 50
    assert answers.get("+14140000001", NOW) == Held("Burst 1", "slow", NOW + 60)
    assert answers.get("+14140000003", NOW) == Held(None, "slow", NOW + 60)
    assert answers.name_of("+14140000003", NOW) == NO_NAME
    assert answers.get("+14149999999", NOW + 1e9) == Held("Pinned", "operator", math.inf)
    assert answers.get("+14140000001", NOW + 61) is None  # expired
    assert len(answers) == 5001
