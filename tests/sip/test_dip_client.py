"""``cnamd dip``'s client against the real SIP front on loopback sockets."""

from __future__ import annotations

import asyncio
import socket

import pytest
from memory_names import MemoryNames

from cnamd.errors import InvalidRequest
from cnamd.sip import Dip, DipSettings
from cnamd.sip.dip_client import dip, read_answer
from cnamd.sip.transport import bind_tcp, bind_udp, serve_tcp, serve_udp

pytestmark = pytest.mark.timeout(20)


def _dip() -> Dip:
    return Dip(DipSettings(), MemoryNames())


async def test_udp_hit_reads_the_escaped_name_from_the_contact() -> None:
    sock = bind_udp("127.0.0.1", 0)
    transport = await serve_udp(sock, _dip())
    try:
        server = f"127.0.0.1:{sock.getsockname()[1]}"
        hit = await dip(server, "+4930123456", "+492216698700")
        assert (hit.status, hit.name) == (302, 'Dr. "Quote" \\ Backslash')
        miss = await dip(server, "+15555550100", "+492216698700")
        assert (miss.status, miss.name) == (404, None)
    finally:
        transport.close()


async def test_tcp_hit() -> None:
    sock = bind_tcp("127.0.0.1", 0)
    server = await serve_tcp(sock, _dip())
    try:
        hit = await dip(f"127.0.0.1:{sock.getsockname()[1]}", "+492216698712", "100", tcp=True)
        assert (hit.status, hit.reason, hit.name) == (302, "Moved Temporarily", "John Doe")
    finally:
        server.close()
        await server.wait_closed()


async def test_udp_retransmits_until_answered_then_times_out_when_nobody_answers() -> None:
    """A silent server: the INVITE is sent again (timer A) and the wait is bounded."""
    seen: list[bytes] = []
    loop = asyncio.get_running_loop()

    class Silent(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            seen.append(data)

    transport, _ = await loop.create_datagram_endpoint(
        Silent, local_addr=("127.0.0.1", 0), family=socket.AF_INET
    )
    try:
        port = transport.get_extra_info("sockname")[1]
        with pytest.raises(TimeoutError):
            await dip(f"127.0.0.1:{port}", "+492216698712", "100", timeout=1.2)
        assert len(seen) >= 2 and len(set(seen)) == 1, "retransmissions are the same request"
    finally:
        transport.close()


def test_provisional_and_non_sip_answers_are_not_final() -> None:
    assert read_answer(b"SIP/2.0 100 Trying\r\n\r\n") is None
    assert read_answer(b"HTTP/1.1 200 OK\r\n\r\n") is None
    answer = read_answer(b'SIP/2.0 302 Moved\r\nm: "A" <sip:x@y>\r\n\r\n')
    assert answer is not None and answer.name == "A"


async def test_a_bad_server_address_names_the_field() -> None:
    with pytest.raises(InvalidRequest) as caught:
        await dip("[::1", "+1", "+2")
    assert caught.value.field == "server"
