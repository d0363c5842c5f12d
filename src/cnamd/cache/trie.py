"""The name cache: one static marisa trie over every namespace, plus a per-process overlay.

Why this shape (figures in bench/README.md):

* The base is a single ``marisa_trie.Trie`` whose keys are namespace + key,
  e.g. ``u42+4922166`` (user 42) or ``d0+49`` (global directory). The namespace
  is a scope letter and the owner's decimal id, ended by the key's ``+``, so no
  namespace's keys can be a prefix of another's. One ``iter_prefixes_with_ids``
  call per scope yields every stored prefix of a number, with its key id.
* Names sit in a packed, deduplicated UTF-8 blob; a uint64 array indexed by key
  id holds each key's (offset, length) in it: one array read and one blob read
  per answer. All of it, ~18 bytes per entry at 10M, is mapped read-only from a
  snapshot file (``cache/snapshot.py``), so forked workers share one copy in the
  page cache instead of one each.
* The global directory, which nearly every SIP dip asks, also has a hash index
  (``cache/_index.c``): one C call finds its longest matching key and decodes
  the name, where the trie's Python API costs a generator and a tuple per stored
  prefix. It is derived from the trie and saved beside it in the snapshot.
* A head filter -- one bit per (scope, owner, first six digits) of the private
  keys -- lets a lookup skip a user / usergroup / tenant namespace that cannot
  match with one bit test instead of a trie walk.
* A full load builds all of it from flat arrays in C (``cache/_builder.c``, fed
  PostgreSQL's binary COPY stream): only the marisa trie goes through Python.
* Live changes go to a small per-process overlay (``cache/overlay.py``) until the
  host's loader replaces the base with a full load (``replica/feed.py``); the overlay
  is also what a snapshot's tail holds (``overlay_records``). ``compacted()`` folds
  it into a new base in memory, for tests and tools.

The scope chain itself (who is searched, in which order) is ``cache/resolver.py``;
this module answers "longest match in one namespace".
"""

from __future__ import annotations

import itertools
import operator
import re
import struct
from array import array
from builtins import memoryview  # mypyc: a compiled dataclass resolves field types here
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from mmap import mmap
from operator import itemgetter
from pathlib import Path
from typing import Final

import marisa_trie

from cnamd.cache.copy_stream import copy_rows
from cnamd.cache.overlay import DELETED, STEM, Overlay, Pending
from cnamd.cache.resolver import GLOBAL_NAMESPACE, private_chain
from cnamd.cache.snapshot import MappedSnapshot, map_sections, write_sections
from cnamd.errors import InvalidNumber, SnapshotError
from cnamd.model import GLOBAL_ONLY, CacheEntry, LookupContext, LookupResult, Scope

try:
    from cnamd.cache import _index
except ImportError:  # built without a C compiler (CNAMD_PURE_PYTHON): the trie answers alone
    _index = None  # type: ignore[assignment]
try:
    from cnamd.cache import _builder
except ImportError:  # built without a C compiler: the Python build below does it all
    _builder = None  # type: ignore[assignment]

# the scopes the trie holds (upstream answers are held apart: cache/upstream.py)
_SCOPES: Final = (Scope.USER, Scope.USERGROUP, Scope.ENTERPRISE, Scope.GLOBAL)
# Namespace letter by Scope value; "d" for the global directory.
_TAGS: Final = "uged"
_PRIVATE: Final = (Scope.USER, Scope.USERGROUP, Scope.ENTERPRISE)
# Head filter: one bit per (scope, owner, first six digits) of every private key, so a
# lookup skips a user / usergroup / tenant namespace that cannot match with one bit
# test instead of a trie walk. A mark is owner * stride + 4 * head + scope (distinct
# for distinct triples), folded into the bitmap by a prime modulus.
_HEAD_DIGITS: Final = 6
_HEAD_END: Final = 1 + _HEAD_DIGITS
_STRIDE: Final = 4 * 10**_HEAD_DIGITS + 3
# 24 bits per mark: ~4% of the namespaces that cannot match still get walked.
_FILTER_BITS_PER_MARK: Final = 24
# A name reference: offset in the blob << 16 | length in bytes.
_LENGTH_BITS: Final = 16
_LENGTH_MASK: Final = (1 << _LENGTH_BITS) - 1
_STATS: Final = struct.Struct("<4QQ")  # live entries per scope, filter modulus
# One overlay record in a snapshot: scope, deleted flag, key length, name length, owner.
_RECORD: Final = struct.Struct("<BBHHq")
_ABSENT: Final = object()

# LookupResult is frozen, so its __init__ pays object.__setattr__ per field (~0.5 us
# here); filling the slots directly builds an equal object in a third of the time.
# (Final here and below: compiled, a Final module name is a C static, any other a dict
# lookup per use.)
_new_object: Final = object.__new__
_SET_NAME: Final = vars(LookupResult)["name"].__set__
_SET_MATCHED: Final = vars(LookupResult)["matched"].__set__
_SET_SCOPE: Final = vars(LookupResult)["scope"].__set__


def lookup_result(name: str, matched: str, scope: Scope) -> LookupResult:
    """``LookupResult(name, matched, scope)`` at a third of the cost: for the dip's
    hot path, here and for the held upstream answers (cache/directory.py)."""
    result: LookupResult = _new_object(LookupResult)
    _SET_NAME(result, name)
    _SET_MATCHED(result, matched)
    _SET_SCOPE(result, scope)
    return result


def namespace(scope: Scope, owner: int) -> str:
    """The trie key prefix of one (scope, owner) namespace, e.g. ``e17``."""
    return f"{_TAGS[scope]}{owner}"


_KEY: Final = re.compile(r"\+[0-9]{1,15}")


_GLOBAL: Final = GLOBAL_NAMESPACE[0]
_GLOBAL_OWNER: Final = GLOBAL_NAMESPACE[1]
_GLOBAL_ONLY: Final = GLOBAL_ONLY
_GLOBAL_SCOPE: Final = Scope(_GLOBAL)
_GLOBAL_PREFIX: Final = f"{_TAGS[_GLOBAL]}{_GLOBAL_OWNER}"
_GLOBAL_CUT: Final = len(_GLOBAL_PREFIX)


def _valid_key(key: str) -> bool:
    return _KEY.fullmatch(key) is not None


def _invalid(scope: Scope, owner: int, key: str) -> Exception:
    if not _valid_key(key):
        return InvalidNumber(f"cache key {key!r} is not '+' and 1-15 digits", field="key")
    return ValueError(f"owner {owner} is invalid for scope {scope.label}")


def _split(full: str) -> tuple[Scope, int, str]:
    plus = full.index("+")
    return _SCOPES[_TAGS.index(full[0])], int(full[1:plus]), full[plus:]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Base:
    """The static part: trie, name references, head filter and counts; never mutated."""

    trie: marisa_trie.Trie
    # Key id -> (offset << 16 | length) of its name in ``names``.
    name_refs: array[int] | memoryview
    # Where the names blob lives: bytes, or the whole mmap with the blob at ``names_at``
    # (slicing an mmap into bytes is cheaper than making a view per name).
    names: bytes | mmap
    names_at: int
    names_view: memoryview
    head_filter: bytes | memoryview
    filter_modulus: int
    counts: tuple[int, ...]
    # The global namespace's hash index (None without the C extension) and its section.
    index: _index.Index | None = None
    index_section: bytes | memoryview | None = None
    trie_image: memoryview | None = None
    snapshot: MappedSnapshot | None = None

    @classmethod
    def from_rows(cls, rows: _builder.Builder) -> _Base:
        """Build from the C builder's rows (``cache/_builder.c``): the same base as ``build``
        over the same entries, with only the marisa trie built through Python."""
        trie = marisa_trie.Trie(rows.keys())
        refs, blob, index_section, counts, marks = rows.finish(trie.items(), _GLOBAL_PREFIX)
        modulus = _prime_at_least(max(1031, _FILTER_BITS_PER_MARK * marks))
        head_filter = rows.head_filter(modulus)
        return cls.built(
            trie,
            name_refs=memoryview(refs).cast("Q"),
            blob=blob,
            head_filter=head_filter,
            modulus=modulus,
            counts=counts,
            index_section=None if _index is None else index_section,
        )

    @classmethod
    def built(
        cls,
        trie: marisa_trie.Trie,
        *,
        name_refs: array[int] | memoryview,
        blob: bytes,
        head_filter: bytes,
        modulus: int,
        counts: tuple[int, ...],
        index_section: bytes | None,
    ) -> _Base:
        """A base over freshly built (not mapped) parts; the index over its section."""
        return cls(
            trie=trie,
            name_refs=name_refs,
            names=blob,
            names_at=0,
            names_view=memoryview(blob),
            head_filter=head_filter,
            filter_modulus=modulus,
            counts=counts,
            index=None if index_section is None else _index.Index(index_section, name_refs, blob),
            index_section=index_section,
        )

    @classmethod
    def build(cls, entries: dict[str, str]) -> _Base:
        """Build from {namespaced key: name} (compaction, tests): through the C builder
        (``from_rows``) when built, else in Python."""
        if _builder is None:
            return cls.build_in_python(entries)
        rows = _builder.Builder()
        for full, name in entries.items():
            rows.add(full, name)
        return cls.from_rows(rows)

    @classmethod
    def build_in_python(cls, entries: dict[str, str]) -> _Base:
        """``build`` without the C builder; what ``from_rows`` must equal, byte for byte.

        Ids come from the trie, names follow them; every per-entry step runs in C
        (``map``), not in the interpreter's loop, but each is a pass over Python objects.
        """
        trie = marisa_trie.Trie(entries)
        unique = list(dict.fromkeys(entries.values()))
        encoded = list(map(str.encode, unique))
        lengths = list(map(len, encoded))
        if max(lengths, default=0) > _LENGTH_MASK:
            raise ValueError(f"a name is longer than {_LENGTH_MASK} bytes")
        starts = itertools.accumulate(lengths, initial=0)
        refs = map(
            operator.or_, map(operator.lshift, starts, itertools.repeat(_LENGTH_BITS)), lengths
        )
        ref_of = dict(zip(unique, refs, strict=True))
        del unique, lengths
        blob = b"".join(encoded)
        del encoded
        # One walk over the whole trie (10M: 5 s) instead of a key_id() per key (17 s),
        # then one pass: name_refs[id] = ref_of[entries[key]].
        items = trie.items()
        name_refs = array("Q", bytes(8 * len(items)))
        names = map(entries.__getitem__, map(itemgetter(0), items))
        deque(
            map(name_refs.__setitem__, map(itemgetter(1), items), map(ref_of.__getitem__, names)), 0
        )
        del ref_of
        index_section = _index.build(items, _GLOBAL_PREFIX) if _index is not None else None
        del items
        counts = [0, 0, 0, 0]
        marks: set[int] = set()
        for scope in _PRIVATE:
            keys = trie.keys(_TAGS[scope])
            counts[scope] = len(keys)
            marks.update(_marks(scope, keys))
        counts[Scope.GLOBAL] = len(trie) - sum(counts)
        modulus = _prime_at_least(max(1031, _FILTER_BITS_PER_MARK * len(marks)))
        head_filter = _filter(marks, modulus)
        return cls.built(
            trie,
            name_refs=name_refs,
            blob=blob,
            head_filter=head_filter,
            modulus=modulus,
            counts=tuple(counts),
            index_section=index_section,
        )

    @classmethod
    def empty(cls) -> _Base:
        return cls.build({})

    @classmethod
    def mapped(cls, snapshot: MappedSnapshot) -> _Base:
        """The base inside a verified snapshot, zero-copy; SnapshotError if inconsistent."""
        trie = marisa_trie.Trie()
        trie_image = snapshot.view(b"TRIE")
        try:
            trie.map(trie_image)
        except RuntimeError as exc:
            raise SnapshotError(
                f"trie section unreadable: {exc}", field=str(snapshot.path)
            ) from exc
        name_refs = snapshot.words(b"NREF", "Q")
        names_view = snapshot.view(b"NAME")
        *counts, modulus = _STATS.unpack(snapshot.view(b"STAT"))
        head_filter = snapshot.view(b"FILT")
        if not (
            len(trie) == len(name_refs) == sum(counts) and len(head_filter) == (modulus + 7) // 8
        ):
            raise SnapshotError(
                "sections disagree on the number of entries", field=str(snapshot.path)
            )
        index, index_section = _mapped_index(snapshot, trie, name_refs, names_view)
        return cls(
            trie=trie,
            name_refs=name_refs,
            names=snapshot.buffer,
            names_at=snapshot.offset(b"NAME"),
            names_view=names_view,
            head_filter=head_filter,
            filter_modulus=modulus,
            counts=tuple(counts),
            index=index,
            index_section=index_section,
            trie_image=trie_image,
            snapshot=snapshot,
        )

    def name(self, key_id: int) -> str:
        ref = self.name_refs[key_id]
        start = self.names_at + (ref >> _LENGTH_BITS)
        return self.names[start : start + (ref & _LENGTH_MASK)].decode()

    def get(self, full: str) -> str | None:
        key_id = self.trie.get(full)
        return None if key_id is None else self.name(key_id)

    def sections(self) -> list[tuple[bytes, memoryview]]:
        trie_image = self.trie_image
        if trie_image is None:
            trie_image = memoryview(self.trie.tobytes())
        sections = [
            (b"TRIE", trie_image),
            (b"NREF", memoryview(self.name_refs)),
            (b"NAME", self.names_view),
            (b"FILT", memoryview(self.head_filter)),
            (b"STAT", memoryview(_STATS.pack(*self.counts, self.filter_modulus))),
        ]
        if self.index_section is not None:
            sections.append((b"HIDX", memoryview(self.index_section)))
        return sections

    def close(self) -> None:
        if self.index is not None:
            self.index.release()  # it holds views of the mapping, which must go first
        if self.snapshot is not None:
            self.snapshot.close()


def _mapped_index(
    snapshot: MappedSnapshot,
    trie: marisa_trie.Trie,
    name_refs: memoryview,
    names: memoryview,
) -> tuple[_index.Index | None, bytes | memoryview | None]:
    """The snapshot's global index; built here if the snapshot was written without one
    (by a build without the C extension, or before the index existed)."""
    if _index is None:
        return None, None
    section: bytes | memoryview
    section = (
        snapshot.view(b"HIDX")
        if snapshot.has(b"HIDX")
        else _index.build(trie.items(), _GLOBAL_PREFIX)
    )
    try:
        return _index.Index(section, name_refs, names), section
    except ValueError as exc:
        raise SnapshotError(str(exc), field=str(snapshot.path)) from exc


def _marks(scope: Scope, keys: list[str]) -> Iterator[int]:
    """Head filter marks of one scope's keys; a key under six digits marks every head."""
    for full in keys:
        space, _, digits = full.partition("+")
        base = int(space[1:]) * _STRIDE + scope
        if len(digits) >= _HEAD_DIGITS:
            yield base + 4 * int(digits[:_HEAD_DIGITS])
        else:
            spread = 10 ** (_HEAD_DIGITS - len(digits))
            first = int(digits) * spread
            yield from (base + 4 * value for value in range(first, first + spread))


def _filter(marks: set[int], modulus: int) -> bytes:
    bits = bytearray((modulus + 7) // 8)
    for mark in marks:
        bit = mark % modulus
        bits[bit >> 3] |= 1 << (bit & 7)
    return bytes(bits)


def _prime_at_least(floor: int) -> int:
    """A prime modulus spreads the structured marks (stride, heads) evenly over the bits."""
    candidate = floor | 1
    while any(candidate % factor == 0 for factor in range(3, int(candidate**0.5) + 1, 2)):
        candidate += 2
    return candidate


class CacheBuilder:
    """Collects entries (added one by one, or a full load's COPY stream), then builds a
    NameCache off to the side: in C flat arrays when built (``_builder.c``), else a dict."""

    __slots__ = ("_copy", "_entries", "_rows")

    def __init__(self) -> None:
        self._rows = _builder.Builder() if _builder is not None else None
        self._entries: dict[str, str] = {}
        self._copy = bytearray()  # without the C builder: the COPY stream, parsed at the end

    def add(self, scope: Scope, owner: int, key: str, name: str) -> None:
        """Add one entry; a later add of the same (scope, owner, key) wins."""
        if _KEY.fullmatch(key) is None or owner < 0 or (owner and scope == _GLOBAL):
            raise _invalid(scope, owner, key)
        if self._rows is not None:
            self._rows.add(f"{_TAGS[scope]}{owner}{key}", name)
        else:
            self._entries[f"{_TAGS[scope]}{owner}{key}"] = name

    def add_copy(self, chunk: bytes | bytearray) -> None:
        """Add the rows in ``chunk``, the next part of a binary COPY stream of
        (scope, owner_id, key, name) (``store/entries.copy_served``); ValueError if malformed."""
        if self._rows is not None:
            self._rows.feed(chunk)
        else:
            self._copy += chunk

    def __len__(self) -> int:
        if self._rows is not None:
            return len(self._rows)
        return len(self._entries)

    def build(self) -> NameCache:
        """The built cache; the builder is left empty (its memory goes with it).

        ValueError if a COPY stream was added and did not end with its trailer.
        """
        rows = self._rows
        if rows is not None:
            if not rows.complete():
                raise ValueError("the COPY stream ended before its trailer")
            self._rows = _builder.Builder()
            return NameCache(_Base.from_rows(rows))
        if self._copy:
            try:
                for scope, owner, key, name in copy_rows(self._copy):
                    self.add(scope, owner, key, name)
            except InvalidNumber as exc:
                raise ValueError(f"COPY stream: {exc.reason}") from exc
            self._copy = bytearray()
        entries, self._entries = self._entries, {}
        return NameCache(_Base.build(entries))


class NameCache:
    """Every served name: a static base (built or mapped) and a per-process overlay."""

    __slots__ = (
        "_base",
        "_counts",
        "_filter",
        "_index",
        "_modulus",
        "_overlay",
        "_pending",
        "_trie",
    )

    def __init__(self, base: _Base) -> None:
        self._overlay = Overlay(len(_SCOPES))
        self._pending = self._overlay.by_scope
        self._counts = list(base.counts)
        self._use(base)

    def _use(self, base: _Base) -> None:
        self._base = base
        self._trie = base.trie
        self._index = base.index
        self._filter = base.head_filter
        self._modulus = base.filter_modulus

    # -- lookups -------------------------------------------------------------------

    def lookup(self, number: str, ctx: LookupContext) -> LookupResult | None:
        """The name for ``number`` as seen by ``ctx``: most specific scope, then longest key.

        Walks ``private_chain(ctx)`` with the namespace probe written out, then the
        global step: the C index when built, else the trie. Interpreted, every Python
        call saved was ~0.1 us of a 5-8 us lookup (bench/README.md); compiled, a call
        to ``_result`` is a C call. Never raises for a str ``number``.
        """
        try:
            pending_by_scope = self._pending
            # Pending.may_affect() written out: a method call is ~0.15 us here.
            stem = number[:STEM] if len(number) >= STEM else ""
            head = -2
            # The global-only context (most SIP dips: no owned number, no tenant network)
            # has no private scope to walk.
            for scope, owner in private_chain(ctx) if ctx is not _GLOBAL_ONLY else ():
                if owner is None:
                    continue
                pending = pending_by_scope[scope].get(owner)
                if pending is not None and (pending.short or not stem or stem in pending.stems):
                    found = self._match_pending(scope, owner, number, pending)
                else:
                    if head == -2:
                        digits = number[1:_HEAD_END]
                        head = (
                            4 * int(digits)
                            if len(digits) == _HEAD_DIGITS and digits.isascii() and digits.isdigit()
                            else -1
                        )
                    if head >= 0:
                        mark = (owner * _STRIDE + head + scope) % self._modulus
                        if not self._filter[mark >> 3] >> (mark & 7) & 1:
                            continue
                    found = self._match_base(scope, owner, number)
                if found is not None:
                    return found

            pending = pending_by_scope[_GLOBAL].get(_GLOBAL_OWNER)
            if pending is not None and (pending.short or not stem or stem in pending.stems):
                return self._match_pending(_GLOBAL, _GLOBAL_OWNER, number, pending)
            index = self._index
            if index is not None:
                match = index.match(number)
                if match is None:
                    return None
                return lookup_result(match[0], number[: match[1]], _GLOBAL_SCOPE)
            hit = None
            for hit in self._trie.iter_prefixes_with_ids(_GLOBAL_PREFIX + number):  # noqa: B007
                pass
            if hit is None:
                return None
            return lookup_result(self._base.name(hit[1]), hit[0][_GLOBAL_CUT:], _GLOBAL_SCOPE)
        except UnicodeEncodeError:
            return None

    def _match_base(self, scope: int, owner: int, number: str) -> LookupResult | None:
        """Longest key of namespace (scope, owner) in the base that prefixes ``number``."""
        query = f"{_TAGS[scope]}{owner}{number}"
        hit = None
        for hit in self._trie.iter_prefixes_with_ids(query):  # noqa: B007 - want the last
            pass
        if hit is None:
            return None
        cut = len(query) - len(number)
        return lookup_result(self._base.name(hit[1]), hit[0][cut:], _SCOPES[scope])

    def _match_pending(
        self, scope: int, owner: int, number: str, pending: Pending
    ) -> LookupResult | None:
        """Longest key prefixing ``number``: base hits not overridden, then longer puts."""
        query = f"{_TAGS[scope]}{owner}{number}"
        cut = len(query) - len(number)
        names = pending.names
        best: tuple[str, str] | None = None
        hits: list[tuple[str, int]] = list(self._trie.iter_prefixes_with_ids(query))
        for full, key_id in reversed(hits):
            key = full[cut:]
            name = names.get(key, _ABSENT)
            if name is _ABSENT:
                best = key, self._base.name(key_id)
                break
            if name is not None:
                best = key, name  # type: ignore[assignment]
                break
        longer = pending.longest_put(number, len(best[0]) if best else 1)
        if longer is not None:
            best = longer
        return None if best is None else lookup_result(best[1], best[0], _SCOPES[scope])

    def get(self, scope: Scope, owner: int, key: str) -> str | None:
        """The live name stored under exactly this key, or None."""
        if not _valid_key(key):
            return None
        record = self._record(scope, owner, key)
        if record is not _ABSENT:
            return record  # type: ignore[return-value]
        return self._base.get(f"{_TAGS[scope]}{owner}{key}")

    # -- live changes ----------------------------------------------------------------

    def put(self, scope: Scope, owner: int, key: str, name: str) -> None:
        """Set a name (a live change); it goes to the overlay unless the base already says so."""
        if _KEY.fullmatch(key) is None or owner < 0 or (owner and scope == _GLOBAL):
            raise _invalid(scope, owner, key)
        record = self._record(scope, owner, key)
        in_base = self._base.get(f"{_TAGS[scope]}{owner}{key}")
        was_live = in_base is not None if record is _ABSENT else record is not None
        if name == in_base:
            self._overlay.drop(scope, owner, key)
        else:
            self._overlay.set(scope, owner, key, name)
        if not was_live:
            self._counts[scope] += 1

    def delete(self, scope: Scope, owner: int, key: str) -> bool:
        """Remove a name (a live change); True if it was there."""
        if not _valid_key(key):
            return False
        record = self._record(scope, owner, key)
        in_base = self._base.trie.get(f"{_TAGS[scope]}{owner}{key}") is not None
        if not (in_base if record is _ABSENT else record is not None):
            return False
        if in_base:
            self._overlay.set(scope, owner, key, DELETED)
        else:
            self._overlay.drop(scope, owner, key)
        self._counts[scope] -= 1
        return True

    def _record(self, scope: Scope, owner: int, key: str) -> object:
        pending = self._pending[scope].get(owner)
        return _ABSENT if pending is None else pending.names.get(key, _ABSENT)

    # -- bookkeeping -----------------------------------------------------------------

    def counts(self) -> dict[Scope, int]:
        """Live entries per scope, base and overlay together."""
        return dict(zip(_SCOPES, self._counts, strict=True))

    def __len__(self) -> int:
        return sum(self._counts)

    @property
    def overlay_size(self) -> int:
        """Records in the overlay (names and deletions): what compaction would fold in."""
        return self._overlay.size

    def entries(self) -> Iterator[CacheEntry]:
        """Every live entry (base entries the overlay changes are skipped, then the overlay's)."""
        base = self._base
        for full, key_id in base.trie.iteritems():
            scope, owner, key = _split(full)
            if self._record(scope, owner, key) is _ABSENT:
                yield CacheEntry(scope, owner, key, base.name(key_id))
                if self._base is not base:
                    raise RuntimeError("cache closed while its entries were being read")
        for index, owner, key, name in list(self._overlay.records()):
            if name is not None:
                yield CacheEntry(_SCOPES[index], owner, key, name)

    def compacted(self) -> NameCache:
        """A new cache whose base holds base + overlay and whose overlay is empty."""
        base = self._base
        entries = {full: base.name(key_id) for full, key_id in base.trie.iteritems()}
        for scope, owner, key, name in self._overlay.records():
            full = f"{_TAGS[scope]}{owner}{key}"
            if name is None:
                del entries[full]
            else:
                entries[full] = name
        return NameCache(_Base.build(entries))

    # -- snapshots -------------------------------------------------------------------

    def save(self, path: Path, meta: bytes) -> None:
        """Write base, overlay and ``meta`` to ``path`` atomically (see cache/snapshot.py)."""
        sections = self._base.sections()
        sections += [(b"PEND", memoryview(self.overlay_records())), (b"META", memoryview(meta))]
        write_sections(path, sections)

    def overlay_records(self) -> bytes:
        """The overlay as a snapshot's PEND section: with the base, this cache's whole state."""
        records = bytearray()
        for scope, owner, key, name in self._overlay.records():
            raw_key, raw_name = key.encode(), (name or "").encode()
            records += _RECORD.pack(scope, name is None, len(raw_key), len(raw_name), owner)
            records += raw_key + raw_name
        return bytes(records)

    def replace_overlay(self, records: memoryview, path: Path) -> None:
        """Drop the overlay and replay ``records`` (another ``overlay_records()``) over the base.

        The records are the writer's whole overlay over the same base, so nothing of
        this cache's own overlay may stay under them. SnapshotError if unreadable.
        """
        self._overlay = Overlay(len(_SCOPES))
        self._pending = self._overlay.by_scope
        self._counts = list(self._base.counts)
        self._replay(records, path)

    @classmethod
    def open(cls, path: Path) -> tuple[NameCache, bytes]:
        """Map a snapshot read-only and replay its overlay; SnapshotError if it is not sound."""
        snapshot = map_sections(path)
        base: _Base | None = None
        try:
            base = _Base.mapped(snapshot)
            cache = cls(base)
            meta = bytes(snapshot.view(b"META"))
            cache._replay(snapshot.view(b"PEND"), path)
        except BaseException:
            if base is not None:
                base.close()  # the index first: it holds views of the mapping
            else:
                snapshot.close()
            raise
        return cache, meta

    def _replay(self, records: memoryview, path: Path) -> None:
        at = 0
        try:
            while at < len(records):
                tag, deleted, key_len, name_len, owner = _RECORD.unpack_from(records, at)
                at += _RECORD.size
                key = str(records[at : at + key_len], "ascii")
                name = str(records[at + key_len : at + key_len + name_len], "utf-8")
                at += key_len + name_len
                if deleted:
                    self.delete(_SCOPES[tag], owner, key)
                else:
                    self.put(_SCOPES[tag], owner, key, name)
        except (struct.error, IndexError, ValueError, InvalidNumber) as exc:
            raise SnapshotError(f"overlay section unreadable: {exc}", field=str(path)) from exc

    def close(self) -> None:
        """Unmap the snapshot (if any) and empty the cache; idempotent.

        Call it once the cache is swapped out: the trie reads the mapping directly,
        so nothing may be looking up in this cache while it closes.
        """
        self.retire()()

    def retire(self) -> Callable[[], None]:
        """Empty the cache now, as ``close`` does, and return what unmaps its snapshot,
        for the caller to run where it likes.

        The feed runs it on a thread: closing a replaced cache took 17 ms at 1M entries
        and 49 ms at 3M on the 2-core VM (bench/bench_unmap.py), most of it the munmap
        that drops the last reference to the replaced file (14 ms for 33 MB, strace),
        which holds no GIL, so the loop runs meanwhile. Safe there once this returns:
        nothing reads the old base any more (lookups read the new one, and ``entries``
        checks after each yield, before reading on).
        """
        base = self._base
        self._use(_Base.empty())
        self._overlay = Overlay(len(_SCOPES))
        self._pending = self._overlay.by_scope
        self._counts = [0] * len(_SCOPES)
        return base.close
