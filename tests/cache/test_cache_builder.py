"""The full load's C builder (cache/_builder.c) against the Python build it replaced.

Same entries, same order: the same snapshot sections, byte for byte. Same COPY
stream, however it is cut into chunks: the same rows as the Python reader
(cache/copy_stream.py) and as a plain SELECT. A malformed stream is refused.
"""

from __future__ import annotations

import datetime
import os
import random
import struct

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnamd.cache import trie
from cnamd.cache.copy_stream import SIGNATURE, copy_rows
from cnamd.cache.trie import CacheBuilder
from cnamd.errors import InvalidNumber
from cnamd.model import GLOBAL_ONLY, Scope
from cnamd.store import entries

if os.environ.get("CNAMD_PURE_PYTHON"):
    pytest.skip("pure build asked for: no C builder", allow_module_level=True)

from cnamd.cache import _builder

TAGS = "uged"
DIGITS = st.text("0123456789", min_size=1, max_size=15)
# Short keys (under six digits) mark many heads; few owners make namespaces share heads.
ENTRY = st.tuples(
    st.sampled_from([Scope.USER, Scope.USERGROUP, Scope.ENTERPRISE, Scope.GLOBAL]),
    st.sampled_from([1, 2, 17, 10**12, 2**63 - 1]),
    st.text("0129", min_size=1, max_size=4) | DIGITS,
    st.sampled_from(["Acme", "Ünïcødé ✓", "A" * 300, "x", "Bäcker & Söhne"]) | st.text(min_size=1),
).map(lambda e: (e[0], 0 if e[0] == Scope.GLOBAL else e[1], "+" + e[2], e[3]))


def sections_bytes(base: object) -> list[tuple[bytes, bytes]]:
    return [(tag, bytes(view)) for tag, view in base.sections()]  # type: ignore[attr-defined]


@settings(max_examples=40, deadline=None)
@given(st.lists(ENTRY, max_size=200))
def test_c_build_equals_the_python_build(added: list[tuple[Scope, int, str, str]]) -> None:
    rows = _builder.Builder()
    in_python: dict[str, str] = {}
    for scope, owner, key, name in added:
        full = f"{TAGS[scope]}{owner}{key}"
        rows.add(full, name)
        in_python[full] = name  # a later add wins; the key keeps its first place
    built = trie._Base.from_rows(rows)
    expected = trie._Base.build_in_python(in_python)
    assert sections_bytes(built) == sections_bytes(expected)
    cache = trie.NameCache(built)
    for full, name in in_python.items():
        scope, owner, key = trie._split(full)
        assert cache.get(scope, owner, key) == name


def copy_stream(rows: list[tuple[bytes, int, bytes, bytes | None]], trailer: bool = True) -> bytes:
    """A binary COPY stream of (scope, owner_id, key, name) rows, as PostgreSQL writes it."""
    out = bytearray(SIGNATURE + struct.pack(">II", 0, 0))
    for scope, owner, key, name in rows:
        out += struct.pack(">h", 4)
        for field in (scope, struct.pack(">q", owner), key, name):
            out += struct.pack(">i", -1) if field is None else struct.pack(">i", len(field)) + field
    if trailer:
        out += struct.pack(">h", -1)
    return bytes(out)


def python_load(stream: bytes) -> None:
    """What a build without the C builder does with ``stream``: read, check, build."""
    added = {}
    for scope, owner, key, name in copy_rows(stream):
        CacheBuilder().add(scope, owner, key, name)  # its checks, in Python first
        added[f"{TAGS[scope]}{owner}{key}"] = name
    trie._Base.build_in_python(added)


GOOD = [(b"global", 0, b"+4922166", "Köln".encode()), (b"user", 42, b"+49221", b"Mine")]


def test_a_hand_made_stream_builds_what_it_says() -> None:
    stream = copy_stream(GOOD)
    assert list(copy_rows(stream)) == [
        (Scope.GLOBAL, 0, "+4922166", "Köln"),
        (Scope.USER, 42, "+49221", "Mine"),
    ]
    builder = CacheBuilder()
    for at in range(0, len(stream), 3):  # rows and the header split over many chunks
        builder.add_copy(stream[at : at + 3])
    cache = builder.build()
    assert cache.lookup("+49221669999", GLOBAL_ONLY) is not None
    assert cache.get(Scope.USER, 42, "+49221") == "Mine"
    assert len(cache) == 2


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(b"PGCOPY\n\xff\r\n\x01" + bytes(8) + b"\xff\xff", id="signature"),
        pytest.param(copy_stream([(b"upstream", 0, b"+49", b"x")]), id="scope"),
        pytest.param(copy_stream([(b"global", 3, b"+49", b"x")]), id="global-owner"),
        pytest.param(copy_stream([(b"user", -1, b"+49", b"x")]), id="negative-owner"),
        pytest.param(copy_stream([(b"user", 1, b"+4a9", b"x")]), id="key"),
        pytest.param(copy_stream([(b"user", 1, b"49", b"x")]), id="key-plus"),
        pytest.param(copy_stream([(b"user", 1, b"+" + b"1" * 16, b"x")]), id="key-length"),
        pytest.param(copy_stream([(b"user", 1, b"+49", b"\xff")]), id="utf8"),
        pytest.param(copy_stream([(b"user", 1, b"+49", b"\xed\xa0\x80")]), id="surrogate"),
        pytest.param(copy_stream([(b"user", 1, b"+49", b"x" * 65536)]), id="name-length"),
        pytest.param(copy_stream([(b"user", 1, b"+49", None)]), id="null"),
        pytest.param(copy_stream(GOOD) + b"\x00", id="after-trailer"),
        pytest.param(copy_stream(GOOD)[:-2] + b"\x00\x03" + bytes(12), id="columns"),
    ],
)
def test_a_malformed_stream_is_refused(stream: bytes) -> None:
    with pytest.raises((ValueError, InvalidNumber)):
        python_load(stream)
    builder = CacheBuilder()
    with pytest.raises(ValueError, match="COPY stream"):
        builder.add_copy(stream)
        builder.build()


@pytest.mark.parametrize("cut", [5, 19, 30, -3, -1])
def test_a_stream_cut_short_is_refused(cut: int) -> None:
    stream = copy_stream(GOOD)[:cut]
    with pytest.raises(ValueError, match="COPY stream"):
        list(copy_rows(stream))
    builder = CacheBuilder()
    builder.add_copy(stream)
    with pytest.raises(ValueError, match="COPY stream ended before its trailer"):
        builder.build()


async def test_the_copy_stream_from_postgresql_builds_the_select(conn: asyncpg.Connection) -> None:
    """Rows in every scope (names with tabs, backslashes, newlines: nothing to unescape),
    streamed by copy_served, cut into chunks anywhere, build what a SELECT returns."""
    rng = random.Random(16)
    await conn.execute("SET session_replication_role = replica")  # no tenants needed here
    now = datetime.datetime.now(datetime.UTC)
    records = {}
    for i in range(1500):
        scope = rng.choice(["user", "usergroup", "enterprise", "global"])
        owner = None if scope == "global" else rng.randint(1, 40)
        name = rng.choice(["Tab\there", "back\\slash", "new\nline", "Ünïcødé", f"N{i % 700}"])
        key = "+" + str(rng.randint(1, 9)) + str(rng.randint(0, 10 ** rng.randint(0, 12)))
        records[scope, owner, key] = (
            scope,
            owner,  # tenant_id: every private scope has one
            owner if scope == "usergroup" else None,
            owner if scope == "user" else None,
            key,
            name,
            "approved",
            now,
        )
    columns = ["scope", "tenant_id", "usergroup_id", "user_id", "key", "name", "approval"]
    await conn.copy_records_to_table(
        "cnam_entries", records=list(records.values()), columns=[*columns, "approved_at"]
    )
    await conn.execute(
        "INSERT INTO cnam_entries (scope, key, name, approval)"
        " VALUES ('global', '+1', 'No', 'pending')"
    )
    chunks: list[bytes] = []

    async def take(chunk: bytes) -> None:
        chunks.append(chunk)

    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await entries.copy_served(conn, take)
    stream = b"".join(chunks)
    read = list(copy_rows(stream))
    selected = await conn.fetch(entries.SERVED)
    assert sorted(read) == sorted(
        (entries.SCOPE_BY_LABEL[r[0]], r[1], r[2], r[3]) for r in selected
    )
    assert len(read) == len(selected) > 1000

    expected = {f"{TAGS[scope]}{owner}{key}": name for scope, owner, key, name in read}
    builder = CacheBuilder()
    for chunk in chunks:  # as asyncpg hands them over
        builder.add_copy(chunk)
    base = builder.build()._base
    assert sections_bytes(base) == sections_bytes(trie._Base.build_in_python(expected))
    for size in (64, 4096, len(stream)):  # rows split anywhere
        builder = CacheBuilder()
        for at in range(0, len(stream), size):
            builder.add_copy(stream[at : at + size])
        base = builder.build()._base
        assert sections_bytes(base) == sections_bytes(trie._Base.build_in_python(expected))
    assert "d0+1" not in expected  # the pending row is not served
