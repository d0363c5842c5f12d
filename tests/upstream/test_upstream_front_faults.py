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
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path

import psutil
import pytest
from fake_provider import FAMILY, FakeProvider, unguarded_source

from cnamd.store.embedded import EmbeddedPostgres
from databases import Database
from ops_daemon import Daemon, eventually

pytestmark = pytest.mark.timeout(120)

HANG = FAMILY + "5"  # numbers the provider never answers (until it closes)
SOURCE_TIMEOUT = 30.0  # the daemon's request to the provider outlives every wait here
LOOKUPS = 64  # parked lookups per path (the front's, aiohttp's)


@pytest.fixture(scope="module")
async def db(pg: EmbeddedPostgres, demo_template: str) -> AsyncIterator[str]:
    async with Database(pg, demo_template) as url:
        yield url


def config(fake: FakeProvider, *, http_deadline: float, sources: bool = True) -> str:
    """The daemon's file: the provider for FAMILY numbers (a SIGHUP may take it away),
    room for every request at once, a breaker that never opens."""
    source = unguarded_source(fake.port, timeout=SOURCE_TIMEOUT)
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


DEADLINE = 1.5  # the module daemon's upstream.http_deadline
HIT = ("+12125550001", b"NYC Pizza")  # a name of the demo data: a local hit


@pytest.fixture(scope="module")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, db: str, fake: FakeProvider
) -> Iterator[Daemon]:
    """Two workers sharing the claims on numbers (upstream/claims.py), sources in a file."""
    started = Daemon(
        tmp_path_factory.mktemp("front-faults"),
        workers=2,
        database_url=db,
        demo=False,
        config=config(fake, http_deadline=DEADLINE),
    )
    try:
        started.wait_ready(60)
        yield started
    finally:
        started.stop()


def worker_of(daemon: Daemon, ports: set[int]) -> dict[int, int]:
    """Which worker (pid) accepted each of the client ports it can be told for now."""
    found = {}
    for pid in daemon.workers():
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.raddr and conn.raddr.port in ports and conn.laddr.port == daemon.http_port:
                found[conn.raddr.port] = pid
    return found


def accepted_by(daemon: Daemon, ports: set[int], worker: int) -> bool:
    """Whether ``worker`` accepted the connections from every one of ``ports``."""
    found = worker_of(daemon, ports)
    return len(found) == len(ports) and set(found.values()) == {worker}


async def on_each_worker(
    daemon: Daemon, each: int, streams: list[Stream]
) -> dict[int, list[Stream]]:
    """``each`` connections (into ``streams``) accepted by each worker: the listening socket
    is the workers' shared one, and the kernel often gives one worker every connection,
    so the others are stopped (SIGSTOP, well within the heartbeat's patience) while a
    worker accepts its own."""
    workers = sorted(daemon.workers())
    chosen: dict[int, list[Stream]] = {}
    for worker in workers:
        others = [other for other in workers if other != worker]
        for other in others:
            os.kill(other, signal.SIGSTOP)
        try:
            mine = [
                await asyncio.open_connection("127.0.0.1", daemon.http_port) for _ in range(each)
            ]
            streams.extend(mine)
            ports = {writer.get_extra_info("sockname")[1] for _, writer in mine}
            await asyncio.to_thread(
                eventually,
                partial(accepted_by, daemon, ports, worker),
                10,
                f"worker {worker} accepted its connections",
            )
        finally:
            for other in others:
                os.kill(other, signal.SIGCONT)
        chosen[worker] = mine
    return chosen


async def test_a_worker_killed_while_lookups_wait_on_its_claims_leaves_the_survivor_in_time(
    daemon: Daemon, fake: FakeProvider
) -> None:
    """Worker A asks the provider for eight numbers (its claims); the survivor B, asked for
    the same numbers on sixteen connections, waits for A's answers through the change
    feed rather than asking again, beside lookups of its own parked on the provider.
    A is SIGKILLed: its connections close, and every lookup on B is answered the miss
    at B's own deadline, none asked twice; the supervisor replaces A."""
    streams: list[Stream] = []
    try:
        victim, survivor = sorted(daemon.workers())
        placed = await on_each_worker(daemon, 16, streams)
        claimed = [f"{HANG}{n:04d}02" for n in range(8)]
        own = [f"{HANG}{n:04d}03" for n in range(8)]
        for number, (_, writer) in zip(claimed, placed[victim], strict=False):
            writer.write(lookup(number, escaped=False))
        await asyncio.to_thread(
            eventually, lambda: all(fake.asked[n] for n in claimed), 10, "A asked"
        )
        asked = time.monotonic()
        on_b = placed[survivor][:16]
        for i, (_, writer) in enumerate(on_b):  # each claimed number twice, own ones once
            number = claimed[i % 8] if i < 8 else own[i - 8]
            writer.write(lookup(number, escaped=False) + lookup(HIT[0], escaped=False))
        await asyncio.to_thread(eventually, lambda: all(fake.asked[n] for n in own), 10, "B asked")
        os.kill(victim, signal.SIGKILL)
        gone = await asyncio.gather(*(answer(reader, 10) for reader, _ in placed[victim][:8]))
        answers = await asyncio.gather(
            *(answer(reader, DEADLINE + 5) for reader, _ in on_b),
        )
        waited = time.monotonic() - asked
        after = await asyncio.gather(*(answer(reader, 5) for reader, _ in on_b))
    finally:
        close(streams)
    assert gone == [None] * 8
    assert answers == [(404, b"")] * 16 and waited < DEADLINE + 0.9
    assert after == [(200, HIT[1])] * 16  # the pipelined hit, in order behind each
    assert all(fake.asked[n] == 1 for n in claimed + own)  # B never asked A's numbers
    assert victim not in daemon.replaced(victim, 2)
    assert "Traceback" not in daemon.output


def reload(daemon: Daemon, text: str) -> None:
    """Write the daemon's file and SIGHUP it; return once both workers applied it."""
    applied = sum("settings applied" in line for line in list(daemon.lines))
    daemon.config.write_text(text)
    daemon.sighup()
    daemon.wait_lines("settings applied", count=applied + 2)


async def test_a_sighup_taking_every_source_away_leaves_parked_lookups_to_their_deadline(
    daemon: Daemon, fake: FakeProvider
) -> None:
    """Lookups parked on both workers, each with a number the provider would name and a
    local hit pipelined behind it; a SIGHUP takes every source away and shortens the
    deadline. Each parked lookup is answered the miss at the deadline it was asked
    with (the request it waits on is not dropped with its source), then the numbers
    behind it, in order: the miss without asking anyone, and the hit."""
    slow, short = 3.0, 0.2
    await asyncio.to_thread(reload, daemon, config(fake, http_deadline=slow))
    streams: list[Stream] = []
    try:
        placed = await on_each_worker(daemon, 4, streams)
        on_both = [stream for conns in placed.values() for stream in conns[:4]]
        parked = [f"{HANG}{n:04d}04" for n in range(len(on_both))]
        named = [f"{FAMILY}0{n:04d}05" for n in range(len(on_both))]  # at once, if asked
        asked = time.monotonic()
        for (_, writer), number, behind in zip(on_both, parked, named, strict=True):
            writer.write(b"".join(lookup(n, escaped=False) for n in (number, behind, HIT[0])))
        await asyncio.to_thread(eventually, lambda: all(fake.asked[n] for n in parked), 10, "asked")
        await asyncio.to_thread(reload, daemon, config(fake, http_deadline=short, sources=False))
        assert time.monotonic() - asked < slow  # taken while every lookup waits
        first = await asyncio.gather(*(answer(reader, slow + 5) for reader, _ in on_both))
        waited = time.monotonic() - asked
        rest = [[await answer(reader, 5) for _ in range(2)] for reader, _ in on_both]
    finally:
        close(streams)
        await asyncio.to_thread(reload, daemon, config(fake, http_deadline=DEADLINE))
    assert first == [(404, b"")] * len(on_both) and slow <= waited < slow + 0.9
    assert rest == [[(404, b""), (200, HIT[1])]] * len(on_both)
    assert not any(fake.asked[n] for n in named)  # no source to ask
    assert "Traceback" not in daemon.output
