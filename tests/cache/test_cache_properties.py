"""Property tests: the cache answers exactly like a brute-force scan over a plain dict."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cnamd.cache.trie import CacheBuilder, NameCache
from cnamd.model import CacheEntry, LookupContext, LookupResult, Scope

Model = dict[tuple[Scope, int, str], str]
# the trie's scopes; upstream answers are held apart (cache/upstream.py)
LOCAL_SCOPES = [s for s in Scope if s is not Scope.UPSTREAM]

# Few digits and short keys so keys share prefixes and numbers hit them often;
# owner ids 1, 10 and 11 share decimal prefixes on purpose.
DIGITS = st.text("0129", min_size=1, max_size=6) | st.text("0123456789", min_size=7, max_size=15)
KEYS = DIGITS.map(lambda digits: "+" + digits)
OWNERS = st.sampled_from([1, 10, 11, 2])
NAMES = st.text("abAB &'", min_size=0, max_size=4) | st.sampled_from(["Ünïcode ñame", "x" * 64])


@st.composite
def slots(draw: st.DrawFn) -> tuple[Scope, int, str]:
    scope = draw(st.sampled_from(LOCAL_SCOPES))
    owner = 0 if scope is Scope.GLOBAL else draw(OWNERS)
    return scope, owner, draw(KEYS)


EDITS = st.lists(
    st.tuples(slots(), st.none() | NAMES),  # None: delete
    max_size=25,
)
CONTEXTS = st.builds(
    LookupContext,
    tenant_id=st.none() | OWNERS,
    usergroup_id=st.none() | OWNERS,
    user_id=st.none() | OWNERS,
)


@st.composite
def numbers(draw: st.DrawFn, model: Model) -> str:
    """A number that extends a stored key, cuts one short, or is random."""
    keys = [key for _, _, key in model]
    extend_a_key = draw(st.booleans())
    if keys and extend_a_key:
        key = draw(st.sampled_from(keys))
        extra = draw(st.text("0129", max_size=4))
        return (key + extra)[: draw(st.integers(2, len(key) + len(extra)))]
    return "+" + draw(st.text("0129", min_size=1, max_size=15))


def reference(model: Model, number: str, ctx: LookupContext) -> LookupResult | None:
    """Brute force: first scope with any match; within it, the longest key."""
    chain = [
        (Scope.USER, ctx.user_id),
        (Scope.USERGROUP, ctx.usergroup_id),
        (Scope.ENTERPRISE, ctx.tenant_id),
        (Scope.GLOBAL, 0),
    ]
    for scope, owner in chain:
        if owner is None:
            continue
        found = [
            (key, name)
            for (s, o, key), name in model.items()
            if s is scope and o == owner and number.startswith(key)
        ]
        if found:
            key, name = max(found, key=lambda hit: len(hit[0]))
            return LookupResult(name, key, scope)
    return None


def apply(
    cache: NameCache, model: Model, edits: list[tuple[tuple[Scope, int, str], str | None]]
) -> None:
    for slot, name in edits:
        if name is None:
            assert cache.delete(*slot) is (slot in model)
            model.pop(slot, None)
        else:
            cache.put(*slot, name)
            model[slot] = name


def assert_agrees(cache: NameCache, model: Model, data: st.DataObject) -> None:
    for _ in range(20):
        number = data.draw(numbers(model))
        ctx = data.draw(CONTEXTS)
        assert cache.lookup(number, ctx) == reference(model, number, ctx), (number, ctx)
    assert len(cache) == len(model)
    assert cache.counts() == {s: sum(slot[0] is s for slot in model) for s in LOCAL_SCOPES}
    assert set(cache.entries()) == {CacheEntry(*slot, name) for slot, name in model.items()}
    for slot, name in model.items():
        assert cache.get(*slot) == name


def built(initial: list[tuple[tuple[Scope, int, str], str]]) -> tuple[NameCache, Model]:
    """The cache built from ``initial`` and the plain-dict model of the same entries."""
    builder = CacheBuilder()
    model: Model = {}
    for slot, name in initial:
        builder.add(*slot, name)
        model[slot] = name
    return builder.build(), model


@settings(max_examples=80, deadline=None)
@given(initial=st.lists(st.tuples(slots(), NAMES), max_size=40), edits=EDITS, data=st.data())
def test_lookup_matches_brute_force_after_edits(
    initial: list[tuple[tuple[Scope, int, str], str]],
    edits: list[tuple[tuple[Scope, int, str], str | None]],
    data: st.DataObject,
) -> None:
    cache, model = built(initial)
    assert_agrees(cache, model, data)
    apply(cache, model, edits)
    assert_agrees(cache, model, data)


@settings(max_examples=25, deadline=None)
@given(
    initial=st.lists(st.tuples(slots(), NAMES), max_size=30),
    edits=EDITS,
    later=EDITS,
    data=st.data(),
)
def test_compaction_and_snapshots_preserve_answers(
    initial: list[tuple[tuple[Scope, int, str], str]],
    edits: list[tuple[tuple[Scope, int, str], str | None]],
    later: list[tuple[tuple[Scope, int, str], str | None]],
    data: st.DataObject,
) -> None:
    cache, model = built(initial)
    apply(cache, model, edits)
    compact = cache.compacted()
    assert compact.overlay_size == 0
    assert_agrees(compact, model, data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "snap"
        cache.save(path, b"m")
        mapped, meta = NameCache.open(path)
        assert meta == b"m"
        assert_agrees(mapped, model, data)
        apply(mapped, model, later)
        assert_agrees(mapped, model, data)
        mapped.close()
