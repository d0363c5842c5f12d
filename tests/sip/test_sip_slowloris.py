"""Slow-loris and connection exhaustion over SIP/TCP: a sender trickling bytes is closed
at the message deadline, connections over the cap are closed as they are accepted, and
the well-behaved connections keep being answered meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from memory_names import MemoryNames
from prometheus_client import REGISTRY
from sip_peer import parse_reply, request

from cnamd import metrics
from cnamd.sip import Dip, DipSettings
from cnamd.sip.transport import StreamLimits, bind_tcp, serve_tcp

pytestmark = pytest.mark.timeout(30)


def _dropped(reason: str) -> float:
    metrics.flush_tallies()
    return REGISTRY.get_sample_value("cnamd_sip_dropped_total", {"reason": reason}) or 0.0


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, int]]:
    sock = bind_tcp("127.0.0.1", 0)
    tcp = await serve_tcp(sock, Dip(DipSettings(), MemoryNames()), limits=request.param)
    try:
        yield "127.0.0.1", sock.getsockname()[1]
    finally:
        tcp.close()
        await tcp.wait_closed()


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, branch: str) -> int:
    writer.write(request(via=f"SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK{branch}"))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return parse_reply(head).status


async def _closed(reader: asyncio.StreamReader) -> bool:
    """True once the server closed the connection (FIN or RST), within 10 s."""
    with contextlib.suppress(ConnectionError):
        return await asyncio.wait_for(reader.read(), 10) == b""
    return True


@pytest.mark.parametrize("server", [StreamLimits(message_timeout=1.5)], indirect=True)
async def test_a_slow_loris_is_closed_at_the_message_deadline_while_others_are_answered(
    server: tuple[str, int],
) -> None:
    loop = asyncio.get_running_loop()
    before = _dropped("message_timeout")
    loris_reader, loris = await asyncio.open_connection(*server)
    trickled = request("OPTIONS")

    async def trickle() -> None:  # one byte every 0.5 s: never idle, never a whole message
        with contextlib.suppress(ConnectionError):
            for byte in trickled:
                loris.write(bytes([byte]))
                await loris.drain()
                await asyncio.sleep(0.5)

    started = loop.time()
    trickling = asyncio.create_task(trickle())
    closed = asyncio.create_task(_closed(loris_reader))
    reader, writer = await asyncio.open_connection(*server)
    answers = []
    while not closed.done():  # a dip every 0.1 s on a well-behaved connection
        answers.append(await _ask(reader, writer, f"ok{len(answers)}"))
        await asyncio.sleep(0.1)
    assert await closed
    elapsed = loop.time() - started
    trickling.cancel()
    assert 1.4 <= elapsed < 3.0, elapsed
    assert len(answers) >= 10 and set(answers) == {302}
    assert _dropped("message_timeout") == before + 1
    assert await _ask(reader, writer, "after") == 302  # still served after the close
    writer.close()
    loris.close()


@pytest.mark.parametrize("server", [StreamLimits(message_timeout=1.0)], indirect=True)
async def test_each_message_gets_its_own_deadline_from_its_first_byte(
    server: tuple[str, int],
) -> None:
    reader, writer = await asyncio.open_connection(*server)
    for i in range(3):  # each message takes 0.6 s; the connection lives 1.8 s
        data = request(via=f"SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKslow{i}")
        writer.write(data[:40])
        await asyncio.sleep(0.6)
        writer.write(data[40:])
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert parse_reply(head).status == 302
    writer.close()


@pytest.mark.parametrize("server", [StreamLimits(max_connections=2)], indirect=True)
async def test_connections_over_the_cap_are_closed_at_accept_and_the_held_ones_served(
    server: tuple[str, int],
) -> None:
    before = _dropped("overload")
    held = [await asyncio.open_connection(*server) for _ in range(2)]
    for i, (reader, writer) in enumerate(held):
        assert await _ask(reader, writer, f"held{i}") == 302
    # they never send a byte: closed at once, not when they speak or go idle
    extra = [await asyncio.open_connection(*server) for _ in range(20)]
    assert all(await asyncio.gather(*(_closed(r) for r, _ in extra)))
    assert _dropped("overload") == before + 20
    for i, (reader, writer) in enumerate(held):
        assert await _ask(reader, writer, f"again{i}") == 302
    held[0][1].close()
    await asyncio.sleep(0.2)
    reader, writer = await asyncio.open_connection(*server)  # room again
    assert await _ask(reader, writer, "new") == 302
    for _, w in [*extra, *held[1:], (reader, writer)]:
        w.close()
