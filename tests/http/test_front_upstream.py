"""Lookups that wait for upstream: the connection front answers them as aiohttp and the application.

test_front.py's differential test, with an upstream source: two servers over
the same cache, one with the front (the daemon's ``LookupRunner``), one plain
aiohttp with the application alone, each with upstream answers and a chain of
its own (so each asks the provider for itself; nothing one learns answers the
other from memory), both asking one real HTTP provider on loopback. Hypothesis
sends both the same raw bytes on one connection -- local hits and misses,
numbers the provider names, knows no name for, fails on (500, HTML, truncated
JSON) or answers past ``upstream.http_deadline``, repeated or not, and requests
the front leaves to aiohttp -- cut into pieces; the answers (status line,
headers but Date, body) and where the connection closes must be the same. And
from the provider's request log: each server asked for every number that goes
upstream, and the front answered (or waited on) every lookup up to the first
request it hands over.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from api_client import (
    FAST_PATH_OVERRIDES,
    PLAIN_NUMBER_LIST,
    TRUSTED_SOURCE,
    UNTRUSTED_SOURCE,
    AlwaysReady,
    Api,
    CountedLookups,
    daemon_test_server,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_front import CLOSING, ODD, Answer, exchange

from cnamd.cache.upstream import UpstreamAnswers
from cnamd.http.app import make_app
from cnamd.http.front import FrontServer
from cnamd.http.keys import UPSTREAM
from cnamd.model import Role
from cnamd.settings import Settings, load
from cnamd.turn_budget import TurnBudget
from cnamd.upstream.chain import Chain, Upstream
from test_daemon import free_port

#: both servers' ``upstream.http_deadline``: the provider's answers come well within it,
#: but its late ones
DEADLINE = 0.3
#: a late answer comes this long after it is asked (or at teardown): past every wait on it
LATE = 5.0
#: the numbers the source covers: +1556, the kind of answer (KINDS), a block of four
#: digits of the example's own (every example asks numbers never asked before), a slot
PREFIX = "+1556"
KINDS = {"0": "name", "1": "no-name", "2": "500", "3": "html", "4": "truncated", "5": "late"}
BLOCK = b"~~~~"  # in a drawn sequence, where the example's block goes
NUMBER = re.compile(re.escape(PREFIX.encode()) + rb"[0-9]{7}")  # one, its block filled in


@pytest.fixture
def api_settings() -> list[str]:
    return FAST_PATH_OVERRIDES


FrontTestServer = daemon_test_server(CountedLookups)


class Provider:
    """An HTTP JSON CNAM provider (``GET /{who}/cnam/{number}``, ``{"name": ...}``): the
    digit after PREFIX says how it answers; every request is logged with who asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []
        self.released = asyncio.Event()  # teardown: the late answers, now
        app = web.Application()
        app.router.add_get("/{who}/cnam/{number}", self._cnam)
        self.server = TestServer(app, host="127.0.0.1", port=free_port())

    def asked_by(self, who: str) -> set[str]:
        return {number for asker, number in list(self.asked) if asker == who}

    async def _cnam(self, request: web.Request) -> web.StreamResponse:
        who, number = request.match_info["who"], request.match_info["number"]
        self.asked.append((who, number))
        kind = KINDS[number[len(PREFIX)]]
        if kind == "no-name":
            return web.json_response({"error": "not found"}, status=404)
        if kind == "500":
            return web.Response(status=500, text="internal error")
        if kind == "html":
            return web.Response(text="<html><body>Login</body></html>", content_type="text/html")
        if kind == "truncated":
            return web.Response(text='{"name": "Trunc', content_type="application/json")
        if kind == "late":
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LATE):
                    await self.released.wait()
            return web.json_response({"name": "Late " + number[-4:]})
        return web.json_response({"name": "Up " + number[-4:]})


def chain_settings(snapshot: Path, provider: int, who: str) -> Settings:
    """The fast-path test settings with one http-json source on ``provider`` (its path
    says ``who`` asks), never closed by its breaker, never short of a slot."""
    source = {
        "name": "fake",
        "kind": "http-json",
        "url": f"http://127.0.0.1:{provider}/{who}/cnam/{{e164}}",
        "name_pointer": "/name",
        "countries": [PREFIX],
        "timeout": LATE * 2,
        "breaker_errors": 1000,
        "max_concurrency": 1000,
    }
    return load(
        environ={},
        overrides=[
            f"cache.snapshot_path={snapshot}",
            *FAST_PATH_OVERRIDES,
            f"upstream.http_deadline={DEADLINE}",
            "upstream.sources=" + json.dumps([source]),
        ],
    )


@dataclass
class Servers:
    general: int
    front: int
    partner: str
    provider: Provider


@pytest.fixture
async def servers(api: Api, tmp_path: Path) -> AsyncIterator[Servers]:
    """A plain aiohttp server of the application and one with the front, each with its own
    held upstream answers and chain, asking one provider. The front answers one request
    per turn of the loop (a turn budget of 0), so the requests behind a wait for upstream
    also go through its deferral."""
    provider = Provider()
    await provider.server.start_server()
    assert provider.server.port is not None
    made: list[tuple[TestServer, Chain]] = []
    for who, server_class in (("general", TestServer), ("front", FrontTestServer)):
        settings = chain_settings(tmp_path / who, provider.server.port, who)
        chain = Chain(
            settings.upstream, UpstreamAnswers(), None, max_length=settings.names.max_length
        )
        chain.begin()
        app = make_app(settings, api.directory, AlwaysReady(), api.pool)
        app[UPSTREAM] = Upstream(chain.held, chain, settings.upstream)
        server = server_class(app, host="127.0.0.1")
        await server.start_server()
        if server_class is FrontTestServer:
            assert server.runner is not None and isinstance(server.runner.server, FrontServer)
            server.runner.server.turn = TurnBudget(0.0)
        made.append((server, chain))
    partner = await api.key(Role.PARTNER, enterprises=["demo"])
    await api.until_key(partner.split(".")[0])
    general, front = (server.port for server, _ in made)
    assert general is not None and front is not None
    yield Servers(general, front, partner, provider)
    for server, chain in reversed(made):
        await server.close()
        await chain.close()
    provider.released.set()
    await provider.server.close()


Exchanged = tuple[list[Answer], bytes]  # the answers until the server closed, bytes left


@dataclass(frozen=True)
class Item:
    """One request of a sequence: its bytes (an upstream number's block still BLOCK),
    whether the front answers it itself, the upstream number it asks for, whether
    aiohttp reads nothing after it."""

    raw: bytes
    front: bool
    upstream: bytes | None = None
    ends: bool = False


ROUTES = ["/v1/lookup/", "/v3/phone/", "/v2/phone/"]


def upstream_number(kind: str, slot: int) -> str:
    """A number the source covers, answered as KINDS[kind]; its block still BLOCK."""
    return f"{PREFIX}{kind}{BLOCK.decode()}{slot:02d}"


@st.composite
def lookup(
    draw: st.DrawFn, partner: str, source: str, closing: bool = False, late: bool = False
) -> Item:
    """A lookup GET of a local number or of one the provider is asked for (``late``: that
    it answers past the deadline); the front answers it but when the application
    refuses it (no credentials from an untrusted source, ``/v1/lookup``'s
    ``format=pbx``), and then no source is asked either."""
    key_id, secret = partner.split(".")
    route = draw(st.sampled_from(ROUTES))
    params = []
    fmt = draw(st.sampled_from([None, "json", "text", "pbx"]))
    if fmt is not None:
        params.append(f"format={fmt}")
    how = draw(st.sampled_from(["none", "query", "bearer", "token"]))
    if how == "query":
        params += [f"account_sid={key_id}", f"auth_token={secret}"]
    upstream = draw(st.sampled_from([True, True, False]))
    if upstream:
        kind = "5" if late else draw(st.sampled_from("001234"))
        number = upstream_number(kind, draw(st.integers(0, 2)))
    else:
        number = draw(st.sampled_from(PLAIN_NUMBER_LIST))
    target = route + number
    if params:
        target += "?" + "&".join(draw(st.permutations(params)))
    headers = [draw(st.sampled_from(["Host: cnamd", "host: cnamd", "HOST:cnamd"]))]
    if how == "bearer":
        headers.append(f"Authorization: Bearer {partner}")
    elif how == "token":
        headers.append(f"X-Auth-Token: {partner}")
    extras = ["User-Agent: Asterisk PBX", "Accept: text/plain", "Connection: keep-alive"]
    headers += draw(st.lists(st.sampled_from(extras), unique=True))
    if closing:
        headers = [h for h in headers if not h.startswith("Connection")] + ["Connection: close"]
    headers = draw(st.permutations(headers))
    raw = "\r\n".join([f"GET {target} HTTP/1.1", *headers, "", ""]).encode()
    refused = (source == UNTRUSTED_SOURCE and how == "none") or (
        route == "/v1/lookup/" and fmt == "pbx"
    )
    asks = upstream and not refused
    return Item(raw, front=not refused and not closing, upstream=number.encode() if asks else None)


@dataclass(frozen=True)
class Odd:
    """ODD as the two servers take it: what aiohttp answers and goes on from
    (``keeping``), the rest (``ending``) and of those what aiohttp reads nothing after
    (``closes``: ``Expect`` is answered twice, then aiohttp goes on); how many requests
    of each the front answers itself, from each source (``front``)."""

    keeping: list[bytes]
    ending: list[bytes]
    closes: frozenset[bytes]
    front: dict[tuple[bytes, str], int]


def sorted_odd(servers: Servers) -> Odd:
    """ODD sorted by sending each to the servers, a lookup of a number the provider
    names and CLOSING after it."""
    keeping: list[bytes] = []
    ending: list[bytes] = []
    closes: set[bytes] = set()
    front: dict[tuple[bytes, str], int] = {}
    for slot, item in enumerate(ODD):
        answers, _ = exchange(servers.general, TRUSTED_SOURCE, [item + CLOSING])
        (keeping if len(answers) == 2 else ending).append(item)
        probe = f"{PREFIX}09999{slot:02d}"
        then = f"GET /v1/lookup/{probe} HTTP/1.1\r\nHost: cnamd\r\n\r\n".encode()
        exchange(servers.general, TRUSTED_SOURCE, [item + then + CLOSING])
        if probe not in servers.provider.asked_by("general"):
            closes.add(item)
        for source in (TRUSTED_SOURCE, UNTRUSTED_SOURCE):
            before = CountedLookups.front
            exchange(servers.front, source, [item + CLOSING])
            front[item, source] = CountedLookups.front - before
    return Odd(keeping, ending, frozenset(closes), front)


@dataclass(frozen=True)
class Sequence:
    source: str
    items: list[Item]
    cuts: list[int]


@st.composite
def sequences(draw: st.DrawFn, partner: str, odd: Odd) -> Sequence:
    """Lookups (local and upstream) and odd requests aiohttp answers and goes on from
    (``keeping``) on one connection, then one that closes it: CLOSING or an upstream
    lookup with ``Connection: close``; a request that ends the connection (``ending``)
    only first, and then uncut (test_front.sequences says why)."""
    source = draw(st.sampled_from([TRUSTED_SOURCE, TRUSTED_SOURCE, UNTRUSTED_SOURCE]))
    first = []
    if draw(st.sampled_from([False, False, False, True])):  # now and then: little is read
        raw = draw(st.sampled_from(odd.ending))
        first.append(Item(raw, front=False, ends=raw in odd.closes))
    keeping = st.sampled_from(odd.keeping).map(lambda raw: Item(raw, front=False))
    count = draw(st.integers(1, 5))
    late = draw(st.sampled_from([None] * 6 + list(range(count))))  # one at most: it waits
    items = [
        draw(st.one_of(lookup(partner, source, late=i == late), lookup(partner, source), keeping))
        for i in range(count)
    ]
    last = draw(st.one_of(st.just(Item(CLOSING, front=False)), lookup(partner, source, True)))
    everything = [*first, *items, last]
    length = sum(len(item.raw) for item in everything)
    cuts = sorted(
        draw(st.lists(st.integers(1, length - 1), max_size=0 if first else 3, unique=True))
    )
    return Sequence(source, everything, cuts)


def front_answers(sequence: Sequence, odd: dict[tuple[bytes, str], int]) -> int:
    """How many requests the front answers itself: its lookups up to the first request it
    hands to aiohttp, and what it answers of that one (``odd``: measured)."""
    answered = 0
    for item in sequence.items:
        if not item.front:
            return answered + odd.get((item.raw, sequence.source), 0)
        answered += 1
    return answered


def asked_upstream(sequence: Sequence, block: bytes) -> set[str]:
    """The numbers a server asks the provider for: every upstream lookup's, unless a
    request that ends the connection comes first."""
    if sequence.items[0].ends:
        return set()  # aiohttp reads nothing after it
    return {
        item.upstream.replace(BLOCK, block).decode()
        for item in sequence.items
        if item.upstream is not None
    }


async def test_the_front_answers_lookups_waiting_for_upstream_as_aiohttp_and_the_application(
    servers: Servers,
) -> None:
    """Hypothesis's sequences, then one with every kind of upstream answer whose answers
    are spelt out: names where the provider gives one in time, the miss otherwise."""
    odd = await asyncio.to_thread(sorted_odd, servers)
    assert len(odd.keeping) > 5 and len(odd.closes) > 5
    blocks = itertools.count(1)
    provider = servers.provider
    seen = {"waits": 0, "named": 0}

    def compare(sequence: Sequence) -> tuple[list[Answer], bytes]:
        """Send ``sequence`` to both servers at once (a late answer's wait is paid once),
        its upstream numbers never asked before; the same answers, and each asked for
        every upstream number it read. The answers, and the block of its numbers."""
        block = b"%04d" % next(blocks)
        raw = b"".join(item.raw for item in sequence.items).replace(BLOCK, block)
        cuts = sequence.cuts
        pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
        before = CountedLookups.front
        with ThreadPoolExecutor(1) as pool:
            general = pool.submit(exchange, servers.general, sequence.source, pieces)
            front = exchange(servers.front, sequence.source, pieces)
            assert front == general.result(), pieces
        assert CountedLookups.front - before == front_answers(sequence, odd.front), pieces
        asked = {number.decode() for number in NUMBER.findall(raw)}
        expected = asked_upstream(sequence, block)
        for who in ("front", "general"):
            assert provider.asked_by(who) & asked == expected, (who, pieces)
        seen["waits"] += len(expected)
        seen["named"] += sum(b"Up " in answer.body for answer in front[0])
        return front[0], block

    @settings(
        max_examples=75,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(sequences(servers.partner, odd))
    def check(sequence: Sequence) -> None:
        compare(sequence)

    await asyncio.to_thread(check)  # blocking clients; the servers run on this loop
    assert seen["waits"] >= 30 and seen["named"] >= 5, seen  # the front waited, often
    answers, block = await asyncio.to_thread(compare, every_kind(servers.partner))
    statuses = [int(answer.status_line.split()[1]) for answer in answers]
    assert statuses == [200, 200, *[404] * 5, 200, 404, 200, 200, 200, 200, 404, 404, 200]
    named = [answer.body for answer in answers if b"Up " in answer.body]
    assert len(named) == 4 and named[1] == b"Up " + block[2:] + b"00"  # format=pbx
    for who in ("front", "general"):
        asked = Counter(number for asker, number in provider.asked if asker == who)
        # a name is held (the second lookup is answered from memory), a failure is not
        name, failing = (
            upstream_number(k, 0).replace(BLOCK.decode(), block.decode()) for k in "02"
        )
        assert (asked[name], asked[failing]) == (1, 2), who


def every_kind(partner: str) -> Sequence:
    """One pipeline with each of the provider's answers, a name again (from memory), a
    failure again (asked again), and after a hand-over aiohttp's waits, cut in three."""

    def ask(kind: str, slot: int = 0, query: str = "") -> Item:
        number = upstream_number(kind, slot)
        raw = f"GET /v3/phone/{number}{query} HTTP/1.1\r\nHost: cnamd\r\n\r\n".encode()
        return Item(raw, front=True, upstream=number.encode())

    hit = Item(b"GET /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\n\r\n", front=True)
    keyed = f"?format=pbx&account_sid={partner.replace('.', '&auth_token=')}"
    items = [
        hit,
        *(ask(kind) for kind in sorted(KINDS)),
        ask("0", query=keyed),
        ask("2", query="?format=text"),
        hit,
        ask("0", 1),
        Item(ODD[2], front=False),  # Content-Length: 0: aiohttp's from here on
        ask("0", 2),
        ask("5", 1),
        ask("1", 1),
        Item(CLOSING, front=False),
    ]
    assert ODD[2].endswith(b"Content-Length: 0\r\n\r\n")
    length = sum(len(item.raw) for item in items)
    return Sequence(TRUSTED_SOURCE, items, [length // 3, 2 * length // 3])
