"""The connection front (http/front.py) answers byte for byte as aiohttp and the application do.

Two servers over the same cache, pool and settings: one with the front (the
daemon's ``LookupRunner``), one plain aiohttp with the application alone.
Hypothesis sends both the same raw bytes on one connection -- a sequence of
plain lookups and requests the front must leave to aiohttp (malformed heads,
bodies, framing headers, HTTP/1.0, obs-fold, bare LF ...), cut into pieces --
ending with a request that closes the connection; the answers (status line,
headers but Date, body) and where the connection closes must be the same.
Then what only the front shows: a client resetting in the middle of a long
pipeline while others keep being answered, a client that does not read (the
front stops reading until it does), the keep-alive idle timeout, shutdown,
the access log, the metrics, a TLS listener, and a tenant's change reaching
the next lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import shutil
import socket
import ssl
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    fast_path_settings,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certificates import self_signed
from cnamd.http import access_log
from cnamd.http.app import make_app
from cnamd.http.front import FrontServer
from cnamd.logs import KeyValueFormatter
from cnamd.model import Role
from cnamd.turn_budget import TurnBudget
from loop_turns import Turns

#: the last request of every sequence: answered, then the connection closes
CLOSING = b"GET /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\nConnection: close\r\n\r\n"
PIZZA = b"GET /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\n\r\n"


@pytest.fixture
def api_settings() -> list[str]:
    return FAST_PATH_OVERRIDES


FrontTestServer = daemon_test_server(CountedLookups)


def front_server(server: TestServer) -> FrontServer:
    assert server.runner is not None and isinstance(server.runner.server, FrontServer)
    return server.runner.server


@dataclass
class Servers:
    api: Api
    general: int
    front: TestServer
    partner: str
    settings: Any

    @property
    def port(self) -> int:
        assert self.front.port is not None
        return self.front.port


@pytest.fixture
async def servers(api: Api, tmp_path: Path) -> AsyncIterator[Servers]:
    """A plain aiohttp server of the application and one with the front, side by side.

    The front answers one request per turn of the loop (a turn budget of 0): every
    request after a turn's first is put off to a later turn, so each test here also
    goes through the front's deferral, read and write pauses and hand-overs included."""
    settings = fast_path_settings(tmp_path / "f")
    general = TestServer(
        make_app(settings, api.directory, AlwaysReady(), api.pool), host="127.0.0.1"
    )
    front = FrontTestServer(
        make_app(settings, api.directory, AlwaysReady(), api.pool), host="127.0.0.1"
    )
    await general.start_server()
    await front.start_server()
    front_server(front).turn = TurnBudget(0.0)
    partner = await api.key(Role.PARTNER, enterprises=["demo"])
    await api.until_key(partner.split(".")[0])
    assert general.port is not None
    yield Servers(api, general.port, front, partner, settings)
    await front.close()
    await general.close()


@dataclass(frozen=True)
class Answer:
    status_line: bytes
    headers: tuple[tuple[str, str], ...]
    body: bytes


def read_answers(sock: socket.socket) -> tuple[list[Answer], bytes]:
    """Every answer on ``sock`` until the server closes it, and any bytes left after the
    last complete one (blocking, bounded by the socket's timeout)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return read_answers_of(data)


#: an IMF-fixdate Date header (RFC 9110 5.6.7), wherever it falls in the bytes
DATE_HEADER = re.compile(rb"(?im)^(date: )\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT")
#: what every Date becomes: as long as any, so the framing stays as sent
SOME_DATE = b"Thu, 01 Jan 1970 00:00:00 GMT"


def read_answers_of(data: bytes) -> tuple[list[Answer], bytes]:
    """The answers in ``data``, and the bytes after the last complete one.

    Every Date's value is made one and the same in the raw bytes before they are cut
    into answers: an answer to HEAD announces a body it does not send, so the answers
    after it are cut wrongly, with a Date inside a "body"; the two servers' cuts must
    still compare equal when their answers fall in different seconds."""
    data = DATE_HEADER.sub(lambda m: m.group(1) + SOME_DATE, data)
    answers = []
    while (end := data.find(b"\r\n\r\n")) >= 0:
        status_line, *lines = data[:end].split(b"\r\n")
        headers = []
        for line in lines:
            name, _, value = line.decode("latin-1").partition(": ")
            headers.append((name, value))
        length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
        body, data = data[end + 4 : end + 4 + length], data[end + 4 + length :]
        answers.append(Answer(status_line, tuple(headers), body))
    return answers, data


def exchange(port: int, source: str, pieces: list[bytes]) -> tuple[list[Answer], bytes]:
    """Send ``pieces`` one write each on a fresh connection; the answers until it closes."""
    with socket.create_connection(
        ("127.0.0.1", port), timeout=10, source_address=(source, 0)
    ) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in pieces:
            sock.sendall(piece)
        return read_answers(sock)


@st.composite
def plain_request(draw: st.DrawFn, partner: str) -> bytes:
    """A lookup the front answers (or, from an untrusted source without a key, refers)."""
    key_id, secret = partner.split(".")
    route = draw(st.sampled_from(["/v1/lookup/", "/v3/phone/", "/v2/phone/"]))
    params = []
    fmt = draw(st.sampled_from([None, "json", "text", "pbx"]))
    if fmt is not None:
        params.append(f"format={fmt}")
    how = draw(st.sampled_from(["none", "query", "bearer", "token"]))
    if how == "query":
        params += [f"account_sid={key_id}", f"auth_token={secret}"]
    target = route + draw(st.sampled_from(PLAIN_NUMBER_LIST))
    if params:
        target += "?" + "&".join(draw(st.permutations(params)))
    host = draw(
        st.sampled_from(["Host: cnamd", "host: cnamd", "HOST:cnamd", "Host: 127.0.0.1:8081"])
    )
    headers = [host]
    if how == "bearer":
        headers.append(f"Authorization: Bearer {partner}")
    elif how == "token":
        headers.append(f"X-Auth-Token: {partner}")
    extras = ["User-Agent: Asterisk PBX", "Accept: text/plain", "Connection: keep-alive"]
    headers += draw(st.lists(st.sampled_from([*extras, "Accept-Encoding: gzip"]), unique=True))
    headers = draw(st.permutations(headers))
    return "\r\n".join([f"GET {target} HTTP/1.1", *headers, "", ""]).encode()


#: requests the front must leave to aiohttp (each well-framed or refused by its parser)
ODD = [
    b"GET /v1/lookup/+12125550001 HTTP/1.1\nHost: cnamd\n\n",  # bare LF
    b"GET /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\nX-A: 1\r\n 2\r\n\r\n",  # obs-fold
    b"GET /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\nContent-Length: 0\r\n\r\n",
    b"GET /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n0\r\n\r\n",
    b"GET /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\nContent-Length: 3\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",  # smuggling's classic: aiohttp refuses it
    b"GET /v1/lookup/+12125550001 HTTP/1.0\r\nHost: cnamd\r\n\r\n",
    b"GET /v1/lookup/+12125550001 HTTP/1.0\r\nHost: cnamd\r\nConnection: keep-alive\r\n\r\n",
    b"GET /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\nHost: other\r\n\r\n",
    b"GET /v1/lookup/+12125550001 HTTP/1.1\r\n\r\n",  # no Host
    b"GET /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\nAccept : text/plain\r\n\r\n",
    b"GET /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\nAccept:\ttext/plain\r\n\r\n",
    b"GET /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\nAccept: text/plain \r\n\r\n",
    b"GET /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\nUser-Agent: caf\xc3\xa9\r\n\r\n",
    b"GET /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\nUser-Agent: a\x00b\r\n\r\n",
    b"GET /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\nX-Long: " + b"x" * 5000 + b"\r\n\r\n",
    b"GET /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\nExpect: 100-continue\r\n\r\n",
    b"GET /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\nUpgrade: websocket\r\n\r\n",
    b"GET /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\nConnection: close\r\n\r\n",
    b"GET /v1/lookup/%2B12125550001 HTTP/1.1\r\nHost: cnamd\r\n\r\n",
    b"GET /v1/lookup/+12125550001?format=json&format=text HTTP/1.1\r\nHost: cnamd\r\n\r\n",
    b"GET /v1/lookup/+12125550001?tenant=demo HTTP/1.1\r\nHost: cnamd\r\n\r\n",
    b"GET http://cnamd/v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\n\r\n",
    b"GET  /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\n\r\n",
    b"get /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\n\r\n",
    b"HEAD /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\nContent-Length: 0\r\n\r\n",
    b"POST /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\nContent-Length: 2\r\n\r\n{}",
    b"\r\nGET /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\n\r\n",  # an empty line first
    b"GET /v1/lookup/+12125550001 HTTP/1.1\r\nHost: cnamd\r\n\r\n\r\n",  # and after
    b"GET /v1/lookup/+12125550001 HTTP/1.1 \r\nHost: cnamd\r\n\r\n",
    b"GET /v1/lookup/+12125550001 HTTP/2.0\r\nHost: cnamd\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: cnamd\r\n\r\n",
    b"GET /v1/lookup/anonymous HTTP/1.1\r\nHost: cnamd\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # a TLS ClientHello on the plain port
]


@st.composite
def sequences(
    draw: st.DrawFn, partner: str, keeping: list[bytes], ending: list[bytes]
) -> tuple[str, list[bytes]]:
    """Requests on one connection, CLOSING last, cut into pieces at random places:
    plain lookups and odd requests aiohttp answers and goes on from (``keeping``); a
    request that ends the connection (``ending``) only first. Where aiohttp's parser
    refuses a request it also drops the requests it parsed before it in the same read,
    so what it answers for one after others depends on how TCP cut the bytes
    (test_a_bad_request_after_lookups_ends_the_connection_after_their_answers), and
    a refusal quotes the bytes of the read it came in."""
    first = draw(st.lists(st.sampled_from(ending), max_size=1))
    items = draw(
        st.lists(
            st.one_of(plain_request(partner), plain_request(partner), st.sampled_from(keeping)),
            min_size=1,
            max_size=5,
        )
    )
    raw = b"".join([*first, *items, CLOSING])
    # a refusal quotes the bytes of the read it came in: those are not cut
    cuts = sorted(
        draw(st.lists(st.integers(1, len(raw) - 1), max_size=0 if first else 3, unique=True))
    )
    source = draw(st.sampled_from([TRUSTED_SOURCE, TRUSTED_SOURCE, UNTRUSTED_SOURCE]))
    return source, [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]


def _sorted_odd(general: int) -> tuple[list[bytes], list[bytes]]:
    """ODD split into what aiohttp answers and goes on from, and what ends the connection."""
    keeping, ending = [], []
    for item in ODD:
        answers, _ = exchange(general, TRUSTED_SOURCE, [item + CLOSING])
        (keeping if len(answers) == 2 else ending).append(item)
    return keeping, ending


async def test_the_front_answers_every_byte_sequence_as_aiohttp_and_the_application(
    servers: Servers,
) -> None:
    keeping, ending = await asyncio.to_thread(_sorted_odd, servers.general)
    assert len(keeping) > 5 and len(ending) > 5

    @settings(
        max_examples=250,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(sequences(servers.partner, keeping, ending))
    def check(sequence: tuple[str, list[bytes]]) -> None:
        source, pieces = sequence
        general = exchange(servers.general, source, pieces)
        front = exchange(servers.port, source, pieces)
        assert front == general, pieces

    before = CountedLookups.front
    await asyncio.to_thread(check)  # blocking clients; the servers run on this loop
    assert CountedLookups.front - before > 50  # the front did answer, often
    await _until(lambda: not front_server(servers.front).fronts)  # every connection let go


async def test_a_bad_request_after_lookups_ends_the_connection_after_their_answers(
    servers: Servers,
) -> None:
    """Lookups and then a request aiohttp refuses, in one write: the front answers the
    lookups, then aiohttp refuses the rest, as aiohttp alone does when each lookup
    arrives in a read of its own (here: sent after the previous answer came)."""
    _, ending = await asyncio.to_thread(_sorted_odd, servers.general)

    def lockstep(requests: list[bytes]) -> tuple[list[Answer], bytes]:
        with socket.create_connection(("127.0.0.1", servers.general), timeout=10) as sock:
            answers = []
            for request in requests[:-1]:
                sock.sendall(request)
                with sock.makefile("rb") as stream:  # one answer, read to its end
                    head = b""
                    while (line := stream.readline()) != b"\r\n":
                        head += line
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    answers.append(head + b"\r\n" + stream.read(length))
            sock.sendall(requests[-1])
            rest, left = read_answers(sock)
        parsed, _ = read_answers_of(b"".join(answers))
        return parsed + rest, left

    lookups = [PIZZA, b"GET /v3/phone/12125550001?format=pbx HTTP/1.1\r\nHost: cnamd\r\n\r\n"]
    for bad in ending:
        sent = [*lookups, bad + CLOSING]
        front = await asyncio.to_thread(exchange, servers.port, TRUSTED_SOURCE, [b"".join(sent)])
        assert front == await asyncio.to_thread(lockstep, sent), bad


async def _until(condition: Any, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("never came true")


async def _lookups(port: int, rounds: int, depth: int) -> int:
    """A PBX reusing one connection: ``rounds`` pipelines of ``depth`` lookups, every
    answer read and checked. Returns how many were answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answered = 0
    try:
        for _ in range(rounds):
            writer.write(PIZZA * depth)
            for _ in range(depth):
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                assert b'"NYC Pizza"' in await reader.readexactly(length)
                answered += 1
    finally:
        writer.close()
        await writer.wait_closed()
    return answered


async def test_clients_resetting_mid_pipeline_leave_the_others_answered(
    servers: Servers,
) -> None:
    """While eight clients pipeline lookups, others send 2,000 lookups in one write and
    reset the connection (RST) after reading a few answers, again and again: every
    lookup of the eight is answered, and no connection is left behind."""

    async def resetter() -> None:
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", servers.port)
            writer.write(PIZZA * 2000)
            await asyncio.wait_for(reader.readuntil(b"NYC Pizza"), 10)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

    results = await asyncio.gather(
        resetter(), resetter(), *(_lookups(servers.port, 40, 10) for _ in range(8))
    )
    assert results[2:] == [400] * 8
    await _until(lambda: not front_server(servers.front).fronts)


class TurnNoting:
    """The front's answerer, noting the turn of each answer; at the first, it sets a
    timer due at once, and notes how many answers were given before the timer ran."""

    def __init__(self, fast: Any, turns: Turns) -> None:
        self._fast = fast
        self._turns = turns
        self.turns: list[int] = []
        self.before_timer: list[int] = []

    def __call__(self, request: web.Request) -> Any:
        return self._fast(request)

    def answer(self, request: web.Request) -> Any:
        if not self.turns:
            asyncio.get_running_loop().call_later(
                0, lambda: self.before_timer.append(len(self.turns))
            )
        self.turns.append(self._turns.now)
        return self._fast.answer(request)


async def _answer_heads(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    """The status lines of the next ``count`` answers on ``reader``."""
    statuses = []
    for _ in range(count):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        statuses.append(head.split(b"\r\n", 1)[0])
    return statuses


async def test_a_burst_is_answered_over_turns_with_the_timers_run_between(
    servers: Servers,
) -> None:
    """400 lookups pipelined in one write, and one on each of 40 other connections, all
    at once, with a turn budget of 0.5 ms: they are answered over many turns of the
    loop, a timer due at the first answer runs while most are still to come (it waited
    for all of them before), and every lookup is answered, in order."""
    front = front_server(servers.front)
    front.turn = TurnBudget(0.0005)
    turns = Turns()
    noting = TurnNoting(front.fast, turns)
    front.fast = noting
    unknown = PIZZA.replace(b"+12125550001", b"+12125559999")
    clients: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(41):
            clients.append(await asyncio.open_connection("127.0.0.1", servers.port))
        clients[0][1].write((PIZZA + unknown) * 200)
        for _, writer in clients[1:]:
            writer.write(PIZZA)
        pipelined, *singles = await asyncio.gather(
            _answer_heads(clients[0][0], 400),
            *(_answer_heads(reader, 1) for reader, _ in clients[1:]),
        )
    finally:
        turns.stop()
        for _, writer in clients:
            writer.close()
    assert pipelined == [b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found"] * 200
    assert singles == [[b"HTTP/1.1 200 OK"]] * 40
    per_turn = Counter(noting.turns)
    assert sum(per_turn.values()) == 440
    assert len(per_turn) >= 5 and max(per_turn.values()) <= 200, per_turn
    assert noting.before_timer[0] < 100, noting.before_timer


async def test_a_client_that_does_not_read_is_not_read_from(servers: Servers) -> None:
    """A client pipelines lookups without reading the answers: once the transport's
    write buffer is past its high-water mark the front stops reading (the client's
    writes then block), while other clients are answered; when the client reads,
    every answer arrives, in order."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    sock.connect(("127.0.0.1", servers.port))
    front = front_server(servers.front)
    await _until(lambda: len(front.fronts) == 1)
    (flooded,) = front.fronts
    assert flooded._transport is not None
    server_side = flooded._transport.get_extra_info("socket")
    server_side.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # no autotuning
    stuck = asyncio.Event()
    loop = asyncio.get_running_loop()

    def flood() -> int:
        sock.settimeout(1)  # bounded: a write blocked this long means the server stopped
        sent = 0
        try:
            while sent < 200_000:
                sock.sendall(PIZZA * 50)
                sent += 50
        except TimeoutError:
            loop.call_soon_threadsafe(stuck.set)
        return sent

    flooding = asyncio.create_task(asyncio.to_thread(flood))
    await asyncio.wait_for(stuck.wait(), 60)
    assert flooded._reading_paused and flooded._writing_paused
    assert flooded._transport.get_write_buffer_size() < 2 * 1024 * 1024  # one read's answers
    assert await _lookups(servers.port, 5, 10) == 50  # the others are answered meanwhile
    sent = await flooding  # requests the kernel took whole; a last one may be cut

    def drain() -> int:
        sock.settimeout(10)
        answered = 0
        with sock.makefile("rb") as stream:
            for _ in range(sent):
                assert stream.readline() == b"HTTP/1.1 200 OK\r\n", answered
                length = 0
                while (line := stream.readline()) != b"\r\n":
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                assert b'"NYC Pizza"' in stream.read(length)
                answered += 1
        return answered

    assert await asyncio.to_thread(drain) == sent > 100
    sock.close()


async def test_an_idle_connection_is_closed_and_shutdown_closes_the_rest(
    api: Api, tmp_path: Path
) -> None:
    """The keep-alive timeout closes a connection idle since its last answer (or holding
    half a head); stopping the server closes an idle keep-alive connection."""
    settings = fast_path_settings(tmp_path / "f")
    server = FrontTestServer(
        make_app(settings, api.directory, AlwaysReady(), api.pool), host="127.0.0.1"
    )
    await server.start_server(keepalive_timeout=0.3)
    assert server.port is not None
    port = server.port

    def idle(first: bytes) -> tuple[list[Answer], bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(first)
            return read_answers(sock)  # until the server closes it

    answers, rest = await asyncio.to_thread(idle, PIZZA)
    assert [a.body for a in answers] == [answers[0].body] and b"NYC Pizza" in answers[0].body
    assert rest == b""
    assert await asyncio.to_thread(idle, b"GET /v1/lookup/+1212") == ([], b"")
    await server.close()

    server = FrontTestServer(make_app(settings, api.directory, AlwaysReady(), api.pool))
    await server.start_server()
    assert server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(PIZZA)
    await asyncio.wait_for(reader.readuntil(b'"}'), 10)  # the whole answer
    assert front_server(server).fronts
    await server.close()
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
    writer.close()
    await writer.wait_closed()


async def test_connections_over_the_cap_are_closed_at_accept(api: Api, tmp_path: Path) -> None:
    """``http.max_connections``: with two open (one on the front, one handed to aiohttp),
    a third is closed as it is accepted and counted; once one closes, a new one is served."""
    from prometheus_client import REGISTRY

    def refused() -> float:
        return REGISTRY.get_sample_value("cnamd_http_connections_refused_total") or 0.0

    settings = fast_path_settings(tmp_path / "f")
    server = FrontTestServer(
        make_app(settings, api.directory, AlwaysReady(), api.pool), host="127.0.0.1"
    )
    await server.start_server(max_connections=2)
    assert server.port is not None
    port, counts = server.port, front_server(server)
    before = refused()
    front = await asyncio.open_connection("127.0.0.1", port)
    front[1].write(PIZZA)
    await asyncio.wait_for(front[0].readuntil(b'"}'), 10)
    handed = await asyncio.open_connection("127.0.0.1", port)
    handed[1].write(b"GET /healthz HTTP/1.1\r\nHost: cnamd\r\n\r\n")
    await asyncio.wait_for(handed[0].readuntil(b"\r\n\r\n"), 10)
    assert counts.open == 2
    third = await asyncio.open_connection("127.0.0.1", port)
    third[1].write(PIZZA)
    with contextlib.suppress(ConnectionResetError):
        assert await asyncio.wait_for(third[0].read(), 10) == b""  # closed, unanswered
    assert refused() == before + 1
    handed[1].close()
    await handed[1].wait_closed()
    for _ in range(200):  # bounded: until the server has seen the close
        if counts.open == 1:
            break
        await asyncio.sleep(0.01)
    fourth = await asyncio.open_connection("127.0.0.1", port)
    fourth[1].write(PIZZA)
    assert b"NYC Pizza" in await asyncio.wait_for(fourth[0].readuntil(b'"}'), 10)
    for _, writer in (front, third, fourth):
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    await server.close()
    for _ in range(200):  # bounded: every connection_lost run
        if counts.open == 0:
            break
        await asyncio.sleep(0.01)
    assert counts.open == 0


async def test_the_access_log_has_the_fronts_answers(servers: Servers) -> None:
    """With the access log on, a lookup the front answers is logged as aiohttp logs
    one: the path with the secret redacted, the status, the key."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(KeyValueFormatter())
    logger = logging.getLogger(access_log.LOGGER)
    logger.addHandler(handler)
    level, propagate = logger.level, logger.propagate
    logger.propagate = False
    access_log.set_enabled(True)
    server = FrontTestServer(
        make_app(servers.settings, servers.api.directory, AlwaysReady(), servers.api.pool),
        host="127.0.0.1",
    )
    await server.start_server(access_log=logger, access_log_class=access_log.AccessLog)
    try:
        key_id, secret = servers.partner.split(".")
        target = f"/v3/phone/12125550001?format=pbx&account_sid={key_id}&auth_token={secret}"
        raw = f"GET {target} HTTP/1.1\r\nHost: cnamd\r\nUser-Agent: FreePBX\r\n\r\n".encode()
        before = CountedLookups.front
        assert server.port is not None
        answers, _ = await asyncio.to_thread(exchange, server.port, TRUSTED_SOURCE, [raw, CLOSING])
        assert answers[0].body == b"NYC Pizza"
        assert CountedLookups.front == before + 1
        access_log.flush()
        line = stream.getvalue().splitlines()[0]
        assert "auth_token=REDACTED" in line and secret not in stream.getvalue()
        for field in (f"key_id={key_id}", "status=200", "agent=FreePBX", "remote=127.0.0.1"):
            assert field in line, line
    finally:
        await server.close()
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


async def test_a_tenants_new_region_reads_the_next_lookup(servers: Servers) -> None:
    """A partner key's lookup context is remembered per contexts table: once the feed
    installs the table with the tenant's new region, the next lookup through the front
    reads bare national digits in it, as the application does."""
    api = servers.api
    operator = await api.key(Role.OPERATOR)
    await api.until_key(operator.split(".")[0])
    key_id, secret = servers.partner.split(".")
    target = f"/v3/phone/02216698713?format=pbx&account_sid={key_id}&auth_token={secret}"
    raw = f"GET {target} HTTP/1.1\r\nHost: cnamd\r\n\r\n".encode()

    def ask(port: int) -> list[Answer]:
        return exchange(port, TRUSTED_SOURCE, [raw, CLOSING])[0]

    front = await asyncio.to_thread(ask, servers.port)
    assert front == await asyncio.to_thread(ask, servers.general)
    assert front[0].status_line == b"HTTP/1.1 200 OK"  # Cologne, in the tenant's DE
    tenant = (await api.call("GET", "/api/operator/tenants/demo", operator)).body
    change = {"name": tenant["name"], "region": "US", "networks": tenant["networks"]}
    replaced = await api.call("PUT", "/api/operator/tenants/demo", operator, json=change)
    assert replaced.status == 200
    before = CountedLookups.front
    for _ in range(400):  # bounded: until the feed has installed the new table
        front = await asyncio.to_thread(ask, servers.port)
        if front[0].status_line != b"HTTP/1.1 200 OK":
            break
        await asyncio.sleep(0.025)
    assert front[0].status_line == b"HTTP/1.1 400 Bad Request"  # 0221... is no US number
    assert front == await asyncio.to_thread(ask, servers.general)
    assert CountedLookups.front > before


async def test_the_front_answers_over_tls_and_hands_over_there_too(
    servers: Servers, tmp_path: Path
) -> None:
    """On a TLS listener the front reads what the TLS transport decrypted: it answers a
    lookup, then a request it leaves to aiohttp takes the connection, as over TCP."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    cert, key = await asyncio.to_thread(self_signed, tmp_path, "127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    client_ctx.check_hostname = False
    api = servers.api
    server = FrontTestServer(
        make_app(servers.settings, api.directory, AlwaysReady(), api.pool), host="127.0.0.1"
    )
    await server.start_server(ssl=server_ctx)
    try:
        assert server.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=client_ctx)
        before = CountedLookups.front
        handed = PIZZA.replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n")
        writer.write(PIZZA + PIZZA + handed + CLOSING)
        data = await asyncio.wait_for(reader.read(), 10)  # until the server closes
        answers, rest = read_answers_of(data)
        assert rest == b"" and [a.status_line for a in answers] == [b"HTTP/1.1 200 OK"] * 4
        assert all(b'"NYC Pizza"' in a.body for a in answers)
        assert CountedLookups.front == before + 2  # the last two were aiohttp's
        writer.close()
    finally:
        await server.close()


def _counted(exposition: str, route: str, status: str) -> float:
    """``cnamd_http_requests_total`` for a GET of ``route`` answered ``status``."""
    wanted = ("cnamd_http_requests_total{", f'route="{route}"', f'status="{status}"')
    lines = [line for line in exposition.splitlines() if all(w in line for w in wanted)]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


async def test_the_fronts_answers_are_counted_by_route_template(servers: Servers) -> None:
    """What the front answers is in ``cnamd_http_requests_total`` by route template and
    status, as the application counts it; the raw number never becomes a label."""
    metrics_url = f"http://127.0.0.1:{servers.general}/metrics"

    async def exposition() -> str:
        async with servers.api.session.get(metrics_url) as reply:
            return await reply.text()

    before = await exposition()
    refused = b"GET /v3/phone/19576339411?format=pbx HTTP/1.1\r\nHost: cnamd\r\n\r\n"
    pieces = [PIZZA * 3 + refused * 2 + CLOSING]
    front = CountedLookups.front
    answers, _ = await asyncio.to_thread(exchange, servers.port, TRUSTED_SOURCE, pieces)
    assert CountedLookups.front == front + 5  # all but CLOSING, which is aiohttp's
    assert [a.status_line[9:12] for a in answers] == [b"200"] * 3 + [b"400"] * 2 + [b"200"]
    after = await exposition()
    lookups, phones = "/v1/lookup/{number}", "/v3/phone/{number}"
    assert _counted(after, lookups, "200") - _counted(before, lookups, "200") == 4
    assert _counted(after, phones, "400") - _counted(before, phones, "400") == 2
    assert "19576339411" not in after and "12125550001" not in after


class Exploding(CountedLookups):
    """A fast path with a defect: it raises for one number."""

    def answer(self, request: web.Request) -> web.StreamResponse | None:
        if request.raw_path == "/v1/lookup/+19995550000":
            raise RuntimeError("a defect")
        return super().answer(request)


ExplodingServer = daemon_test_server(Exploding)


async def test_a_defect_in_the_fast_path_is_aiohttps_500_not_a_dropped_connection(
    servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    """The front catches what ``FastLookups.answer`` raises and hands the connection to
    aiohttp, which answers that request as it did before the front (its 500)."""
    api = servers.api
    server = ExplodingServer(
        make_app(servers.settings, api.directory, AlwaysReady(), api.pool), host="127.0.0.1"
    )
    await server.start_server()
    try:
        assert server.port is not None
        boom = b"GET /v1/lookup/+19995550000 HTTP/1.1\r\nHost: cnamd\r\n\r\n"
        answers, _ = await asyncio.to_thread(
            exchange, server.port, TRUSTED_SOURCE, [PIZZA + boom + CLOSING]
        )
        assert answers[0].status_line == b"HTTP/1.1 200 OK" and b"NYC Pizza" in answers[0].body
        assert answers[1].status_line == b"HTTP/1.1 500 Internal Server Error"
        assert "the lookup front failed" in caplog.text
    finally:
        await server.close()


def test_the_daemon_closes_an_idle_http_connection_at_http_idle_timeout(tmp_path: Path) -> None:
    """``http.idle_timeout`` reaches the daemon's HTTP server (aiohttp's own default would
    keep an idle connection an hour): an answered connection left idle, one trickling half
    a lookup's head (the front's) and one trickling half another head (aiohttp's) are
    each closed at it; a busy one is not."""
    from test_daemon import Daemon, wait_ready

    daemon = Daemon(tmp_path, "--workers", "1", "--set", "http.idle_timeout=1")
    try:
        wait_ready(daemon.base, daemon.proc)

        def closed_after(first: bytes, trickle: bytes = b"") -> float:
            """Seconds from ``first`` sent until the server closes the connection."""
            with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=10) as sock:
                sock.sendall(first)
                started = time.monotonic()
                sock.settimeout(0.25)
                for _ in range(80):  # at most 20 s
                    try:
                        if sock.recv(65536) == b"":
                            return time.monotonic() - started
                    except TimeoutError:
                        if trickle:
                            sock.sendall(trickle[:1])
                            trickle = trickle[1:]
            raise AssertionError("still open after 20 s")

        assert 0.5 < closed_after(PIZZA) < 4
        assert 0.5 < closed_after(b"GET /v1/lookup/+1212", trickle=b"5550001 HTTP/1.1") < 4
        head = b"POST /api/operator/tenants HTTP/1.1\r\nHost: cnamd\r\n"
        assert 0.5 < closed_after(head, trickle=b"X-Slow: " + b"a" * 40) < 4
        with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=10) as sock:
            for _ in range(6):  # 3 s of a request every 0.5 s: each answer resets the clock
                sock.sendall(PIZZA)
                assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
                time.sleep(0.5)  # the client's pace, not a wait for the server
            sock.sendall(PIZZA)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        daemon.stop()
