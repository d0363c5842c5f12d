"""``cnamd dip``: ask a CNAM server for a caller's name with one SIP INVITE, as an SBC does.

An operator's ``dig`` for the SIP front: it sends the dip an SBC would send
(the caller in From and P-Asserted-Identity, the called number in the
Request-URI), waits for the final answer and reads the name from the 302's
Contact display name (DESIGN.md "The SIP dip"). Works against cnamd or any
redirect server that answers the same way.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from dataclasses import dataclass

from cnamd.errors import InvalidRequest
from cnamd.sip.message import parse_name_addr, unquote
from cnamd.sip.transport import split_hostport

__all__ = ["DipAnswer", "dip"]


@dataclass(frozen=True, slots=True)
class DipAnswer:
    """The final response: status, reason phrase, and the name a 302 carried (if any)."""

    status: int
    reason: str
    name: str | None
    raw: bytes


def build_invite(
    calling: str, called: str, server: tuple[str, int], local: tuple[str, int], transport: str
) -> bytes:
    """One dip INVITE, addressed to ``server`` from ``local`` (RFC 3261 §8.1.1)."""
    host, port = server
    branch = "z9hG4bK-" + secrets.token_hex(8)
    target = f"[{host}]" if ":" in host else host
    here = f"[{local[0]}]" if ":" in local[0] else local[0]
    lines = [
        f"INVITE sip:{called}@{target}:{port} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {here}:{local[1]};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:{calling}@{here}>;tag={secrets.token_hex(4)}",
        f"To: <sip:{called}@{target}>",
        f"Call-ID: {secrets.token_hex(12)}@{here}",
        "CSeq: 1 INVITE",
        f"P-Asserted-Identity: <sip:{calling}@{here}>",
        f"Contact: <sip:{calling}@{here}:{local[1]}>",
        "User-Agent: cnamd-dip",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def read_answer(data: bytes) -> DipAnswer | None:
    """The answer in ``data``, None for a provisional (1xx) one or one that is not SIP."""
    head = data.partition(b"\r\n\r\n")[0]
    lines = head.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version != b"SIP/2.0" or not code.isdigit() or int(code) < 200:
        return None
    # the name: P-Asserted-Identity's display name, else the (first) Contact's
    found: dict[bytes, str | None] = {}
    for line in lines[1:]:
        field, _, value = line.partition(b":")
        key = field.strip().lower()
        key = b"contact" if key == b"m" else key
        if key in (b"contact", b"p-asserted-identity") and key not in found:
            addr = parse_name_addr(value.strip())
            found[key] = (
                unquote(addr.display).decode("utf-8", "replace")
                if addr is not None and addr.display
                else None
            )
    name = found.get(b"p-asserted-identity") or found.get(b"contact")
    return DipAnswer(int(code), reason.decode("utf-8", "replace"), name, data)


async def dip(
    server: str,
    calling: str,
    called: str,
    *,
    tcp: bool = False,
    timeout: float = 2.0,
    t1: float = 0.5,
) -> DipAnswer:
    """Send one dip to ``server`` (``host[:port]``) and return its final answer.

    UDP retransmits after ``t1`` (RFC 3261's T1, 500 ms unless the network is known
    faster), doubling (§17.1.1.2's timer A), until ``timeout``; TimeoutError when
    nothing final arrives.
    """
    try:
        host, port = split_hostport(server)
    except Exception as exc:
        raise InvalidRequest(f"bad server address {server!r}", field="server") from exc
    async with asyncio.timeout(timeout):
        if tcp:
            return await _over_tcp(host, port, calling, called)
        return await _over_udp(host, port, calling, called, t1)


async def _over_tcp(host: str, port: int, calling: str, called: str) -> DipAnswer:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        local = writer.get_extra_info("sockname")[:2]
        writer.write(build_invite(calling, called, (host, port), local, "tcp"))
        await writer.drain()
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                field, _, value = line.partition(b":")
                if field.strip().lower() in (b"content-length", b"l"):
                    length = int(value.strip() or b"0")
            body = await reader.readexactly(length)
            answer = read_answer(head + body)
            if answer is not None:
                return answer
    finally:
        writer.close()


async def _over_udp(host: str, port: int, calling: str, called: str, t1: float) -> DipAnswer:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    loop = asyncio.get_running_loop()
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    class Protocol(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
            answers.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(
        Protocol, remote_addr=(host, port), family=family
    )
    try:
        local = transport.get_extra_info("sockname")[:2]
        invite = build_invite(calling, called, (host, port), local, "udp")
        interval = t1
        while True:
            transport.sendto(invite)
            try:
                async with asyncio.timeout(interval):
                    while True:
                        answer = read_answer(await answers.get())
                        if answer is not None:
                            return answer
            except TimeoutError:
                interval = min(interval * 2, 4.0)
    finally:
        transport.close()
