"""The global directory's hash index (cache/_index.c): same answers as the trie, and a
damaged section refused rather than read out of bounds."""

from __future__ import annotations

import os
import struct
from array import array
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnamd.cache import snapshot, trie
from cnamd.cache.trie import CacheBuilder, NameCache
from cnamd.errors import SnapshotError
from cnamd.model import GLOBAL_ONLY, LookupContext, Scope

if os.environ.get("CNAMD_PURE_PYTHON"):
    pytest.skip("pure build asked for: the trie answers alone", allow_module_level=True)

from cnamd.cache import _index

# Short keys from few digits share prefixes (and leading zeros); long ones fill the length range.
KEYS = (
    st.text("012", min_size=1, max_size=5) | st.text("0123456789", min_size=6, max_size=15)
).map(lambda digits: "+" + digits)
QUERIES = st.one_of(
    KEYS.flatmap(lambda key: st.text("0129x\u0663", max_size=5).map(lambda tail: key + tail)),
    st.text("+0129", max_size=20),
    st.just("+" + "1" * 20),
)


def section(keys: dict[str, int], namespace: str = "d0") -> bytes:
    return _index.build([(namespace + key, key_id) for key, key_id in keys.items()], namespace)


def index_over(names: list[str], keys: list[str]) -> _index.Index:
    """An index whose key i names names[i], with refs and blob laid out like the cache's."""
    blob = bytearray()
    refs = array("Q")
    for name in names:
        raw = name.encode()
        refs.append(len(blob) << 16 | len(raw))
        blob += raw
    return _index.Index(section({key: i for i, key in enumerate(keys)}), refs, bytes(blob))


def longest(keys: list[str], names: list[str], number: str) -> tuple[str, int] | None:
    """Brute force: the longest key that prefixes ``number``."""
    found = [(len(key), names[i]) for i, key in enumerate(keys) if number.startswith(key)]
    return (max(found)[1], max(found)[0]) if found else None


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(KEYS, unique=True, max_size=60), queries=st.lists(QUERIES, max_size=20))
def test_match_is_the_longest_key_prefixing_the_number(keys: list[str], queries: list[str]) -> None:
    names = [f"name {i} ü" for i in range(len(keys))]
    index = index_over(names, keys)
    assert index.count == len(keys)
    for number in queries + keys:
        assert index.match(number) == longest(keys, names, number), number


def test_only_the_namespaces_plain_keys_are_indexed() -> None:
    items = [("d0+49", 0), ("e7+49", 1), ("d0+4x", 2), ("d0", 3), ("d0+", 4), ("d01+5", 5)]
    items += [("d0+" + "1" * 16, 6), ("d0+\u0661", 7)]
    index = _index.Index(_index.build(items, "d0"), array("Q", [1] * 8), b"n")
    assert index.count == 1
    assert index.match("+491") == ("n", 3)
    assert index.match("+5") is None


def test_build_refuses_a_key_twice_and_bad_items() -> None:
    with pytest.raises(ValueError, match="given twice"):
        _index.build([("d0+1", 0), ("d0+1", 1)], "d0")
    with pytest.raises(TypeError):
        _index.build([("d0+1",)], "d0")  # type: ignore[list-item]
    with pytest.raises(OverflowError):
        _index.build([("d0+1", 2**32)], "d0")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda raw: raw[:16], "shorter than its header"),
        (lambda raw: b"XXXX" + raw[4:], "unknown magic"),
        (lambda raw: raw[:-4], "size disagrees"),
        (lambda raw: raw[:8] + struct.pack("<Q", 1) + raw[16:], "capacity out of range"),
    ],
)
def test_a_damaged_header_is_refused(damage: object, reason: str) -> None:
    raw = section({"+49": 0, "+4922": 1})
    with pytest.raises(ValueError, match=reason):
        _index.Index(damage(raw), array("Q", [1, 1]), b"n")  # type: ignore[operator]


def test_references_past_the_arrays_are_an_error_not_a_read() -> None:
    """The content is the CRC's to guard; what match() follows, it checks."""
    past_refs = _index.Index(section({"+49": 5}), array("Q", [1]), b"n")
    with pytest.raises(ValueError, match="past its arrays"):
        past_refs.match("+491")
    past_names = _index.Index(section({"+49": 0}), array("Q", [(10 << 16) | 1]), b"n")
    with pytest.raises(ValueError, match="past its arrays"):
        past_names.match("+49")
    assert past_names.match("+1") is None


def test_a_table_with_no_empty_slot_still_answers() -> None:
    """Damage that fills every slot must not make a miss probe for ever."""
    raw = bytearray(section({"+49": 0}))
    capacity = struct.unpack_from("<Q", raw, 8)[0]
    for slot in range(capacity):
        struct.pack_into("<Q", raw, 32 + 8 * slot, 2 << 50 | 49)
    index = _index.Index(bytes(raw), array("Q", [1]), b"n")
    assert index.match("+12") is None


def test_a_released_index_refuses_to_match() -> None:
    index = index_over(["a"], ["+1"])
    index.release()
    index.release()
    assert index.count == 0
    with pytest.raises(ValueError, match="released"):
        index.match("+1")


def built() -> NameCache:
    builder = CacheBuilder()
    builder.add(Scope.GLOBAL, 0, "+49", "Germany")
    builder.add(Scope.GLOBAL, 0, "+4922166987", "ACME Köln")
    builder.add(Scope.ENTERPRISE, 7, "+492216698712", "Tenant name")
    return builder.build()


def answers(cache: NameCache) -> list[object]:
    numbers = ["+492216698712", "+4930", "+1", "4922", "+49221669871x"]
    contexts = [GLOBAL_ONLY, LookupContext(7)]
    return [cache.lookup(n, ctx) for n in numbers for ctx in contexts]


def test_the_trie_alone_answers_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    indexed = answers(built())
    monkeypatch.setattr(trie, "_index", None)  # as a build without the C extension runs
    assert built()._index is None
    assert answers(built()) == indexed


def test_a_snapshot_without_the_index_gets_one_at_open(tmp_path: Path) -> None:
    """A snapshot from a build without the C extension, or from before the index."""
    cache = built()
    sections = [s for s in cache._base.sections() if s[0] != b"HIDX"]
    snapshot.write_sections(
        tmp_path / "old", [*sections, (b"PEND", memoryview(b"")), (b"META", memoryview(b"{}"))]
    )
    opened, _ = NameCache.open(tmp_path / "old")
    assert opened._index is not None and opened._index.count == 2
    assert answers(opened) == answers(cache)
    opened.close()


def test_a_snapshot_with_a_damaged_index_is_refused(tmp_path: Path) -> None:
    cache = built()
    sections = [
        (tag, memoryview(b"CNIX" + bytes(60)) if tag == b"HIDX" else view)
        for tag, view in cache._base.sections()
    ]
    path = tmp_path / "damaged"
    snapshot.write_sections(
        path, [*sections, (b"PEND", memoryview(b"")), (b"META", memoryview(b"{}"))]
    )
    with pytest.raises(SnapshotError, match="index section unreadable") as caught:
        NameCache.open(path)
    assert caught.value.field == str(path)


def test_a_snapshot_with_a_damaged_overlay_is_refused_and_unmapped(tmp_path: Path) -> None:
    """The index holds views of the mapping: refusing the file must release it first."""
    cache = built()
    path = tmp_path / "bad-overlay"
    sections = [*cache._base.sections(), (b"PEND", memoryview(b"\x00" * 5))]
    snapshot.write_sections(path, [*sections, (b"META", memoryview(b"{}"))])
    with pytest.raises(SnapshotError, match="overlay section unreadable"):
        NameCache.open(path)
