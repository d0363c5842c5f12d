"""The lookup front's wait for upstream under load: a real daemon, a provider misbehaving on
purpose (http/front.py, fastpath.Waiting; issue #17).

Sixty-four PBX connections at once, each pipelining local hits and numbers of its
own that go upstream, while the provider names some at once, knows no name for
others, answers 500 or resets, answers past ``upstream.http_deadline`` or never;
a few clients reset their connection while the front waits for their lookup.
Every request of a surviving connection is answered in order, with the
provider's name or the miss; no connection is handed to aiohttp; a late answer
is held afterwards (its number is answered from memory, not paid again); a
failure is not; and the daemon answers as before.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from fake_provider import FAMILY, FakeProvider, unguarded_source

from cnamd.store.embedded import EmbeddedPostgres
from databases import Database
from ops_daemon import Daemon, eventually, value
from test_daemon import free_port

pytestmark = pytest.mark.timeout(120)

DEADLINE = 0.5  # the daemon's upstream.http_deadline
LATE = 1.0  # the provider's late answers come this long after they are asked
SOURCE_TIMEOUT = 1.5  # one request to the provider, at most (a hang ends there)
CONNECTIONS = 64
RESETTING = 8  # of them: every eighth resets while the front waits for its lookup
HIT = ("+12125550001", "NYC Pizza")  # a name of the demo data: a local hit


@pytest.fixture(scope="module")
async def db(pg: EmbeddedPostgres, demo_template: str) -> AsyncIterator[str]:
    async with Database(pg, demo_template) as url:
        yield url


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    server = FakeProvider(free_port(), late=LATE)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, db: str, fake: FakeProvider
) -> Iterator[Daemon]:
    """A daemon with the demo names and one source: the provider, for FAMILY numbers,
    with room for every request at once and a breaker that never opens (what is
    tested is the front's wait, not the source's guard)."""
    source = unguarded_source(fake.port, timeout=SOURCE_TIMEOUT)
    args = (
        *("--set", f"upstream.http_deadline={DEADLINE}"),
        *("--set", "upstream.sources=" + json.dumps([source])),
    )
    started = Daemon(tmp_path_factory.mktemp("front-load"), database_url=db, demo=False, args=args)
    try:
        started.wait_ready(60)
        yield started
    finally:
        started.stop()


@dataclass(frozen=True)
class Ask:
    """One pipelined lookup: its bytes, the answer expected (status, body), the
    FAMILY number it asks upstream for and that number's behaviour (none: a hit)."""

    raw: bytes
    expected: tuple[int, bytes]
    number: str = ""
    family: str = ""


def hit(route: str) -> Ask:
    """A lookup of a local name: plain text (``/v1/lookup``) or ``format=pbx``."""
    query = "?format=text" if route == "/v1/lookup/" else "?format=pbx"
    raw = f"GET {route}{HIT[0]}{query} HTTP/1.1\r\nHost: cnamd\r\n\r\n"
    return Ask(raw.encode(), (200, HIT[1].encode()))


def upstream(connection: int, slot: int, family: str) -> Ask:
    """A lookup of a number of the connection's own, asked upstream: the provider's name
    when it gives one in time, else the miss (404, empty in the text formats)."""
    number = f"{FAMILY}{family}{connection:04d}{slot:02d}"
    route = ("/v1/lookup/", "/v3/phone/", "/v2/phone/")[slot % 3]
    query = "?format=text" if route == "/v1/lookup/" else "?format=pbx"
    raw = f"GET {route}{number}{query} HTTP/1.1\r\nHost: cnamd\r\nUser-Agent: PBX\r\n\r\n"
    named = {"0": f"Fake {number[-4:]}"}.get(family)
    expected = (200, named.encode()) if named else (404, b"")
    return Ask(raw.encode(), expected, number, family)


def pipeline(connection: int) -> list[Ask]:
    """Eight lookups: local hits, numbers the provider names, knows no name for, fails on
    (500, reset), and one it answers late or never (the front waits the deadline),
    each at a place of its own from one connection to the next."""
    failing = "23"[connection % 2]
    slow = "45"[connection // 2 % 2]
    asks = [
        upstream(connection, 0, "0"),
        upstream(connection, 1, "1"),
        upstream(connection, 2, failing),
        upstream(connection, 3, slow),
        upstream(connection, 4, "0"),
    ]
    shift = connection % len(asks)
    asks = asks[shift:] + asks[:shift]
    return [hit("/v1/lookup/"), *asks[:3], hit("/v3/phone/"), *asks[3:], hit("/v2/phone/")]


def resetting(connection: int) -> list[Ask]:
    """A client that goes while the front waits: a hit, then a number the provider
    answers late (or never), then lookups the front never reads."""
    slow = "45"[connection // 8 % 2]
    return [hit("/v1/lookup/"), upstream(connection, 0, slow), upstream(connection, 1, "0")]


async def answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One answer on a keep-alive connection: (status, body)."""
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, field = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(field)
        return int(head.split(b" ")[1]), await reader.readexactly(length)


async def pbx(port: int, connection: int) -> list[tuple[int, bytes]]:
    """One PBX connection: its pipeline sent in two pieces cut mid-request, every answer
    read in order; then one more lookup on the same connection."""
    asks = pipeline(connection)
    raw = b"".join(ask.raw for ask in asks)
    cut = len(raw) // 2 + connection % 7
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw[:cut])
        await writer.drain()
        writer.write(raw[cut:])
        answers = [await answer(reader) for _ in asks]
        writer.write(hit("/v1/lookup/").raw)
        answers.append(await answer(reader))
    finally:
        writer.close()
        await writer.wait_closed()
    return answers


async def resetter(port: int, connection: int) -> tuple[int, bytes]:
    """A client that resets its connection (RST) once its first answer has come: the
    front is waiting for its second lookup's upstream answer then."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(ask.raw for ask in resetting(connection)))
    first = await answer(reader)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    return first


def handovers(daemon: Daemon) -> float:
    """Connections handed to aiohttp so far, this scrape's own included."""
    return value(daemon.scrape(), "cnamd_http_front_handovers_total")


def held(daemon: Daemon) -> float:
    """Upstream answers the daemon holds (names and negative answers)."""
    return value(daemon.scrape(), "cnamd_cache_entries", scope="upstream")


def timeouts(daemon: Daemon) -> float:
    """Requests to the provider that ran out of time (the hangs)."""
    return value(daemon.scrape(), "cnamd_upstream_requests_total", source="fake", result="timeout")


def ask_once(port: int, asks: list[Ask]) -> list[tuple[int, bytes]]:
    """``asks`` pipelined on a new connection, then closed (blocking: from a thread)."""

    async def go() -> list[tuple[int, bytes]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"".join(ask.raw for ask in asks))
            return [await answer(reader) for _ in asks]
        finally:
            writer.close()
            await writer.wait_closed()

    return asyncio.run(go())


async def test_the_front_waits_for_upstream_under_load_with_a_misbehaving_provider(
    daemon: Daemon, fake: FakeProvider
) -> None:
    port = daemon.http_port
    samples = await asyncio.to_thread(daemon.scrape)
    before = value(samples, "cnamd_http_front_handovers_total")
    held_before = value(samples, "cnamd_cache_entries", scope="upstream")
    survivors = [c for c in range(CONNECTIONS) if c % 8 != 7]
    leaving = [c for c in range(CONNECTIONS) if c % 8 == 7]
    assert len(leaving) == RESETTING

    answered = await asyncio.gather(
        *(pbx(port, c) for c in survivors), *(resetter(port, c) for c in leaving)
    )

    # every request of a surviving connection answered, in order, rightly
    for connection, answers in zip(survivors, answered, strict=False):
        expected = [ask.expected for ask in pipeline(connection)] + [hit("/v1/lookup/").expected]
        assert answers == expected, connection
    assert answered[len(survivors) :] == [hit("/v1/lookup/").expected] * RESETTING
    # plain GETs all: not one connection left the front (the scrape's own did)
    assert await asyncio.to_thread(handovers, daemon) == before + 1

    # each number asked once (a reset too: no retry pays twice); the resetting
    # clients' lookups behind the one the front waited for were never read
    asks = [ask for c in survivors for ask in pipeline(c) if ask.number]
    asks += [resetting(c)[1] for c in leaving]
    for ask in asks:
        assert fake.asked[ask.number] == 1, ask
    assert not any(fake.asked[resetting(c)[2].number] for c in leaving)

    # names, negative answers and late names are held; failures and hangs are not
    kept = [ask for ask in asks if ask.family in ("0", "1", "4")]
    await asyncio.to_thread(
        eventually,
        lambda: held(daemon) == held_before + len(kept),
        LATE + 10,
        f"{len(kept)} upstream answers held",
    )
    hangs = [ask for ask in asks if ask.family == "5"]
    await asyncio.to_thread(
        eventually,
        lambda: timeouts(daemon) == len(hangs),
        SOURCE_TIMEOUT + 10,
        f"{len(hangs)} requests timed out",
    )
    late = [ask for ask in asks if ask.family == "4"]
    assert late, "no late answers asked"
    late_again = [Ask(ask.raw, (200, f"Late {ask.number[-4:]}".encode())) for ask in late]
    hang = hangs[0]
    again = await asyncio.to_thread(ask_once, port, [*late_again, hang, hit("/v3/phone/")])
    assert again == [ask.expected for ask in [*late_again, hang, hit("/v3/phone/")]]
    assert [fake.asked[ask.number] for ask in late] == [1] * len(late)  # from memory
    assert fake.asked[hang.number] == 2  # a hang is not held: asked again

    # the daemon answers as before: a fresh number named, a hit, on the front
    fresh = [upstream(9999, 0, "0"), hit("/v1/lookup/"), upstream(9999, 1, "1")]
    before = await asyncio.to_thread(handovers, daemon)
    assert await asyncio.to_thread(ask_once, port, fresh) == [ask.expected for ask in fresh]
    assert await asyncio.to_thread(handovers, daemon) == before + 1
    assert "lookup front failed" not in daemon.output and "Traceback" not in daemon.output


def half_closing(connection: int) -> list[Ask]:
    """A number the provider answers past the deadline, a hit, a number it names."""
    return [upstream(connection, 0, "4"), hit("/v3/phone/"), upstream(connection, 1, "0")]


async def half_closer(port: int, connection: int) -> tuple[list[tuple[int, bytes]], bytes]:
    """A client that pipelines ``half_closing`` and half-closes at once (FIN: it sends no
    more) while the front waits: every answer, then what comes before the server closes."""
    asks = half_closing(connection)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"".join(ask.raw for ask in asks))
        writer.write_eof()
        answers = [await answer(reader) for _ in asks]
        async with asyncio.timeout(10):
            return answers, await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


async def test_clients_half_closing_while_the_front_waits_get_every_answer(
    daemon: Daemon, fake: FakeProvider
) -> None:
    """Thirty-two clients half-close right after pipelining, while the front waits for the
    first lookup's upstream answer: each gets all its answers in order (the miss at the
    deadline, the hit, the name), then the connection closes; each number asked once."""
    clients = range(5000, 5032)
    answered = await asyncio.gather(*(half_closer(daemon.http_port, c) for c in clients))
    for connection, (answers, rest) in zip(clients, answered, strict=True):
        asks = half_closing(connection)
        assert (answers, rest) == ([ask.expected for ask in asks], b""), connection
        assert [fake.asked[ask.number] for ask in asks if ask.number] == [1, 1]
    assert "lookup front failed" not in daemon.output and "Traceback" not in daemon.output
