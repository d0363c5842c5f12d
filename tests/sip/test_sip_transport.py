"""Real sockets on loopback: UDP and TCP (and TLS) listeners serving a Dip."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import socket
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from memory_names import MemoryNames
from prometheus_client import REGISTRY
from sip_peer import display_name, parse_reply, request

from certificates import self_signed
from cnamd import metrics, turn_budget
from cnamd.lookup import NameAnswer
from cnamd.sip import Dip, DipSettings
from cnamd.sip import transport as transport_module
from cnamd.sip.transport import (
    StreamLimits,
    bind_tcp,
    bind_udp,
    bind_udp_group,
    receive_buffer_size,
    serve_tcp,
    serve_udp,
    split_hostport,
)
from loop_turns import Turns

pytestmark = pytest.mark.timeout(20)


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


HOSTS = [
    "127.0.0.1",
    pytest.param("::1", marks=pytest.mark.skipif(not _has_ipv6(), reason="no ::1")),
]


def _dip() -> Dip:
    return Dip(DipSettings(), MemoryNames())


@pytest.fixture(params=["pump", "uvloop"])
def udp_loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A UDP test runs over the C pump (as shipped on Linux) and over uvloop's datagram
    transport (builds without the C extension)."""
    if request.param == "uvloop":
        monkeypatch.setattr(transport_module, "_pump", None)
    else:
        assert transport_module._pump is not None or os.environ.get("CNAMD_PURE_PYTHON")
    return str(request.param)


async def _udp_ask(host: str, port: int, data: bytes, via_rport: bool = True) -> bytes:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as client:
        client.setblocking(False)
        client.bind((host, 0))
        await loop.sock_sendto(client, data, (host, port))
        reply, _ = await asyncio.wait_for(loop.sock_recvfrom(client, 65535), 5)
        return reply


@pytest.mark.usefixtures("udp_loop")
@pytest.mark.parametrize("host", HOSTS)
async def test_udp_dip_gets_302_back_at_the_source_port(host: str) -> None:
    sock = bind_udp(host, 0)
    port = sock.getsockname()[1]
    transport = await serve_udp(sock, _dip())
    try:
        sent_by = f"[{host}]" if ":" in host else host
        data = request(via=f"SIP/2.0/UDP {sent_by}:9;rport;branch=z9hG4bKu")
        reply = parse_reply(await _udp_ask(host, port, data))
        assert reply.status == 302
        assert display_name(reply.one("Contact")) == "John Doe"
    finally:
        transport.close()


@pytest.mark.usefixtures("udp_loop")
async def test_udp_options_and_garbage() -> None:
    sock = bind_udp("127.0.0.1", 0)
    port = sock.getsockname()[1]
    transport = await serve_udp(sock, _dip())
    try:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.setblocking(False)
            client.bind(("127.0.0.1", 0))
            await loop.sock_sendto(client, b"\x00garbage\r\n\r\n", ("127.0.0.1", port))
            await loop.sock_sendto(client, b"\r\n\r\n", ("127.0.0.1", port))
            data = request("OPTIONS", via="SIP/2.0/UDP 127.0.0.1;rport;branch=z9hG4bKo")
            await loop.sock_sendto(client, data, ("127.0.0.1", port))
            reply, _ = await asyncio.wait_for(loop.sock_recvfrom(client, 65535), 5)
            assert parse_reply(reply).status == 200  # the first answer is the OPTIONS one
    finally:
        transport.close()


async def _recv_all(client: socket.socket, count: int, timeout: float = 10.0) -> list[bytes]:
    """Up to ``count`` datagrams, waiting at most ``timeout`` seconds for the next one."""
    loop = asyncio.get_running_loop()
    replies: list[bytes] = []
    for _ in range(count):
        try:
            data, _ = await asyncio.wait_for(loop.sock_recvfrom(client, 65535), timeout)
        except TimeoutError:
            break
        replies.append(data)
    return replies


def _udp_client(host: str = "127.0.0.1") -> socket.socket:
    client = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    client.setblocking(False)
    client.bind((host, 0))
    return client


@pytest.mark.usefixtures("udp_loop")
@pytest.mark.parametrize("host", HOSTS)
async def test_udp_burst_over_many_batches_gets_every_answer_once(host: str) -> None:
    # 600 datagrams sent before any answer is read: several recvmmsg batches and
    # several wake-ups of the listener (256 per wake-up), each answered once
    sock = bind_udp(host, 0)
    port = sock.getsockname()[1]
    listener = await serve_udp(sock, _dip())
    sent_by = f"[{host}]" if ":" in host else host
    try:
        with _udp_client(host) as client:
            for i in range(600):
                data = request(
                    call_id=f"burst-{i}", via=f"SIP/2.0/UDP {sent_by}:9;rport;branch=z9hG4bK{i}"
                )
                client.sendto(data, (host, port))
            replies = [parse_reply(r) for r in await _recv_all(client, 600)]
        assert sorted(r.one("Call-ID") for r in replies) == sorted(f"burst-{i}" for i in range(600))
        assert {r.status for r in replies} == {302}
    finally:
        listener.close()


@pytest.mark.usefixtures("udp_loop")
async def test_udp_answer_goes_to_the_via_port_without_rport() -> None:
    # RFC 3261 §18.2.2: no rport, so the answer goes to the source address at the sent-by port
    sock = bind_udp("127.0.0.1", 0)
    port = sock.getsockname()[1]
    listener = await serve_udp(sock, _dip())
    try:
        with _udp_client() as asker, _udp_client() as via_port:
            via = f"SIP/2.0/UDP 127.0.0.1:{via_port.getsockname()[1]};branch=z9hG4bKv"
            asker.sendto(request(via=via), ("127.0.0.1", port))
            [reply] = await _recv_all(via_port, 1)
            assert parse_reply(reply).status == 302
            assert await _recv_all(asker, 1, timeout=0.3) == []
    finally:
        listener.close()


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("cnamd_sip_dropped_total", {"reason": reason}) or 0.0


@pytest.mark.usefixtures("udp_loop")
async def test_udp_answer_to_a_named_maddr_is_dropped_and_counted() -> None:
    # honoured maddr naming a host: sending would block the loop on DNS, so it is dropped
    sock = bind_udp("127.0.0.1", 0)
    port = sock.getsockname()[1]
    dip = Dip(DipSettings(honor_maddr=True), MemoryNames())
    listener = await serve_udp(sock, dip)
    send = _dropped("send")
    try:
        with _udp_client() as client:
            via = "SIP/2.0/UDP 127.0.0.1:5999;maddr=sbc.example.invalid;branch=z9hG4bKm"
            client.sendto(request(via=via), ("127.0.0.1", port))
            ping = request("OPTIONS", via="SIP/2.0/UDP 127.0.0.1;rport;branch=z9hG4bKp")
            client.sendto(ping, ("127.0.0.1", port))
            [reply] = await _recv_all(client, 1)  # the OPTIONS answer: the listener goes on
            assert parse_reply(reply).status == 200
        metrics.flush_tallies()
        assert _dropped("send") == send + 1
    finally:
        listener.close()


@pytest.mark.usefixtures("udp_loop")
async def test_udp_listener_survives_a_failing_answer() -> None:
    sock = bind_udp("127.0.0.1", 0)
    port = sock.getsockname()[1]
    dip = _dip()
    listener = await serve_udp(sock, dip)
    answer = listener._answer
    calls = 0

    def fail_once(data: bytes, source: tuple[str, int]) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("injected")
        return answer(data, source)

    listener._answer = fail_once  # type: ignore[assignment]
    internal = _dropped("internal")
    try:
        with _udp_client() as client:
            via = "SIP/2.0/UDP 127.0.0.1;rport;branch=z9hG4bKf"
            client.sendto(request(call_id="lost", via=via), ("127.0.0.1", port))
            await asyncio.sleep(0.2)
            client.sendto(request(call_id="answered", via=via), ("127.0.0.1", port))
            [reply] = await _recv_all(client, 1)
            assert parse_reply(reply).one("Call-ID") == "answered"
        metrics.flush_tallies()
        assert _dropped("internal") == internal + 1
    finally:
        listener.close()


def _kernel_drops() -> float:
    return REGISTRY.get_sample_value("cnamd_sip_dropped_total", {"reason": "kernel"}) or 0.0


@pytest.mark.usefixtures("udp_loop")
async def test_datagrams_the_kernel_drops_on_a_full_buffer_are_counted() -> None:
    sock = bind_udp("127.0.0.1", 0, rcvbuf=4096)
    port = sock.getsockname()[1]
    listener = await serve_udp(sock, _dip())
    before = _kernel_drops()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.bind(("127.0.0.1", 0))
            data = request("OPTIONS", via="SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bKk")
            for _ in range(500):  # sent while the listener's loop cannot run: most overflow
                client.sendto(data, ("127.0.0.1", port))
            # the listener reads the socket's counter every second, off the hot path
            await asyncio.sleep(2.5 * transport_module.METRICS_FLUSH_INTERVAL)
        dropped = _kernel_drops() - before
        assert 100 < dropped < 500
    finally:
        listener.close()


def test_udp_socket_gets_a_large_receive_buffer() -> None:
    with bind_udp("127.0.0.1", 0, rcvbuf=8 * 1024 * 1024) as sock:
        size = receive_buffer_size(sock)
        rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
        expected = 8 * 1024 * 1024 if os.geteuid() == 0 else min(8 * 1024 * 1024, rmem_max)
        assert size >= expected


def test_tcp_listener_is_bound_and_listening() -> None:
    with bind_tcp("127.0.0.1", 0) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5070", ("127.0.0.1", 5070)),
        ("[::1]:5071", ("::1", 5071)),
        ("::1", ("::1", 5060)),
        ("localhost", ("localhost", 5060)),
    ],
)
def test_split_hostport(text: str, expected: tuple[str, int]) -> None:
    assert split_hostport(text) == expected


@pytest.fixture
async def tcp_server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, int]]:
    limits = getattr(request, "param", StreamLimits())
    sock = bind_tcp("127.0.0.1", 0)
    server = await serve_tcp(sock, _dip(), limits=limits)
    try:
        yield "127.0.0.1", sock.getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)


async def test_tcp_message_split_across_segments_is_answered(tcp_server: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*tcp_server)
    data = request(via="SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKt", body="v=0\r\n")
    for i in range(0, len(data), 17):
        writer.write(data[i : i + 17])
        await writer.drain()
        await asyncio.sleep(0.001)
    reply = parse_reply(await _read_response(reader))
    assert reply.status == 302
    writer.close()


async def test_tcp_two_messages_in_one_segment_get_two_answers_in_order(
    tcp_server: tuple[str, int],
) -> None:
    reader, writer = await asyncio.open_connection(*tcp_server)
    writer.write(request("OPTIONS") + request("BYE"))
    await writer.drain()
    assert parse_reply(await _read_response(reader)).status == 200
    assert parse_reply(await _read_response(reader)).status == 405
    writer.close()


async def test_tcp_keepalive_ping_gets_a_pong(tcp_server: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*tcp_server)
    writer.write(b"\r\n\r\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
    writer.write(request("OPTIONS"))
    assert parse_reply(await _read_response(reader)).status == 200
    writer.close()


async def test_tcp_oversize_header_gets_400_then_the_connection_closes(
    tcp_server: tuple[str, int],
) -> None:
    reader, writer = await asyncio.open_connection(*tcp_server)
    writer.write(request("OPTIONS").replace(b"\r\n\r\n", b"\r\n"))
    for _ in range(200):  # 200 * 100 B > the 16 KiB cap
        writer.write(b"X-Filler: " + b"a" * 88 + b"\r\n")
    await writer.drain()
    reply = parse_reply(await _read_response(reader))
    assert reply.status == 400 and "too large" in reply.one("Warning")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_tcp_bad_content_length_gets_400_then_the_connection_closes(
    tcp_server: tuple[str, int],
) -> None:
    reader, writer = await asyncio.open_connection(*tcp_server)
    writer.write(request("OPTIONS", content_length="-5"))
    await writer.drain()
    assert parse_reply(await _read_response(reader)).status == 400
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_tcp_garbage_without_end_is_cut_off_at_the_cap(tcp_server: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*tcp_server)
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        for _ in range(100):
            writer.write(os.urandom(1024).replace(b"\r\n", b"xx"))
            await writer.drain()
        await asyncio.wait_for(reader.readexactly(1), 5)
    writer.close()


class TurnNotingNames(MemoryNames):
    """MemoryNames noting the loop's turn at each question; at the first, it sets a timer
    due at once and notes how many questions came before the timer ran."""

    def __init__(self, turns: Turns) -> None:
        super().__init__()
        self.turns = turns
        self.asked_in: list[int] = []
        self.before_timer: list[int] = []

    #: the caller the notes are about (the burst's); others are answered unnoted
    noted = "+492216698712"

    def caller_name(self, calling: str, called: str, source_ip: str) -> NameAnswer:
        if calling != self.noted:
            return super().caller_name(calling, called, source_ip)
        if not self.asked_in:
            asyncio.get_running_loop().call_later(
                0, lambda: self.before_timer.append(len(self.asked_in))
            )
        self.asked_in.append(self.turns.now)
        return super().caller_name(calling, called, source_ip)


@pytest.mark.parametrize("over", ["tcp", "tls"])
async def test_tcp_invites_written_at_once_are_answered_over_turns_with_the_timers_between(
    over: str, monkeypatch: pytest.MonkeyPatch, tls_files: tuple[Path, Path]
) -> None:
    """600 INVITEs and then a message that cannot be framed, in one write (over TCP, and
    over TLS, whose reads come through the SSL protocol's own buffer), with the
    loop's share of a turn at 0.5 ms, while four other peers dip one INVITE at a time:
    the INVITEs are answered over many turns, a timer due at the first runs within two
    shares, while most are still to come (it waited for all of them before), every
    answer comes in order, and the 400 and the close come after them all; every
    other peer's dip is answered meanwhile."""
    monkeypatch.setattr(turn_budget.of_running_loop(), "seconds", 0.0005)
    turns = Turns()
    names = TurnNotingNames(turns)
    server_ctx, client_ctx = _tls_contexts(tls_files) if over == "tls" else (None, None)
    sock = bind_tcp("127.0.0.1", 0)
    server = await serve_tcp(sock, Dip(DipSettings(), names), ssl=server_ctx)
    port = sock.getsockname()[1]
    via = f"SIP/2.0/{over.upper()} 127.0.0.1:9;branch=z9hG4bK-"

    async def peer(who: int) -> list[str]:
        """50 dips one after the other; the Call-IDs of the 302s that named the caller."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        named = []
        for i in range(50):
            writer.write(
                request(
                    via=f"{via}peer-{who}-{i}",
                    from_=f"<sip:+4930123456@127.0.0.1>;tag=p{who}",
                    call_id=f"{who}-{i}@peer",
                )
            )
            reply = parse_reply(await _read_response(reader))
            if reply.status == 302 and "Quote" in reply.one("Contact"):
                named.append(reply.one("Call-ID"))
        writer.close()
        return named

    try:
        peers = asyncio.gather(*(peer(who) for who in range(4)))
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        invites = [request(via=f"{via}burst-{i}", call_id=f"{i}@burst") for i in range(600)]
        writer.write(b"".join(invites) + request("OPTIONS", content_length="-5"))
        statuses, call_ids = [], []
        for _ in range(601):
            reply = parse_reply(await _read_response(reader))
            statuses.append(reply.status)
            call_ids.append(reply.one("Call-ID") if reply.status == 302 else "")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert await asyncio.wait_for(peers, 10) == [
            [f"{who}-{i}@peer" for i in range(50)] for who in range(4)
        ]
    finally:
        turns.stop()
        server.close()
        await server.wait_closed()
    assert statuses == [302] * 600 + [400]
    assert call_ids[:600] == [f"{i}@burst" for i in range(600)]
    per_turn = Counter(names.asked_in)
    assert sum(per_turn.values()) == 600
    assert len(per_turn) >= 5 and max(per_turn.values()) <= 300, per_turn
    # asyncio's loop runs the timer after the next turn's put-off work (uvloop before it)
    before = names.before_timer[0]
    assert before < 400 and before <= 2 * max(per_turn.values()), (before, per_turn)


@pytest.mark.parametrize("tcp_server", [StreamLimits(idle_timeout=0.3)], indirect=True)
async def test_tcp_idle_connection_is_closed(tcp_server: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*tcp_server)
    start = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert asyncio.get_running_loop().time() - start >= 0.25
    writer.close()


# Connections over the cap and slow senders: test_sip_slowloris.py


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("tls")
    return self_signed(d)


def _tls_contexts(tls_files: tuple[Path, Path]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """The server's context with the self-signed certificate, and a client's trusting it."""
    cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    client_ctx.check_hostname = False
    return server_ctx, client_ctx


async def test_tls_dip_is_answered(tls_files: tuple[Path, Path]) -> None:
    server_ctx, client_ctx = _tls_contexts(tls_files)
    sock = bind_tcp("127.0.0.1", 0)
    server = await serve_tcp(sock, _dip(), ssl=server_ctx)
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", sock.getsockname()[1], ssl=client_ctx
        )
        writer.write(request(via="SIP/2.0/TLS 127.0.0.1:9;branch=z9hG4bKs"))
        reply = parse_reply(await _read_response(reader))
        assert reply.status == 302 and display_name(reply.one("Contact")) == "John Doe"
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


def _pump() -> Any:
    pump = transport_module._pump
    assert pump is not None, "the C pump is not built"
    return pump


@pytest.mark.skipif(bool(os.environ.get("CNAMD_PURE_PYTHON")), reason="pure build asked for")
def test_pump_sends_earlier_answers_then_raises_a_callback_error() -> None:
    with bind_udp("127.0.0.1", 0) as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.bind(("127.0.0.1", 0))
        c.settimeout(5)
        for i in range(3):
            c.sendto(b"%d" % i, server.getsockname())
        time.sleep(0.1)

        def answer(data: bytes, source: tuple[str, int]) -> tuple[bytes, tuple[str, int]]:
            if data == b"2":
                raise RuntimeError("injected")
            return b"re:" + data, source

        with pytest.raises(RuntimeError, match="injected"):
            _pump()(server.fileno(), answer, lambda d, a: None, 100)
        assert {c.recv(100), c.recv(100)} == {b"re:0", b"re:1"}


@pytest.mark.skipif(bool(os.environ.get("CNAMD_PURE_PYTHON")), reason="pure build asked for")
def test_pump_refuses_a_malformed_answer_and_reports_what_it_read() -> None:
    with bind_udp("127.0.0.1", 0) as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.bind(("127.0.0.1", 0))
        c.sendto(b"x", server.getsockname())
        time.sleep(0.1)
        with pytest.raises(TypeError):
            _pump()(server.fileno(), lambda d, a: "not bytes", lambda d, a: None, 100)
        assert _pump()(server.fileno(), lambda d, a: None, lambda d, a: None, 100) == (0, 0)
        c.sendto(b"y", server.getsockname())
        time.sleep(0.1)
        assert _pump()(server.fileno(), lambda d, a: None, lambda d, a: None, 100) == (1, 0)


@pytest.mark.skipif(bool(os.environ.get("CNAMD_PURE_PYTHON")), reason="pure build asked for")
def test_pump_sends_an_answer_to_the_source_in_the_batch_not_the_fallback() -> None:
    # the compiled dip hands back an equal, not the same, address tuple
    with bind_udp("127.0.0.1", 0) as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.bind(("127.0.0.1", 0))
        c.settimeout(5)
        via = f"SIP/2.0/UDP 127.0.0.1:{c.getsockname()[1]};branch=z9hG4bKs"
        c.sendto(request(via=via), server.getsockname())
        time.sleep(0.1)
        fallback: list[object] = []
        dip = _dip()
        assert _pump()(server.fileno(), dip.answer_udp, lambda *a: fallback.append(a), 10) == (1, 0)
        assert fallback == []
        assert parse_reply(c.recv(65535)).status == 302


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.skipif(bool(os.environ.get("CNAMD_PURE_PYTHON")), reason="pure build asked for")
def test_a_steered_group_spreads_one_source_over_every_socket() -> None:
    # one client socket, so plain SO_REUSEPORT would hash it all to one member
    port = _free_udp_port()
    group = bind_udp_group("127.0.0.1", port, 3)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            for i in range(600):
                client.sendto(b"%d" % i, ("127.0.0.1", port))
        time.sleep(0.2)
        counts = []
        for sock in group:
            n = 0
            with contextlib.suppress(BlockingIOError):
                while True:
                    sock.recv(100)
                    n += 1
            counts.append(n)
        assert sum(counts) == 600
        assert min(counts) > 100, counts  # ~200 each; < 100 is ~1e-20 likely at random
    finally:
        for sock in group:
            sock.close()


def test_a_steered_group_needs_a_fixed_free_port() -> None:
    with pytest.raises(ValueError):
        bind_udp_group("127.0.0.1", 0, 2)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        with pytest.raises(OSError) as failure:
            bind_udp_group("127.0.0.1", taken.getsockname()[1], 2)
        # pure builds cannot steer at all (ENOPROTOOPT); built ones find the port taken
        assert failure.value.errno in (errno.EADDRINUSE, errno.ENOPROTOOPT)
