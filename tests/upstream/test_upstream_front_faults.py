"""Lookups parked on upstream when the daemon itself is stopped, reloaded or loses a worker
(http/front.py, fastpath.Waiting, upstream/chain.py; issue #17).

A real ``cnamd serve --workers 2`` on a real PostgreSQL, asked by many connections
at once for numbers a provider never answers (fake_provider.py's hangs), so that
every lookup is parked when the fault comes: some on the connection front, some on
aiohttp's path (a percent-escaped ``+``, which the front hands over). What each
fault must leave: every client answered (or its connection closed, when its worker
is gone) within the time the daemon promised, and a clean exit.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fake_provider import FAMILY, FakeProvider

from cnamd.store.embedded import EmbeddedPostgres
from databases import Database
from ops_daemon import Daemon, eventually
from test_daemon import free_port

pytestmark = pytest.mark.timeout(120)

HANG = FAMILY + "5"  # numbers the provider never answers (until it closes)
SOURCE_TIMEOUT = 30.0  # the daemon's request to the provider outlives every wait here
LOOKUPS = 64  # parked lookups per path (the front's, aiohttp's)


@pytest.fixture(scope="module")
async def db(pg: EmbeddedPostgres, demo_template: str) -> AsyncIterator[str]:
    async with Database(pg, demo_template) as url:
        yield url


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    server = FakeProvider(free_port())
    try:
        yield server
    finally:
        server.close()


def config(fake: FakeProvider, *, http_deadline: float, sources: bool = True) -> str:
    """The daemon's file: the provider for FAMILY numbers (a SIGHUP may take it away),
    room for every request at once, a breaker that never opens."""
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
    text = f"[upstream]\nhttp_deadline = {http_deadline}\n"
    return text + ("\n[[upstream.sources]]\n" + table if sources else "")


def lookup(number: str, *, escaped: bool) -> bytes:
    """A PBX's plain-text lookup; ``escaped``: ``%2B`` for the ``+``, which the front
    leaves to aiohttp (and the application waits for upstream there)."""
    target = number.replace("+", "%2B") if escaped else number
    return f"GET /v1/lookup/{target}?format=text HTTP/1.1\r\nHost: cnamd\r\n\r\n".encode()


async def answer(reader: asyncio.StreamReader, within: float) -> tuple[int, bytes] | None:
    """The next answer on the connection, (status, body); None when it closes first."""
    try:
        async with asyncio.timeout(within):
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, field = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(field)
            return int(head.split(b" ")[1]), await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def parked(port: int, numbers: list[str], fake: FakeProvider, streams: list[Stream]) -> None:
    """One connection per number (into ``streams``), half of them on aiohttp's path, each
    lookup parked: the provider has been asked for every number (and holds on to it)."""
    for i, number in enumerate(numbers):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        streams.append((reader, writer))
        writer.write(lookup(number, escaped=i % 2 == 1))
    await asyncio.to_thread(
        eventually, lambda: all(fake.asked[n] for n in numbers), 20, "every lookup parked"
    )


def close(streams: list[Stream]) -> None:
    for _, writer in streams:
        writer.close()


async def test_sigterm_answers_every_parked_lookup_within_the_grace_period(
    tmp_path: Path, db: str, fake: FakeProvider
) -> None:
    """SIGTERM while lookups wait on upstream with a deadline past ``server.shutdown_timeout``:
    the grace period ends their wait, on the front and on aiohttp's path alike; each is
    answered the miss within it, and every worker stops in time (none is killed) with
    exit code 0."""
    grace = 1.0
    daemon = Daemon(
        tmp_path,
        workers=2,
        database_url=db,
        demo=False,
        config=config(fake, http_deadline=10.0),
        args=("--set", f"server.shutdown_timeout={grace}"),
    )
    streams: list[Stream] = []
    try:
        await asyncio.to_thread(daemon.wait_ready, 60)
        numbers = [f"{HANG}{n:04d}01" for n in range(2 * LOOKUPS)]
        await parked(daemon.http_port, numbers, fake, streams)
        stopped = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        answers = await asyncio.gather(*(answer(reader, 2 * grace + 5) for reader, _ in streams))
        answered = time.monotonic() - stopped
        code = await asyncio.to_thread(daemon.proc.wait, 10)
    finally:
        close(streams)
        output = daemon.stop()
    assert answers == [(404, b"")] * len(numbers)
    assert answered < grace + 0.9  # the grace period, not the deadline nor twice the grace
    assert code == 0
    assert "did not stop in time" not in output and "Traceback" not in output
