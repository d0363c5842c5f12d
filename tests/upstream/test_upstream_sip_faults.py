"""SIP dips parked on upstream when the daemon is stopped, or their peers misbehave
(sip/dip.py ``_later``, upstream/chain.py ``Chain.later``, sip/transport.py; issue #17).

A real ``cnamd serve --workers 2`` on a real PostgreSQL, dipped by several UDP
sockets and TCP connections at once for numbers a provider never answers
(fake_provider.py's hangs), so that every dip is parked when the fault comes.
An SBC would rather have the miss than a timeout: every parked dip is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path

import pytest
from fake_provider import FAMILY, FakeProvider, unguarded_source
from sip_peer import param, parse_reply

from certificates import self_signed
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


def config(fake: FakeProvider, *, sip_deadline: float) -> str:
    """The provider for FAMILY numbers (and the BEHAVIOUR ones), room for every request
    at once, no breaker."""
    # FAMILY, and fake_provider.BEHAVIOUR's garbage
    source = unguarded_source(fake.port, timeout=SOURCE_TIMEOUT, countries=(FAMILY, "+155500"))
    table = "".join(f"{key} = {json.dumps(value)}\n" for key, value in source.items())
    return f"[upstream]\nsip_deadline = {sip_deadline}\n\n[[upstream.sources]]\n" + table


def invites(daemon: Daemon, transport: str) -> float:
    return value(daemon.scrape(), "cnamd_sip_requests_total", method="INVITE", transport=transport)


async def udp_answers(sock: socket.socket, count: int, within: float) -> list[bytes]:
    """Up to ``count`` datagrams that reach ``sock`` within ``within`` seconds."""
    loop = asyncio.get_running_loop()
    got: list[bytes] = []
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


LATE = FAMILY + "4"  # numbers the provider names ``fake.late`` seconds after it is asked
DEADLINE = 6.0  # the module daemon's upstream.sip_deadline: past the provider's lateness


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("tls")
    return self_signed(d)


@pytest.fixture(scope="module")
def daemon(
    tmp_path_factory: pytest.TempPathFactory,
    db: str,
    fake: FakeProvider,
    tls_files: tuple[Path, Path],
) -> Iterator[Daemon]:
    """Two workers sharing the claims on numbers, SIP over UDP, TCP and TLS."""
    cert, key = tls_files
    tls_port = free_port()
    sip = (
        f'[sip]\ntls_listen = ["127.0.0.1:{tls_port}"]\ntls_cert = "{cert}"\ntls_key = "{key}"\n\n'
    )
    started = Daemon(
        tmp_path_factory.mktemp("sip-faults"),
        workers=2,
        database_url=db,
        demo=False,
        config=sip + config(fake, sip_deadline=DEADLINE),
    )
    started.tls_port = tls_port  # type: ignore[attr-defined]
    try:
        started.wait_ready(60)
        yield started
    finally:
        started.stop()


def to_tag(reply: bytes) -> str | None:
    return param(parse_reply(reply).one("To"), "tag")


async def test_retransmissions_of_a_parked_invite_make_one_request_and_get_one_answer(
    daemon: Daemon, fake: FakeProvider
) -> None:
    """An SBC retransmits a parked INVITE (same branch) over UDP before the provider
    answers and after, while other SBCs park dips of their own on both workers: the
    number is asked once, and every copy is answered with the same 302 (same To-tag)."""
    port = daemon.sip_port
    number = f"{LATE}999001"
    data = invite(port, number, branch="z9hG4bKretrans1")
    with contextlib.ExitStack() as stack:
        sbc, *others = (stack.enter_context(udp_socket()) for _ in range(4))
        for s, sock in enumerate(others):
            for n in range(40):
                dip = invite(port, f"{LATE}9{s}{n:04d}", branch=f"z9hG4bKo{s}x{n}")
                sock.sendto(dip, ("127.0.0.1", port))
        for _ in range(4):  # timer A's retransmissions, before the answer
            sbc.sendto(data, ("127.0.0.1", port))
        before = await udp_answers(sbc, 4, fake.late + 5)
        for _ in range(2):  # ... and after it
            sbc.sendto(data, ("127.0.0.1", port))
        after = await udp_answers(sbc, 2, 3)
        rest = await asyncio.gather(*(udp_answers(sock, 40, fake.late + 5) for sock in others))
    assert len(before) == 4 and len(after) == 2
    assert parse_reply(before[0]).status == 302
    assert len(set(before + after)) == 1  # one answer, byte for byte: same To-tag, same name
    assert to_tag(before[0])
    assert fake.asked[number] == 1
    assert [len(answers) for answers in rest] == [40] * 3
    assert {parse_reply(reply).status for answers in rest for reply in answers} == {302}


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


async def test_peers_that_reset_or_close_while_their_dips_are_parked_leave_the_answers_held(
    daemon: Daemon, fake: FakeProvider, tls_files: tuple[Path, Path]
) -> None:
    """TCP and TLS peers pipeline dips that park on upstream, then half of them reset and
    the others close: when the provider answers, nothing is written to a closed
    transport and nothing fails (no exception logged, no "internal" drop), and every
    answer is held: the next dip for each number is answered at once, from memory."""
    cert, _ = tls_files
    client_tls = ssl.create_default_context(cafile=str(cert))
    client_tls.check_hostname = False
    port, tls_port = daemon.sip_port, daemon.tls_port  # type: ignore[attr-defined]
    per_connection, connections = 10, 8
    samples = daemon.scrape()
    internal = value(samples, "cnamd_sip_dropped_total", reason="internal")
    read_before = invites(daemon, "tcp") + invites(daemon, "tls")
    lines = len(daemon.lines)
    numbers: list[str] = []
    writers: list[asyncio.StreamWriter] = []
    for c in range(connections):
        tls = c % 2 == 1
        _, writer = await asyncio.open_connection(
            "127.0.0.1", tls_port if tls else port, ssl=client_tls if tls else None
        )
        writers.append(writer)
        mine = [f"{LATE}8{c}{n:04d}" for n in range(per_connection)]
        numbers += mine
        writer.write(
            b"".join(
                invite(port, number, branch=f"z9hG4bKr{c}x{n}", tcp=True)
                for n, number in enumerate(mine)
            )
        )
        await writer.drain()
    sent = connections * per_connection
    await asyncio.to_thread(
        eventually,
        lambda: invites(daemon, "tcp") + invites(daemon, "tls") - read_before == sent,
        10,
        "every dip read",
    )
    for c, writer in enumerate(writers):
        if c % 4 < 2:  # a reset: RST, no FIN (TLS: no close_notify either)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.close()
    await asyncio.to_thread(
        eventually, lambda: all(fake.asked[n] == 1 for n in numbers), 10, "every number asked"
    )
    with udp_socket() as sbc:  # once held, each is answered from memory, long before a wait
        for n, number in enumerate(numbers):
            await asyncio.to_thread(
                eventually,
                partial(answered_302, sbc, port, number, f"z9hG4bKafter{n}"),
                fake.late + 5,
                f"{number} held",
            )
    assert all(fake.asked[n] == 1 for n in numbers)
    assert value(daemon.scrape(), "cnamd_sip_dropped_total", reason="internal") == internal
    log = "\n".join(daemon.lines[lines:])
    assert "Traceback" not in log and "exception" not in log.lower()


def answered_302(sock: socket.socket, port: int, number: str, branch: str) -> bool:
    """Whether one dip from ``sock`` is answered 302 within a short wait (else: parked)."""
    sock.setblocking(True)
    sock.settimeout(0.3)
    sock.sendto(invite(port, number, branch=branch), ("127.0.0.1", port))
    try:
        while True:
            reply = parse_reply(sock.recv(65535))
            if param(reply.one("Via"), "branch") == branch:
                return reply.status == 302
    except TimeoutError:
        return False


async def test_a_provider_that_hangs_resets_or_answers_garbage_under_parked_load(
    daemon: Daemon, fake: FakeProvider
) -> None:
    """144 dips at once over both workers, two SBCs asking each number, for numbers the
    provider names, knows no name for, resets on, answers 500, HTML or truncated JSON
    for, or never answers: each number is asked once; a name is a 302, everything else
    the miss, at once for a failure and at the deadline for a hang; nothing fails."""
    port = daemon.sip_port
    behaviours = {"0": 302, "1": 404, "2": 404, "3": 404}
    numbers = {
        f"{FAMILY}{b}7{n:05d}": status for b, status in behaviours.items() for n in range(15)
    }
    numbers |= {f"{HANG}6{n:05d}": 404 for n in range(10)}
    numbers |= {"+15550003000": 404, "+15550004000": 404}  # HTML, truncated JSON
    internal = value(daemon.scrape(), "cnamd_sip_dropped_total", reason="internal")
    lines = len(daemon.lines)
    started = time.monotonic()
    with udp_socket() as one, udp_socket() as two:
        for i, number in enumerate(numbers):
            for s, sock in enumerate((one, two)):
                sock.sendto(invite(port, number, branch=f"z9hG4bKg{s}x{i}"), ("127.0.0.1", port))
        answers = await asyncio.gather(
            *(udp_answers(sock, len(numbers), DEADLINE + 3) for sock in (one, two))
        )
    took = time.monotonic() - started
    for replies in answers:
        got = {}
        for data in replies:
            reply = parse_reply(data)
            branch = param(reply.one("Via"), "branch")
            assert branch is not None
            got[list(numbers)[int(branch.partition("x")[2])]] = reply.status
        assert got == numbers
    assert {n: fake.asked[n] for n in numbers if fake.asked[n] != 1} == {}
    assert took < DEADLINE + 2
    assert value(daemon.scrape(), "cnamd_sip_dropped_total", reason="internal") == internal
    log = "\n".join(daemon.lines[lines:])
    assert "Traceback" not in log
