"""Snapshot files: round trip, and refusal of anything truncated, corrupt or foreign."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from cnamd.cache import snapshot
from cnamd.cache.trie import CacheBuilder, NameCache
from cnamd.errors import SnapshotError
from cnamd.model import GLOBAL_ONLY, LookupContext, LookupResult, Scope

NUMBER = "+492216698712"
META = b'{"last_change_id": 42}'


def built() -> NameCache:
    builder = CacheBuilder()
    builder.add(Scope.GLOBAL, 0, "+49", "Germany")
    builder.add(Scope.GLOBAL, 0, "+4922166987", "ACME Köln")
    builder.add(Scope.ENTERPRISE, 7, NUMBER, "Tenant name")
    builder.add(Scope.USER, 123456789, "+1", "Big user id")
    return builder.build()


@pytest.fixture
def saved(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "cache.snap"
    built().save(path, META)
    yield path


def opened(path: Path) -> NameCache:
    cache, _ = NameCache.open(path)
    return cache


def test_snapshot_round_trip_answers_like_the_original(saved: Path) -> None:
    original = built()
    cache, meta = NameCache.open(saved)
    try:
        assert meta == META
        assert cache.counts() == original.counts()
        assert set(cache.entries()) == set(original.entries())
        for ctx in (GLOBAL_ONLY, LookupContext(tenant_id=7, user_id=123456789)):
            for number in (NUMBER, "+4930", "+15551234", "+33"):
                assert cache.lookup(number, ctx) == original.lookup(number, ctx)
        assert cache.lookup(NUMBER, GLOBAL_ONLY) == LookupResult(
            "ACME Köln", "+4922166987", Scope.GLOBAL
        )
    finally:
        cache.close()


def test_snapshot_keeps_pending_changes(tmp_path: Path) -> None:
    cache = built()
    cache.delete(Scope.GLOBAL, 0, "+4922166987")
    cache.put(Scope.USERGROUP, 3, "+4922", "Group")
    cache.save(tmp_path / "s", b"")
    again = opened(tmp_path / "s")
    assert again.overlay_size == cache.overlay_size == 2
    assert again.counts() == cache.counts()
    assert set(again.entries()) == set(cache.entries())
    assert again.lookup(NUMBER, GLOBAL_ONLY) == LookupResult("Germany", "+49", Scope.GLOBAL)
    again.close()


def test_mapped_cache_saves_and_takes_changes(saved: Path, tmp_path: Path) -> None:
    cache = opened(saved)
    cache.put(Scope.GLOBAL, 0, "+4930", "Berlin")
    cache.save(saved, b"second")
    cache.close()
    again, meta = NameCache.open(saved)
    assert meta == b"second"
    assert again.get(Scope.GLOBAL, 0, "+4930") == "Berlin"
    assert again.compacted().get(Scope.GLOBAL, 0, "+4922166987") == "ACME Köln"
    again.close()


def test_empty_cache_round_trips(tmp_path: Path) -> None:
    CacheBuilder().build().save(tmp_path / "empty", b"")
    cache = opened(tmp_path / "empty")
    assert len(cache) == 0
    assert cache.lookup(NUMBER, GLOBAL_ONLY) is None
    cache.close()


def test_save_leaves_no_temp_file(saved: Path) -> None:
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]


def test_close_unmaps_and_empties(saved: Path) -> None:
    cache = opened(saved)
    cache.close()
    assert cache.lookup(NUMBER, GLOBAL_ONLY) is None
    cache.close()


def mapped(path: Path) -> bool:
    """Whether this process maps ``path`` (replaced or not)."""
    with open("/proc/self/maps") as maps:
        return any(str(path) in line for line in maps)


def test_retire_empties_now_and_unmaps_when_its_answer_runs(saved: Path) -> None:
    """What the feed splits: the cache is emptied on the loop, the snapshot unmapped (and a
    replaced file's pages freed) where the returned callable runs, here after a rename
    over the file, as the loader replaces a snapshot."""
    cache = opened(saved)
    saved.with_suffix(".new").write_bytes(saved.read_bytes())
    saved.with_suffix(".new").rename(saved)  # the mapped file is now a replaced one
    unmap = cache.retire()
    assert cache.lookup(NUMBER, GLOBAL_ONLY) is None
    assert mapped(saved)
    unmap()
    assert not mapped(saved)
    cache.close()  # idempotent after it


@pytest.mark.parametrize("keep", [0, 10, 40, 200, -1])
def test_truncated_snapshot_refused(saved: Path, keep: int) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[:keep])
    with pytest.raises(SnapshotError, match="truncated"):
        NameCache.open(saved)


def test_snapshot_with_trailing_garbage_refused(saved: Path) -> None:
    with saved.open("ab") as out:
        out.write(b"\0" * 100)
    with pytest.raises(SnapshotError, match="truncated or padded"):
        NameCache.open(saved)


def test_flipped_byte_refused(saved: Path) -> None:
    size = saved.stat().st_size
    for at in (12, 40, size // 2, size - 1):
        data = bytearray(saved.read_bytes())
        data[at] ^= 0x20
        flipped = saved.with_name(f"flipped-{at}")
        flipped.write_bytes(data)
        with pytest.raises(SnapshotError):
            NameCache.open(flipped)


def test_flipped_byte_in_the_body_is_reported_as_corrupt(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[len(data) // 2] ^= 1
    saved.write_bytes(data)
    with pytest.raises(SnapshotError, match="checksum"):
        NameCache.open(saved)


def test_foreign_file_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.write_bytes(os.urandom(4096))
    with pytest.raises(SnapshotError, match="not a cnamd snapshot"):
        NameCache.open(foreign)


def test_other_format_version_refused(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    struct.pack_into("<I", data, 12, snapshot.FORMAT_VERSION + 1)
    saved.write_bytes(data)
    with pytest.raises(SnapshotError, match="format version"):
        NameCache.open(saved)


def test_missing_snapshot_refused(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="cannot open"):
        NameCache.open(tmp_path / "absent")


def test_refused_snapshot_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "foreign"
    path.write_bytes(b"x" * 64)
    with pytest.raises(SnapshotError) as caught:
        NameCache.open(path)
    assert caught.value.field == str(path)


def test_closing_while_reading_entries_stops_the_reader(saved: Path) -> None:
    cache = opened(saved)
    entries = cache.entries()
    next(entries)
    cache.close()
    with pytest.raises(RuntimeError, match="closed"):
        next(entries)


def test_a_snapshot_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """Its metadata carries the API keys' secret hashes."""
    path = tmp_path / "snap"
    builder = CacheBuilder()
    builder.add(Scope.GLOBAL, 0, "+1212", "X")
    builder.build().save(path, b"{}")
    assert path.stat().st_mode & 0o777 == 0o600
