"""The lookup fast path (http/fastpath.py) answers exactly as the application does.

Two servers over the same cache, pool and settings: one with the fast path in
front (``LookupRunner``, as the daemon runs), one without. Hypothesis sends
each of them the same raw request -- every route the fast path serves and its
neighbours, numbers valid, invalid, encoded and withheld, every parameter and
credential form, well-formed or not, from a trusted and an untrusted source
-- and the two answers must be the same: status, body and headers (but Date).
Then what only the fast path's server shows: pipelined requests answered in
order on one connection, and a key revoked through the API refused from the
first request after the change feed applies it, while a client hammers it.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest
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
    fast_path_settings,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnamd.cache.upstream import UpstreamAnswers
from cnamd.http.app import make_app
from cnamd.http.keys import UPSTREAM
from cnamd.model import Role
from cnamd.upstream.chain import Upstream


@pytest.fixture
def api_settings() -> list[str]:
    return FAST_PATH_OVERRIDES


FastServer = daemon_test_server(CountedLookups)


@dataclass
class Pair:
    api: Api
    general: int
    fast: int
    partner: str
    user: str
    operator: str


@pytest.fixture
async def pair(api: Api, tmp_path: Path) -> AsyncIterator[Pair]:
    """The api fixture's server (the general path) and a fast-path server beside it."""
    settings = fast_path_settings(tmp_path / "f")
    general = TestServer(
        make_app(settings, api.directory, AlwaysReady(), api.pool), host="127.0.0.1"
    )
    fast = FastServer(make_app(settings, api.directory, AlwaysReady(), api.pool), host="127.0.0.1")
    await general.start_server()
    await fast.start_server()
    tokens = [
        await api.key(Role.PARTNER, enterprises=["demo"]),
        await api.key(Role.USER, user="alice"),
        await api.key(Role.OPERATOR),
    ]
    for token in tokens:
        await api.until_key(token.split(".")[0])
    assert general.port is not None and fast.port is not None
    yield Pair(api, general.port, fast.port, *tokens)
    await fast.close()
    await general.close()


@dataclass(frozen=True)
class Answer:
    status: int
    status_line: bytes
    headers: tuple[tuple[str, str], ...]
    body: bytes


def read_answer(stream: BinaryIO, head_only: bool = False) -> Answer:
    """One HTTP/1.1 answer from ``stream``: the status, the headers in order (a Date
    header's value left out), the body."""
    status_line = stream.readline()
    status = int(status_line.split(b" ")[1])
    headers = []
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").rstrip("\r\n").partition(": ")
        headers.append((name, value))
    length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
    body = b"" if head_only else stream.read(length)
    kept = tuple((k, "(a date)" if k.lower() == "date" else v) for k, v in headers)
    return Answer(status, status_line, kept, body)


def ask(port: int, source: str, raw: bytes, head_only: bool = False) -> Answer:
    """Send ``raw`` from ``source`` on a fresh connection (blocking: from a thread)."""
    with socket.create_connection(
        ("127.0.0.1", port), timeout=10, source_address=(source, 0)
    ) as sock:
        sock.sendall(raw)
        with sock.makefile("rb") as stream:
            return read_answer(stream, head_only)


NUMBERS = st.sampled_from(
    [
        "+492216698713",  # demo tenant's user and tenant names
        "+492216698712",
        "+12125550001",  # global
        "+18005550100",  # global prefix
        "492216698713",
        "12125550001",
        "2125550001",  # US national digits
        "19576339411",  # not a valid NANP number either way: refused (400)
        "9576339411",
        "+19995550000",  # no name
        "+1",
        "+10000",
        "0",
        "%2B492216698713",
        "anonymous",
        "unknown",
        "",
        "%00",
        "%FF",
        "+4922166987131234567890",
    ]
)
ROUTES = st.sampled_from(
    ["/v1/lookup/", "/v3/phone/", "/v2/phone/", "/v1/lookup", "/v3/phone", "/v1//lookup/"]
)
PLAIN_ROUTES = ["/v1/lookup/", "/v3/phone/", "/v2/phone/"]
FORMATS = ["json", "text", "pbx"]
ACCEPTS = [
    None,
    "text/plain",
    "application/json",
    "text/pbx",
    "*/*",
    "text/plain, application/json",
]
TEXT = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="#"), max_size=8
)


PLAIN_NUMBERS = st.sampled_from(PLAIN_NUMBER_LIST)


DIRECTORIES = ["yealink", "cisco", "gigaset"]


def directory_target(draw: st.DrawFn, plain: bool, keys: list[tuple[str, str]]) -> str:
    """``/v1/directory/{vendor}?...``: a number search of plain digits (what the fast path
    answers) or its neighbours: names, ``+``, other vendors and parameters, no term."""
    vendor = draw(st.sampled_from(DIRECTORIES if plain else [*DIRECTORIES, "snom", "x", ""]))
    field = "hm" if vendor == "gigaset" else "term"
    terms = [n.lstrip("+") for n in PLAIN_NUMBER_LIST]
    if plain:
        params = [(field, draw(st.sampled_from(terms)))]
        if vendor == "gigaset" and draw(st.booleans()):
            params.append(("reqid", draw(st.sampled_from(["abc-1", "x" * 40, "a.b"]))))
    else:
        names = st.sampled_from(["term", "hm", "ln", "fn", "reqid", "tenant", "user", "format"])
        values = st.one_of(
            st.sampled_from([*terms, "%2B492216698713", "+492216698713", "", "anonymous"]),
            st.sampled_from(["John", "pizza", "0", "0221", "abc-1"]),
            TEXT,
        )
        params = draw(st.lists(st.tuples(names, values), max_size=3))
    params += [(k, v) for k, v in keys if k in ("account_sid", "auth_token")]
    params = draw(st.permutations(params))
    return f"/v1/directory/{vendor}?" + "&".join(f"{k}={v}" for k, v in params)


@st.composite
def requests(draw: st.DrawFn, pair: Pair) -> tuple[str, bytes, bool]:
    """A raw request: half of them of the plain kind the fast path answers itself."""
    plain = draw(st.booleans())
    partner_id, partner_secret = pair.partner.split(".")
    user_id, user_secret = pair.user.split(".")
    values = st.one_of(
        st.sampled_from(["json", "text", "pbx", "xml", "", "demo", "alice", "bob", "+12125550001"]),
        st.sampled_from([partner_id, partner_secret, user_id, user_secret, partner_id + "x"]),
        TEXT,
    )
    names = st.sampled_from(
        ["format", "account_sid", "auth_token", "tenant", "user", "called", "number", "x"]
    )
    if plain:
        params = draw(st.lists(st.tuples(st.just("format"), st.sampled_from(FORMATS)), max_size=1))
    else:
        params = draw(st.lists(st.tuples(names, values), max_size=4))
    if draw(st.booleans()):  # a well-formed key in the query, often
        key_id, secret = draw(st.sampled_from([pair.partner, pair.user, pair.operator])).split(".")
        params += [("account_sid", key_id), ("auth_token", secret)]
        params = draw(st.permutations(params))
    query = "&".join(f"{k}={v}" for k, v in params)
    if draw(st.integers(0, 3)) == 0:  # a desk phone's directory search
        target = directory_target(draw, plain, params)
    else:
        route = draw(st.sampled_from(PLAIN_ROUTES) if plain else ROUTES)
        number = draw(PLAIN_NUMBERS if plain else NUMBERS)
        target = route + number + (("?" + query) if query or draw(st.booleans()) else "")
    method = "GET" if plain else draw(st.sampled_from(["GET", "GET", "HEAD", "POST"]))
    headers = []
    accept = draw(st.sampled_from(ACCEPTS))
    if accept is not None:
        headers.append(f"Accept: {accept}")
    basic = base64.b64encode(f"{partner_id}:{partner_secret}".encode()).decode()
    good = [None, f"Bearer {pair.partner}", f"Bearer {pair.user}", f"Basic {basic}"]
    bad = [f"Bearer {partner_id}.wrong", "Bearer nodot", "Basic !!!", "Digest x"]
    auth = draw(st.sampled_from(good if plain else good + bad))
    if auth is not None:
        headers.append(f"Authorization: {auth}")
    tokens = [None, pair.user] if plain else [None, pair.user, "nodot", f"{user_id}.wrong"]
    token = draw(st.sampled_from(tokens))
    if token is not None:
        headers.append(f"X-Auth-Token: {token}")
    if not plain and draw(st.booleans()):
        headers.append("Expect: 100-continue")
    connection = draw(st.sampled_from([None, "close", "keep-alive"]))
    if connection is not None:
        headers.append(f"Connection: {connection}")
    version = draw(st.sampled_from(["1.1", "1.1", "1.0"]))
    source = draw(st.sampled_from([TRUSTED_SOURCE, UNTRUSTED_SOURCE]))
    lines = [f"{method} {target} HTTP/{version}", "Host: cnamd", *headers, "", ""]
    return source, "\r\n".join(lines).encode(), method == "HEAD"


async def test_the_fast_path_answers_as_the_application(pair: Pair) -> None:
    @settings(
        max_examples=400,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.data())
    def check(data: st.DataObject) -> None:
        source, raw, head_only = data.draw(requests(pair))
        general = ask(pair.general, source, raw, head_only)
        fast = ask(pair.fast, source, raw, head_only)
        assert fast == general, raw

    before = CountedLookups.answered
    await asyncio.to_thread(check)  # blocking clients; the servers run on this loop
    assert CountedLookups.answered - before > 50  # the fast path did answer, often


async def test_pipelined_lookups_are_answered_in_order_on_one_connection(pair: Pair) -> None:
    """Two GETs in one write (and a third after), as a PBX reusing its connection sends them."""

    def pipelined() -> list[Answer]:
        first = b"GET /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\n\r\n"
        second = b"GET /v3/phone/12125550001?format=pbx HTTP/1.1\r\nHost: cnamd\r\n\r\n"
        with socket.create_connection(("127.0.0.1", pair.fast), timeout=10) as sock:
            sock.sendall(first + second)
            with sock.makefile("rb") as stream:
                answers = [read_answer(stream), read_answer(stream)]
                sock.sendall(b"GET /v1/lookup/+19995550000 HTTP/1.1\r\nHost: cnamd\r\n\r\n")
                answers.append(read_answer(stream))
        return answers

    json_hit, pbx_hit, miss = await asyncio.to_thread(pipelined)
    assert json_hit.status == 200 and b'"name": "NYC Pizza"' in json_hit.body
    assert (pbx_hit.status, pbx_hit.body) == (200, b"NYC Pizza")
    assert miss.status == 404 and b'"status": "not-found"' in miss.body


async def test_a_key_revoked_through_the_api_is_refused_from_the_next_request(
    pair: Pair,
) -> None:
    """A client hammers the fast path with a partner key (answered from the verified-key
    table) while an operator revokes the key; once the change feed has applied it, the
    very next request is 401, and none after it succeeds."""
    api = pair.api
    token = await api.key(Role.PARTNER, enterprises=["demo"])
    key_id, secret = token.split(".")
    await api.until_key(key_id)
    target = f"/v3/phone/12125550001?format=pbx&account_sid={key_id}&auth_token={secret}"
    request = f"GET {target} HTTP/1.1\r\nHost: cnamd\r\n\r\n".encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", pair.fast)
    statuses: list[tuple[bool, int]] = []  # (sent after the feed applied the revocation, status)
    revoked = asyncio.Event()

    async def hammer() -> None:
        for _ in range(20000):
            applied = (
                api.directory.contexts is not None and key_id not in api.directory.contexts.keys
            )
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            statuses.append((applied, int(head.split(b" ")[1])))
            if applied:
                return
            if len(statuses) == 50:
                revoked.set()
        raise AssertionError("the revocation never reached the cache")

    hammering = asyncio.create_task(hammer())
    await asyncio.wait_for(revoked.wait(), 30)
    reply = await api.call("DELETE", f"/api/operator/keys/{key_id}", pair.operator)
    assert reply.status == 200
    await asyncio.wait_for(hammering, 60)
    writer.close()
    await writer.wait_closed()
    before = [status for applied, status in statuses if not applied]
    assert set(before[:50]) == {200}
    assert statuses[-1] == (True, 401)
    if 401 in before:  # the feed applied it between a check and that request's answer
        assert 200 not in before[before.index(401) :]


async def test_a_remembered_key_is_refused_once_it_expires(pair: Pair) -> None:
    """The verified-key table checks a key's expiry on every hit: no feed change is
    needed for an expired key to be refused."""
    api = pair.api
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=5)
    token = await api.key(Role.PARTNER, enterprises=["demo"], expires_at=expires)
    key_id, secret = token.split(".")
    await api.until_key(key_id)
    target = f"/v3/phone/12125550001?format=pbx&account_sid={key_id}&auth_token={secret}"
    raw = f"GET {target} HTTP/1.1\r\nHost: cnamd\r\n\r\n".encode()
    first = await asyncio.to_thread(ask, pair.fast, TRUSTED_SOURCE, raw)
    assert (first.status, first.body) == (200, b"NYC Pizza")
    for _ in range(1000):  # bounded: the key expires 5 s after it was made
        answer = await asyncio.to_thread(ask, pair.fast, TRUSTED_SOURCE, raw)
        if answer.status != 200:
            break
        await asyncio.sleep(0.025)
    assert answer.status == 401 and datetime.datetime.now(datetime.UTC) >= expires


HELD_NAMED, HELD_NEGATIVE, HELD_EXPIRED = "+442079460123", "+442079460124", "+442079460125"


@pytest.fixture
async def held_pair(api: Api, tmp_path: Path) -> AsyncIterator[tuple[Pair, UpstreamAnswers]]:
    """``pair`` with held upstream answers (no sources to ask) in both applications."""
    settings = fast_path_settings(tmp_path / "h")
    held = UpstreamAnswers()
    later = time.time() + 3600
    held.replace(
        [
            (HELD_NAMED, "Up Named", "provider-a", later),
            (HELD_NEGATIVE, None, "provider-a", later),
            (HELD_EXPIRED, "Long Gone", "provider-a", time.time() - 1),
        ]
    )
    servers = []
    for server_class in (TestServer, FastServer):
        app = make_app(settings, api.directory, AlwaysReady(), api.pool)
        app[UPSTREAM] = Upstream(held, None, settings.upstream)
        servers.append(server_class(app, host="127.0.0.1"))
        await servers[-1].start_server()
    partner = await api.key(Role.PARTNER, enterprises=["demo"])
    await api.until_key(partner.split(".")[0])
    general, fast = (s.port for s in servers)
    assert general is not None and fast is not None
    yield Pair(api, general, fast, partner, "", ""), held
    for server in servers:
        await server.close()


async def test_held_upstream_answers_are_answered_as_the_application_does(
    held_pair: tuple[Pair, UpstreamAnswers],
) -> None:
    """A local miss held from upstream is answered by the fast path (it needs no wait):
    named (with its source), held negative, expired, for a tenant that turned upstream
    off: the same bytes as the application's."""
    pair, held = held_pair
    key_id, secret = pair.partner.split(".")
    keyed = f"?account_sid={key_id}&auth_token={secret}"
    targets = [
        f"{route}{number}{query}"
        for route in PLAIN_ROUTES
        for number in (HELD_NAMED, HELD_NEGATIVE, HELD_EXPIRED, HELD_NAMED[1:])
        for query in ("", "?format=text", "?format=pbx", keyed)
    ]

    def compare(source: str) -> list[Answer]:
        answers = []
        for target in targets:
            raw = f"GET {target} HTTP/1.1\r\nHost: cnamd\r\n\r\n".encode()
            general = ask(pair.general, source, raw)
            assert ask(pair.fast, source, raw) == general, target
            answers.append(general)
        return answers

    before = CountedLookups.answered
    answers = await asyncio.to_thread(compare, TRUSTED_SOURCE)
    assert CountedLookups.answered - before >= len(targets) // 2  # not referred to the app
    named = [a for t, a in zip(targets, answers, strict=True) if HELD_NAMED in t]
    assert any(b"Up Named" in a.body for a in named) and any(a.status == 200 for a in named)
    assert all(a.status != 200 for t, a in zip(targets, answers, strict=True) if "460124" in t)
    # the demo tenant turns upstream off: its keyed lookups no longer read the held answers
    contexts = pair.api.directory.contexts
    demo = contexts.tenant("demo") if contexts is not None else None
    assert demo is not None
    held.off_tenants = frozenset({demo.id})  # one object, shared by both applications
    off = await asyncio.to_thread(compare, UNTRUSTED_SOURCE)
    with_key = [a for t, a in zip(targets, off, strict=True) if "account_sid" in t]
    assert with_key and not any(b"Up Named" in a.body for a in with_key)
