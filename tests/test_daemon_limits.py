"""Limits of a real ``cnamd serve --workers 2``: per source across both workers (not
twice the setting), failed logins that lock nobody out, and kernel drops counted."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator

import aiohttp
import pytest
from sip_peer import parse_reply, request

from ops_daemon import Daemon, eventually, http_get, invite, value
from test_daemon import run_cli

pytestmark = pytest.mark.timeout(120)

RATE, BURST = 50, 50  # sip.rate and sip.burst
AUTH_RATE, AUTH_BURST = 2, 10
LOOKUP = "/v1/lookup/+492216698712?tenant=demo"


def _udp(source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((source, 0))
    return sock


def _both_workers_answer(port: int) -> bool:
    """40 OPTIONS in a row answered 200 (random steering reaches both workers), from an
    address of its own so no test's source spends tokens on it."""
    with _udp("127.0.0.9") as sock:
        sock.settimeout(2)
        for i in range(40):
            data = request("OPTIONS", via=f"SIP/2.0/UDP 127.0.0.9:9;rport;branch=z9hG4bKp{i}")
            sock.sendto(data, ("127.0.0.1", port))
            try:
                if parse_reply(sock.recv(65535)).status != 200:
                    return False
            except TimeoutError:
                return False
    return True


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    started = Daemon(
        tmp_path_factory.mktemp("limits"),
        workers=2,
        args=(
            *("--set", f"sip.rate={RATE}", "--set", f"sip.burst={BURST}"),
            *("--set", f"http.auth_failure_rate={AUTH_RATE}"),
            *("--set", f"http.auth_failure_burst={AUTH_BURST}"),
            *("--set", "sip.udp_rcvbuf=65536"),
            *("--set", "sip.tcp_message_timeout=1.5"),
        ),
    )
    try:
        started.wait_ready(60)
        eventually(lambda: len(started.workers()) == 2, 30, "two workers")
        eventually(lambda: _both_workers_answer(started.sip_port), 30, "both workers answering")
        yield started
    finally:
        started.stop()


def test_one_source_gets_the_sip_rate_across_two_workers_not_twice_it(daemon: Daemon) -> None:
    port = daemon.sip_port
    sent = 0
    with _udp("127.0.0.2") as sock:
        started = time.monotonic()
        while time.monotonic() - started < 2.0:  # ~2000 INVITEs/s, 40x the rate
            for _ in range(20):
                data = invite(port, "+492216698712", branch=f"z9hG4bKr{sent}")
                sock.sendto(data, ("127.0.0.1", port))
                sent += 1
            time.sleep(0.01)
        span = time.monotonic() - started
        sock.settimeout(2)
        statuses: Counter[int] = Counter()
        try:
            while sum(statuses.values()) < sent:
                statuses[parse_reply(sock.recv(65535)).status] += 1
        except TimeoutError:
            pass
    answered = statuses[302] + statuses[404]
    expected = BURST + RATE * span  # both workers together; each alone would allow this
    assert sum(statuses.values()) >= 0.98 * sent, (sent, statuses)
    assert set(statuses) <= {302, 404, 503}
    assert 0.8 * expected <= answered <= 1.2 * expected, (answered, expected, statuses)


def _partner_key(daemon: Daemon) -> str:
    made = run_cli(
        "apikey",
        "create",
        "--role",
        "partner",
        "--enterprise",
        "demo",
        "--embedded-dir",
        str(daemon.data_dir),
    )
    assert made.returncode == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]


async def _lockout_attempt(base: str, token: str, seconds: float) -> dict[str, Counter[int]]:
    """An attacker (8 connections failing as fast as they can), a client with a valid
    key and a trusted client without one, all from 127.0.0.1 at once."""
    seen: dict[str, Counter[int]] = {"attacker": Counter(), "key": Counter(), "trusted": Counter()}
    until = time.monotonic() + seconds

    async def loop(
        session: aiohttp.ClientSession,
        who: str,
        headers: Callable[[int], dict[str, str]],
        pause: float,
    ) -> None:
        i = 0
        while time.monotonic() < until:
            async with session.get(base + LOOKUP, headers=headers(i)) as resp:
                await resp.read()
                seen[who][resp.status] += 1
            i += 1
            await asyncio.sleep(pause)

    # a new connection per request: each may be accepted by either worker
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(
            *(
                loop(session, "attacker", lambda i: {"Authorization": f"Bearer ck{i}x.guess"}, 0)
                for _ in range(8)
            ),
            loop(session, "key", lambda _: {"Authorization": f"Bearer {token}"}, 0.02),
            loop(session, "trusted", lambda _: {}, 0.02),
        )
    return seen


def test_a_failing_attacker_locks_out_neither_a_valid_key_nor_trusted_lookups(
    daemon: Daemon,
) -> None:
    token = _partner_key(daemon)
    auth = {"Authorization": f"Bearer {token}"}
    eventually(  # the key reaches both workers' memory through the change feed
        lambda: all(_get(daemon.base + LOOKUP, auth) == 200 for _ in range(10)), 20, "key known"
    )
    started = time.monotonic()
    seen = asyncio.run(_lockout_attempt(daemon.base, token, 3.0))
    span = time.monotonic() - started
    assert set(seen["key"]) == {200} and seen["key"][200] > 20, seen
    assert set(seen["trusted"]) == {200} and seen["trusted"][200] > 20, seen
    assert seen["attacker"][429] > 10 * seen["attacker"][401], seen
    # the failure budget holds across both workers: a burst and the rate, not twice that
    assert seen["attacker"][401] <= 1.25 * (AUTH_BURST + AUTH_RATE * span), seen


def _get(url: str, headers: dict[str, str]) -> int:
    return http_get(url, headers)[0]


def test_a_slow_loris_is_disconnected_at_the_message_deadline(daemon: Daemon) -> None:
    trickled = request("OPTIONS", via="SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKloris")
    with socket.create_connection(("127.0.0.1", daemon.sip_port), timeout=10) as loris:
        started = time.monotonic()
        try:
            for byte in trickled[:10]:  # a byte every 0.5 s: never idle, never a whole message
                loris.sendall(bytes([byte]))
                time.sleep(0.5)
                loris.settimeout(0.01)
                try:
                    if loris.recv(1) == b"":
                        break
                except TimeoutError:
                    pass
        except ConnectionError:
            pass
        elapsed = time.monotonic() - started
    assert 1.4 <= elapsed < 4.0, elapsed


def test_datagrams_dropped_by_the_kernel_while_a_worker_is_stopped_are_counted(
    daemon: Daemon,
) -> None:
    before = value(daemon.scrape(), "cnamd_sip_dropped_total", reason="kernel")
    victim = min(daemon.workers())
    port = daemon.sip_port
    os.kill(victim, signal.SIGSTOP)
    try:
        with _udp("127.0.0.3") as sock:  # about half reach the stopped worker's 128 KiB buffer
            for i in range(3000):
                data = request("OPTIONS", via=f"SIP/2.0/UDP 127.0.0.3:9;rport;branch=z9hG4bKs{i}")
                sock.sendto(data, ("127.0.0.1", port))
    finally:
        os.kill(victim, signal.SIGCONT)

    def counted() -> bool:
        dropped = value(daemon.scrape(), "cnamd_sip_dropped_total", reason="kernel") - before
        return dropped > 500

    eventually(counted, 15, "kernel drops in /metrics")
