"""The HTTP connection limits of a real ``cnamd serve --workers 2``, tried while it serves:
heads that trickle are closed at ``http.idle_timeout``, bodies that stall are answered 408
at ``http.body_timeout``, connections over ``http.max_connections`` are refused at accept
and counted, and meanwhile every SIP dip and HTTP lookup of the legitimate clients, whose
connections were open before the attack, is answered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from ops_daemon import LOOKUP, Daemon, ServingClients, eventually, http_get, serving, value
from test_daemon import partner_key

pytestmark = pytest.mark.timeout(120)

CAP = 40  # http.max_connections, per worker
IMPORT = "/api/partner/enterprise/demo/cnam-import"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with serving(
        tmp_path_factory.mktemp("http-limits"),
        workers=2,
        args=(
            *("--set", "http.idle_timeout=1", "--set", "http.body_timeout=1"),
            *("--set", f"http.max_connections={CAP}"),
        ),
    ) as started:
        yield started


async def _slow_head(port: int) -> float:
    """A head sent a byte every 0.25 s: seconds until the daemon closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"GET /v1/lookup/+1212")
    try:
        for _ in range(80):  # at most 20 s
            try:
                if await asyncio.wait_for(reader.read(65536), 0.25) == b"":
                    return time.monotonic() - started
            except TimeoutError:
                writer.write(b"5")
            except ConnectionError:
                return time.monotonic() - started
        return float("inf")
    finally:
        writer.close()


async def _stalled_body(port: int, token: str) -> bytes:
    """An upload that stops after its first thousand bytes: the daemon's answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {IMPORT} HTTP/1.1\r\nHost: cnamd\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: text/csv\r\nContent-Length: 100000\r\n\r\n"
    )
    rows = "".join(f"+1212557{i:04d},Stalled {i}\n" for i in range(40))
    writer.write(head.encode() + b"phone,name\n" + rows.encode()[:1000])
    try:
        return await asyncio.wait_for(reader.read(65536), 15)
    finally:
        writer.close()


async def _surplus(port: int, count: int) -> int:
    """``count`` connections opened at once and held 2 s: how many the daemon closed
    without a word (refused at accept, or idle) by then."""

    async def one() -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return True
        try:
            return await asyncio.wait_for(reader.read(1), 2) == b""
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        finally:
            writer.close()

    return sum(await asyncio.gather(*(one() for _ in range(count))))


def test_slow_stalled_and_surplus_connections_cost_the_serving_nothing(daemon: Daemon) -> None:
    token = partner_key(daemon)  # type: ignore[arg-type]  # ops_daemon.Daemon: same data_dir
    refused_before = value(daemon.scrape(), "cnamd_http_connections_refused_total")
    clients = ServingClients(daemon)
    clients.start()
    try:

        async def attack() -> tuple[list[float], list[bytes], int]:
            port = daemon.http_port
            heads = asyncio.gather(*(_slow_head(port) for _ in range(24)))
            bodies = asyncio.gather(*(_stalled_body(port, token) for _ in range(4)))
            answered = await bodies
            closed = await _surplus(port, 2 * CAP + 40)
            return await heads, answered, closed

        heads, bodies, closed = asyncio.run(attack())
    finally:
        clients.stop()
    assert max(heads) < 5, heads  # each closed about idle_timeout after its first byte
    assert all(body.startswith(b"HTTP/1.1 408 ") for body in bodies), bodies
    assert closed > 0
    refused = value(daemon.scrape(), "cnamd_http_connections_refused_total") - refused_before
    assert refused > 0
    # the legitimate side, throughout
    assert set(clients.statuses) == {200}, clients.statuses
    assert clients.statuses[200] > 100
    assert clients.sent and clients.sent <= clients.answered_branches
    assert set(clients.answered) == {302}, clients.answered
    # and after: new connections are taken again
    eventually(lambda: _lookup_answers(daemon), 10, "a new connection answered")


def _lookup_answers(daemon: Daemon) -> bool:
    status, _ = http_get(daemon.base + LOOKUP)
    return status == 200
