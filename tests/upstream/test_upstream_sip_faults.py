"""SIP dips parked on upstream when the daemon is stopped, or their peers misbehave
(sip/dip.py ``_later``, upstream/chain.py ``Chain.later``, sip/transport.py; issue #17).

A real ``cnamd serve --workers 2`` on a real PostgreSQL, dipped by several UDP
sockets and TCP connections at once for numbers a provider never answers
(fake_provider.py's hangs), so that every dip is parked when the fault comes.
An SBC would rather have the miss than a timeout: every parked dip is answered.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fake_provider import FAMILY, FakeProvider
from sip_peer import parse_reply

from cnamd.store.embedded import EmbeddedPostgres
from databases import TEMPLATE, Database
from ops_daemon import Daemon, eventually, invite, value
from test_daemon import free_port

pytestmark = pytest.mark.timeout(120)

HANG = FAMILY + "5"  # numbers the provider never answers (until it closes)
SOURCE_TIMEOUT = 30.0  # the daemon's request to the provider outlives every wait here


@pytest.fixture(scope="module")
async def db(pg: EmbeddedPostgres) -> AsyncIterator[str]:
    async with Database(pg, TEMPLATE) as url:
        yield url


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    server = FakeProvider(free_port())
    try:
        yield server
    finally:
        server.close()


def config(fake: FakeProvider, *, sip_deadline: float) -> str:
    """The provider for FAMILY numbers, room for every request at once, no breaker."""
    source = {
        "name": "fake",
        "kind": "http-json",
        "url": f"http://127.0.0.1:{fake.port}/cnam/{{e164}}",
        "name_pointer": "/data/caller_name/caller_name",
        "countries": [FAMILY],
        "timeout": SOURCE_TIMEOUT,
        "max_concurrency": 1000,
        "breaker_errors": 1000,
    }
    table = "".join(f"{key} = {json.dumps(value)}\n" for key, value in source.items())
    return f"[upstream]\nsip_deadline = {sip_deadline}\n\n[[upstream.sources]]\n" + table


def invites(daemon: Daemon, transport: str) -> float:
    return value(daemon.scrape(), "cnamd_sip_requests_total", method="INVITE", transport=transport)


async def udp_answers(sock: socket.socket, count: int, within: float) -> list[bytes]:
    """Up to ``count`` datagrams that reach ``sock`` within ``within`` seconds."""
    loop = asyncio.get_running_loop()
    got: list[bytes] = []
    with sock:
        sock.setblocking(False)
        try:
            async with asyncio.timeout(within):
                while len(got) < count:
                    got.append(await loop.sock_recv(sock, 65535))
        except TimeoutError:
            pass
    return got


async def tcp_answers(reader: asyncio.StreamReader, count: int, within: float) -> list[bytes]:
    """Up to ``count`` answers on one connection within ``within`` seconds."""
    got: list[bytes] = []
    try:
        async with asyncio.timeout(within):
            while len(got) < count:
                got.append(await reader.readuntil(b"\r\n\r\n"))  # no bodies in a dip's answers
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        pass
    return got


async def test_sigterm_answers_every_parked_dip_the_miss_before_the_sockets_close(
    tmp_path: Path, db: str, fake: FakeProvider
) -> None:
    """SIGTERM while hundreds of dips over UDP and TCP wait on a provider that hangs, with
    a deadline past ``server.shutdown_timeout``: each is answered the miss (404) within
    the grace period, none is dropped, and both workers stop in time with exit code 0.
    Before, the UDP sockets closed first and every parked UDP dip went unanswered."""
    grace = 1.0
    daemon = Daemon(
        tmp_path,
        workers=2,
        database_url=db,
        demo=False,
        config=config(fake, sip_deadline=20.0),
        args=("--set", f"server.shutdown_timeout={grace}"),
    )
    udp_sources, per_source = 4, 60
    tcp_sources, per_connection = 4, 15
    udp: list[socket.socket] = []
    streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        await asyncio.to_thread(daemon.wait_ready, 60)
        port = daemon.sip_port
        for s in range(udp_sources):  # several SBCs, each parking dips for its own numbers
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            udp.append(sock)
            for n in range(per_source):
                data = invite(port, f"{HANG}{s:02d}{n:04d}", branch=f"z9hG4bKu{s}x{n}")
                sock.sendto(data, ("127.0.0.1", port))
        for s in range(tcp_sources):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            streams.append((reader, writer))
            writer.write(
                b"".join(
                    invite(port, f"{HANG}{50 + s:02d}{n:04d}", branch=f"z9hG4bKt{s}x{n}", tcp=True)
                    for n in range(per_connection)
                )
            )
        sent_udp, sent_tcp = udp_sources * per_source, tcp_sources * per_connection
        await asyncio.to_thread(
            eventually,
            lambda: invites(daemon, "udp") == sent_udp and invites(daemon, "tcp") == sent_tcp,
            20,
            "every dip read",
        )
        assert len(fake.asked) >= 1  # the provider holds them: the dips are parked
        stopped = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        within = 2 * grace + 5
        answers = await asyncio.gather(
            *(udp_answers(sock, per_source, within) for sock in udp),
            *(tcp_answers(reader, per_connection, within) for reader, _ in streams),
        )
        answered = time.monotonic() - stopped
        code = await asyncio.to_thread(daemon.proc.wait, 10)
    finally:
        for sock in udp:
            sock.close()
        for _, writer in streams:
            writer.close()
        output = daemon.stop()
    statuses = [parse_reply(reply).status for replies in answers for reply in replies]
    assert statuses == [404] * (sent_udp + sent_tcp)
    assert answered < grace + 1.5  # the grace period, not the deadline
    assert code == 0
    assert "did not stop in time" not in output and "Traceback" not in output
