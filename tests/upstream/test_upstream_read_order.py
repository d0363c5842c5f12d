"""The dip's read order over held upstream answers (``Directory.caller_lookup`` and
``DirectoryCallers``): local scopes first, then the held answer, for the caller as
sent or as normalized, never for a tenant that turned upstream off."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cnamd.cache.contexts import Contexts
from cnamd.cache.directory import NAMELESS, Directory
from cnamd.cache.held_file import HeldFile, write_held
from cnamd.cache.trie import CacheBuilder
from cnamd.cache.upstream import UpstreamAnswers
from cnamd.callers import DirectoryCallers
from cnamd.lookup import NameKind
from cnamd.model import ContextRows, Digest, LookupContext, LookupResult, Scope

LATER = time.time() + 86400
ROWS = ContextRows(
    tenants=[(1, "acme", "DE"), (2, "quiet", "DE")],
    usergroups=[],
    users=[],
    numbers=[],
    networks=[("127.0.0.1/32", 1), ("127.0.0.2/32", 2)],
)
HELD = [
    ("+492216698712", "Upstream Loses", "opencnam", LATER),  # also a local name
    ("+492216698799", "Upstream Only", "opencnam", LATER),
    ("+492216698798", None, "opencnam", LATER),  # a negative answer
    ("+492216698797", "Long Gone", "opencnam", time.time() - 1),  # expired
]


@pytest.fixture(params=["mapped", "overlay"])
def held(request: pytest.FixtureRequest, tmp_path: Path) -> UpstreamAnswers:
    answers = UpstreamAnswers()
    if request.param == "mapped":
        path = tmp_path / "cache.snapshot.upstream"
        write_held(path, HELD, base_id="b", last_change_id=1)
        answers.use_file(HeldFile.open(path))
    else:
        answers.replace(HELD)
    answers.off_tenants = frozenset({2})
    return answers


@pytest.fixture
def directory() -> Directory:
    builder = CacheBuilder()
    builder.add(Scope.GLOBAL, 0, "+492216698712", "Local Wins")
    found = Directory()
    found.install(builder.build(), Contexts(ROWS, ["0.0.0.0/0"]), Digest(0, 0, 0), stale=False)
    return found


@pytest.mark.parametrize("calling", ["+492216698799", "02216698799"])  # as sent, national
def test_a_held_name_answers_after_the_local_scopes(
    directory: Directory, held: UpstreamAnswers, calling: str
) -> None:
    number, found, ctx = directory.caller_lookup(calling, "", "127.0.0.1", held)
    assert (number, found, ctx) == (
        "+492216698799",
        LookupResult("Upstream Only", "+492216698799", Scope.UPSTREAM),
        LookupContext(1),
    )
    local = directory.caller_lookup("+492216698712", "", "127.0.0.1", held)[1]
    assert local is not None and (local.name, local.scope) == ("Local Wins", Scope.GLOBAL)


def test_negative_expired_and_off_tenants(directory: Directory, held: UpstreamAnswers) -> None:
    assert directory.caller_lookup("+492216698798", "", "127.0.0.1", held)[1] is NAMELESS
    assert directory.caller_lookup("+492216698797", "", "127.0.0.1", held)[1] is None
    # tenant 2 turned upstream off: its dips never read the upstream scope
    assert directory.caller_lookup("+492216698799", "", "127.0.0.2", held)[1] is None
    assert directory.caller_lookup("+492216698799", "", "127.0.0.1")[1] is None  # none given


def test_the_callers_answer_and_count_each(directory: Directory, held: UpstreamAnswers) -> None:
    callers = DirectoryCallers(directory, held)
    answers = {
        calling: callers.caller_name(calling, "", "127.0.0.1")
        for calling in ("+492216698712", "+492216698799", "+492216698798", "+492216698797", "x")
    }
    assert [(a.kind, a.name) for a in answers.values()] == [
        (NameKind.HIT, "Local Wins"),
        (NameKind.HIT, "Upstream Only"),
        (NameKind.MISS, ""),  # held: known to have no name
        (NameKind.MISS, ""),  # expired, and no chain to ask
        (NameKind.INVALID, ""),
    ]
    assert callers._hit[Scope.UPSTREAM].n == 1 and callers._miss.n == 2
