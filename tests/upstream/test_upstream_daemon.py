"""Upstream sources against real peers (issue #17): a second cnamd as the OpenCNAM and
SIP dip provider, and a local HTTP provider that misbehaves on purpose. One provider,
one fake and one consumer per module; a second consumer on the same database shows
that a number is paid once for the whole deployment, across processes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest
from fake_provider import LATE, LATER, FakeProvider
from sip_peer import parse_reply

from cnamd.store.embedded import EmbeddedPostgres
from databases import TEMPLATE, Database
from ops_daemon import CLI, Daemon, eventually, http_get, invite, sip_exchange, value
from test_daemon import free_port

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
async def consumer_db(pg: EmbeddedPostgres) -> AsyncIterator[str]:
    async with Database(pg, TEMPLATE) as url:
        yield url


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A second, real cnamd with the demo names: the upstream of the consumer."""
    started = Daemon(tmp_path_factory.mktemp("provider"))
    try:
        started.wait_ready(60)
        yield started
    finally:
        started.stop()


def consumer_args(fake: FakeProvider, provider: Daemon, silent: socket.socket) -> tuple[str, ...]:
    base = f"http://127.0.0.1:{fake.port}"
    sources = [
        {
            "name": "flaky",
            "kind": "http-json",
            "url": base + "/flaky/{e164}",
            "name_pointer": "/data/caller_name/caller_name",
            "countries": ["+1777"],
            "breaker_errors": 3,
            "breaker_reset": 0.5,
        },
        {
            "name": "budget",
            "kind": "http-json",
            "url": base + "/cnam/{e164}",
            "name_pointer": "/data/caller_name/caller_name",
            "countries": ["+1888"],
            "daily_budget": 2,
        },
        {
            "name": "short",
            "kind": "http-json",
            "url": base + "/cnam/{e164}",
            "name_pointer": "/data/caller_name/caller_name",
            "countries": ["+1999"],
            "positive_ttl": 1.0,
            "negative_ttl": 1.0,
        },
        {
            "name": "fake",
            "kind": "http-json",
            "url": base + "/cnam/{e164}",
            "headers": ["Authorization: Bearer s3cret-token"],
            "name_pointer": "/data/caller_name/caller_name",
            "countries": ["+1555"],
            "timeout": 5.0,
        },
        {
            "name": "silent",
            "kind": "sip",
            "url": f"sip:127.0.0.1:{silent.getsockname()[1]}",
            "countries": ["+1666"],
            "timeout": 0.4,
        },
        {
            "name": "cnamd-sip",
            "kind": "sip",
            "url": f"sip:127.0.0.1:{provider.sip_port};transport=tcp",
            "countries": ["+18005"],
        },
        {
            "name": "cnamd-sip-udp",
            "kind": "sip",
            "url": f"sip:127.0.0.1:{provider.sip_port}",
            "countries": ["+18006"],
        },
        {"name": "fake-oc", "kind": "opencnam", "url": base, "countries": ["+1444"]},
        {"name": "cnamd", "kind": "opencnam", "url": provider.base},
    ]
    return (
        *("--set", "upstream.sip_deadline=0.8"),
        *("--set", "upstream.sources=" + json.dumps(sources)),
    )


@pytest.fixture(scope="module")
def silent() -> Iterator[socket.socket]:
    """A SIP dip server that never answers: a UDP socket that only counts what it gets."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", free_port()))
        yield sock


@pytest.fixture(scope="module")
def upstream_args(fake: FakeProvider, provider: Daemon, silent: socket.socket) -> tuple[str, ...]:
    return consumer_args(fake, provider, silent)


@pytest.fixture(scope="module")
def consumer(
    tmp_path_factory: pytest.TempPathFactory, consumer_db: str, upstream_args: tuple[str, ...]
) -> Iterator[Daemon]:
    """A cnamd without names of its own, asking the fake, then the provider."""
    started = Daemon(
        tmp_path_factory.mktemp("consumer"),
        database_url=consumer_db,
        demo=False,
        args=upstream_args,
    )
    try:
        started.wait_ready(60)
        yield started
    finally:
        started.stop()


def lookup(daemon: Daemon, number: str) -> tuple[int, dict[str, object]]:
    status, body = http_get(daemon.base + "/v1/lookup/" + number.replace("+", "%2B"))
    return status, json.loads(body) if body else {}


def held(daemon: Daemon) -> float:
    """How many upstream answers the daemon holds (a lookup would ask upstream on a miss,
    so waiting for a write to arrive must not look it up)."""
    return value(daemon.scrape(), "cnamd_cache_entries", scope="upstream")


def wait_held(daemon: Daemon, count: float) -> None:
    eventually(lambda: held(daemon) == count, 10, f"{count} upstream answers held")


def dip(daemon: Daemon, number: str, branch: str, *, tcp: bool = False) -> tuple[int, str]:
    """One SIP dip; (status, the Contact header)."""
    reply = parse_reply(
        sip_exchange(
            daemon.sip_port, invite(daemon.sip_port, number, branch=branch, tcp=tcp), tcp=tcp
        )
    )
    contact = reply.all("Contact")
    return reply.status, contact[0] if contact else ""


def test_a_name_only_the_upstream_cnamd_knows_is_answered_then_held(consumer: Daemon) -> None:
    status, body = lookup(consumer, "+12125550001")  # the provider's demo global name
    assert (status, body["name"], body["scope"], body["source"]) == (
        200,
        "NYC Pizza",
        "upstream",
        "cnamd",
    )
    # held now: the SIP dip answers it from memory
    status, contact = dip(consumer, "+12125550001", "z9hG4bKheld1")
    assert status == 302 and '"NYC Pizza"' in contact
    assert (
        value(consumer.scrape(), "cnamd_lookups_total", front="sip", result="hit", scope="upstream")
        >= 1
    )


def test_the_sip_dip_asks_upstream_on_the_first_call(consumer: Daemon, fake: FakeProvider) -> None:
    status, contact = dip(consumer, "+15550001111", "z9hG4bKfirst1")
    assert status == 302 and '"Fake 1111"' in contact
    status, contact = dip(consumer, "+15550001111", "z9hG4bKfirst2", tcp=True)
    assert status == 302 and '"Fake 1111"' in contact
    assert fake.asked["+15550001111"] == 1


@pytest.mark.parametrize(
    ("number", "source"), [("+18005550100", "cnamd-sip"), ("+18006550100", "cnamd-sip-udp")]
)
def test_an_upstream_sip_dip_server_names_the_number(
    consumer: Daemon, number: str, source: str
) -> None:
    # +1800 is the provider's "US Toll Free" prefix, asked over its SIP dip (TCP, UDP)
    status, body = lookup(consumer, number)
    assert (status, body.get("name"), body.get("source")) == (200, "US Toll Free", source)


def test_a_silent_sip_server_gets_timer_a_retransmissions_and_no_answer_is_kept(
    consumer: Daemon, silent: socket.socket
) -> None:
    status, _ = lookup(consumer, "+16660000001")  # then the provider cnamd: no name
    assert status == 404
    silent.settimeout(0.5)
    invites = []
    with contextlib.suppress(TimeoutError):
        while True:
            invites.append(silent.recv(65535))
    # T1 = timeout / 4 = 0.1 s: sent at 0, 0.1 and 0.3 s, the same INVITE each time
    assert len(invites) == 3 and len(set(invites)) == 1
    assert invites[0].startswith(b"INVITE sip:+16660000001@")
    samples = consumer.scrape()
    assert value(samples, "cnamd_upstream_requests_total", source="silent", result="timeout") == 1


def test_a_hundred_concurrent_dips_for_one_number_make_one_request(
    consumer: Daemon, fake: FakeProvider
) -> None:
    number = "+15550001234"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        for i in range(100):
            sock.sendto(
                invite(consumer.sip_port, number, branch=f"z9hG4bKc{i}"),
                ("127.0.0.1", consumer.sip_port),
            )
        replies = [parse_reply(sock.recv(65535)) for _ in range(100)]
    assert {r.status for r in replies} == {302}
    assert all('"Fake 1234"' in r.all("Contact")[0] for r in replies)
    assert fake.asked[number] == 1


def test_past_the_deadline_the_dip_misses_and_the_late_answer_is_held(
    consumer: Daemon, fake: FakeProvider
) -> None:
    number = "+15550006000"
    started = time.monotonic()
    status, _ = dip(consumer, number, "z9hG4bKlate1")
    assert status == 404 and time.monotonic() - started < LATE
    eventually(
        lambda: lookup(consumer, number)[1].get("name") == "Late Name", 10, "late answer held"
    )
    assert dip(consumer, number, "z9hG4bKlate2")[0] == 302
    assert fake.asked[number] == 1


def test_past_the_deadline_http_lookups_miss_together_and_the_late_answer_is_held(
    consumer: Daemon, fake: FakeProvider
) -> None:
    """Twenty lookups wait on one request to a provider slower than
    ``upstream.http_deadline``: each is answered 404 at the deadline and counted late;
    the request goes on, and its answer is held and served."""
    number = "+15550006001"
    late = value(consumer.scrape(), "cnamd_upstream_late_total", front="http")
    started = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _i: lookup(consumer, number)[0], range(20)))
    assert answers == [404] * 20 and time.monotonic() - started < LATER
    assert value(consumer.scrape(), "cnamd_upstream_late_total", front="http") == late + 20
    eventually(
        lambda: lookup(consumer, number)[1].get("name") == "Later 6001", 10, "late answer held"
    )
    assert fake.asked[number] == 1


def test_a_client_gone_while_waiting_leaves_the_request_to_finish(
    consumer: Daemon, fake: FakeProvider
) -> None:
    """The one request to the provider outlives a client that gave up waiting, and its
    answer is held (aiohttp leaves the lookup's handler running; the request is the
    chain's, shared by every caller, and no caller's end takes it down)."""
    number = "+15550006002"
    url = consumer.base + "/v1/lookup/" + number.replace("+", "%2B")
    with pytest.raises(OSError):  # the client gives up (and closes) before the deadline
        urllib.request.urlopen(url, timeout=0.5)
    eventually(lambda: lookup(consumer, number)[1].get("name") == "Later 6002", 10, "answer held")
    assert fake.asked[number] == 1


def read_answers(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """``count`` HTTP/1.1 answers from a keep-alive connection: (status, body) each."""
    answers = []
    with sock.makefile("rb") as stream:
        for _ in range(count):
            status = int(stream.readline().split(b" ")[1])
            length = 0
            while (line := stream.readline()) not in (b"\r\n", b""):
                name, _, field = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(field)
            answers.append((status, stream.read(length)))
    return answers


def handovers(daemon: Daemon) -> float:
    """Connections handed to aiohttp so far, this scrape's own included."""
    return value(daemon.scrape(), "cnamd_http_front_handovers_total")


def test_a_pbx_connection_waits_for_upstream_on_the_front_with_its_pipelined_lookups(
    consumer: Daemon, fake: FakeProvider
) -> None:
    """Lookups pipelined on one keep-alive connection, as a PBX reuses it: those that go
    upstream are answered when the provider names them, the rest after them, in order,
    and the connection stays on the lookup front (no hand-over to aiohttp)."""
    first, second = "+15550009101", "+15550009102"
    before = handovers(consumer)
    pipelined = b"".join(
        f"GET /v1/lookup/{number}?format=text HTTP/1.1\r\nHost: cnamd\r\n\r\n".encode()
        for number in (first, second, "+15", first)
    )
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", consumer.http_port), timeout=10) as sock:
        sock.sendall(pipelined)
        answers = read_answers(sock, 4)
        sock.sendall(f"GET /v3/phone/{second}?format=pbx HTTP/1.1\r\nHost: c\r\n\r\n".encode())
        answers += read_answers(sock, 1)
    assert answers == [
        (200, b"Fake 9101"),
        (200, b"Fake 9102"),
        (400, b""),  # a number no reading makes valid, answered in its turn
        (200, b"Fake 9101"),  # held by then: from memory
        (200, b"Fake 9102"),
    ]
    assert time.monotonic() - started < LATE  # two provider waits of 0.2 s, no deadline
    assert (fake.asked[first], fake.asked[second]) == (1, 1)
    assert handovers(consumer) == before + 1  # the scrape's own connection (/metrics)
    # a request the front leaves to aiohttp (a percent escape) is counted as one
    assert lookup(consumer, "+15550009101")[0] == 200
    assert handovers(consumer) == before + 3


def test_a_pbx_gone_while_its_lookup_waits_on_the_front_leaves_the_answer_held(
    consumer: Daemon, fake: FakeProvider
) -> None:
    """The client closes while the front waits for upstream: nothing is written to the
    closed connection, the provider's answer is held, and the daemon logs no error."""
    number = "+15550009103"
    with socket.create_connection(("127.0.0.1", consumer.http_port), timeout=10) as sock:
        sock.sendall(f"GET /v1/lookup/{number} HTTP/1.1\r\nHost: cnamd\r\n\r\n".encode() * 3)
    eventually(lambda: lookup(consumer, number)[1].get("name") == "Fake 9103", 10, "answer held")
    assert fake.asked[number] == 1
    assert "lookup front failed" not in consumer.output and "Traceback" not in consumer.output


@pytest.mark.parametrize("number", ["+15550002000", "+15550003000", "+15550004000", "+15550005000"])
def test_a_provider_failing_is_never_a_name_and_the_next_source_is_asked(
    consumer: Daemon, fake: FakeProvider, number: str
) -> None:
    status, _ = lookup(consumer, number)
    # the fake failed (500, HTML, truncated JSON, reset): the provider cnamd was asked and
    # knows no name; its negative answer is held, the failure is not
    assert status == 404
    # once, a reset too: aiohttp's retry of a reset GET is off (a second paid request)
    asked = fake.asked[number]
    assert asked == 1
    assert lookup(consumer, number)[0] == 404
    assert fake.asked[number] == asked


def test_a_negative_answer_is_held_and_not_paid_again(consumer: Daemon, fake: FakeProvider) -> None:
    number = "+15550007000"
    assert lookup(consumer, number)[0] == 404
    assert dip(consumer, number, "z9hG4bKneg1")[0] == 404
    assert lookup(consumer, number)[0] == 404
    assert fake.asked[number] == 1


def test_upstream_names_are_cleaned_to_the_name_rule(consumer: Daemon) -> None:
    assert lookup(consumer, "+15550008000")[1].get("name") == "SMITH JOHN ANTH"
    assert lookup(consumer, "+15550008001")[0] == 404  # another alphabet: no name


def test_ttl_expiry_asks_again(consumer: Daemon, fake: FakeProvider) -> None:
    number = "+19990000001"
    assert lookup(consumer, number)[1].get("name") == "Fake 0001"
    assert lookup(consumer, number)[1].get("name") == "Fake 0001"
    assert fake.asked[number] == 1

    def asked_again() -> bool:
        lookup(consumer, number)
        return fake.asked[number] == 2

    eventually(asked_again, 10, "the expired answer asked again")


def test_withheld_invalid_and_foreign_numbers_never_go_upstream(
    consumer: Daemon, fake: FakeProvider
) -> None:
    before = sum(fake.asked.values())
    assert lookup(consumer, "anonymous")[0] == 200
    assert http_get(consumer.base + "/v1/lookup/12")[0] == 400
    status, contact = dip(consumer, "anonymous", "z9hG4bKanon1")
    assert status == 302 and "Anonymous" in contact
    assert lookup(consumer, "+4930555000")[0] == 404  # not in the fake's countries
    assert sum(fake.asked.values()) == before


def test_the_budget_stops_paying(consumer: Daemon, fake: FakeProvider) -> None:
    for number in ("+18880000001", "+18880000002", "+18880000003"):
        lookup(consumer, number)
    assert fake.asked["+18880000003"] == 0
    samples = consumer.scrape()
    assert (
        value(samples, "cnamd_upstream_requests_total", source="budget", result="over-budget") == 1
    )
    assert value(samples, "cnamd_upstream_budget_left", source="budget") == 0


def test_the_breaker_opens_on_errors_and_closes_when_the_provider_is_back(
    consumer: Daemon, fake: FakeProvider
) -> None:
    fake.failing = True
    for i in range(5):
        lookup(consumer, f"+1777000010{i}")
    samples = consumer.scrape()
    assert value(samples, "cnamd_upstream_breaker_state", source="flaky") == 2
    assert value(samples, "cnamd_upstream_requests_total", source="flaky", result="error") == 3
    assert (
        value(samples, "cnamd_upstream_requests_total", source="flaky", result="breaker-open") == 2
    )
    assert consumer.readyz()[0] == 200  # a provider down is no reason to stop answering
    fake.failing = False

    fresh = itertools.count(200)

    def recovered() -> bool:
        return lookup(consumer, f"+17770000{next(fresh)}")[1].get("source") == "flaky"

    eventually(recovered, 10, "the breaker's probe succeeds")
    assert value(consumer.scrape(), "cnamd_upstream_breaker_state", source="flaky") == 0


def test_two_daemons_on_one_database_pay_once(
    tmp_path: Path,
    consumer: Daemon,
    consumer_db: str,
    fake: FakeProvider,
    upstream_args: tuple[str, ...],
) -> None:
    stored = "+15550001500"
    assert lookup(consumer, stored)[1].get("name") == "Fake 1500"
    second = Daemon(tmp_path, database_url=consumer_db, demo=False, args=upstream_args)
    try:
        second.wait_ready(60)
        # stored before it started (a restart keeps the cache): loaded from PostgreSQL
        assert lookup(second, stored)[1].get("name") == "Fake 1500"
        # asked by the first while the second runs: the change log brings it over
        fresh = "+15550001501"
        before = held(second)
        assert lookup(consumer, fresh)[1].get("name") == "Fake 1501"
        wait_held(second, before + 1)  # the change log brought it over
        assert lookup(second, fresh)[1].get("name") == "Fake 1501"
        assert (fake.asked[stored], fake.asked[fresh]) == (1, 1)
    finally:
        second.stop()


def test_credentials_never_reach_the_logs(consumer: Daemon, fake: FakeProvider) -> None:
    assert any(h.get("Authorization") == "Bearer s3cret-token" for h in fake.headers)
    assert "s3cret" not in consumer.output
    assert "s3cret" not in http_get(consumer.base + "/metrics")[1].decode()


async def test_answers_are_stored_for_the_deployment(consumer: Daemon, consumer_db: str) -> None:
    conn = await asyncpg.connect(consumer_db)
    try:
        rows = await conn.fetch("SELECT number, name, source FROM upstream_answers")
    finally:
        await conn.close()
    stored = {r["number"]: (r["name"], r["source"]) for r in rows}
    assert stored.get("+12125550001") == ("NYC Pizza", "cnamd")
    assert stored.get("+15550007000") == (None, "fake")
    assert "+15550002000" not in stored or stored["+15550002000"][1] != "fake"
    await asyncio.sleep(0)


def cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNAMD_")}
    return subprocess.run(
        [*CLI, *args, "--database-url", db_url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def call(
    daemon: Daemon, method: str, path: str, token: str, body: bytes | None = None
) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(
        daemon.base + path, data=body, method=method, headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else {}


@pytest.fixture(scope="module")
def operator_token(consumer_db: str, consumer: Daemon) -> str:
    done = cli(consumer_db, "apikey", "create", "--role", "operator")
    assert done.returncode == 0, done.stderr
    return done.stdout.rstrip("\n").split("\n")[-1]


def test_operators_import_list_pin_and_purge_over_the_api(
    consumer: Daemon, operator_token: str
) -> None:
    base = "/api/operator/upstream/answers"
    before = held(consumer)
    csv = b"phone,name\n+13105550100,Imported Co\n+13105550101,\nnot-a-number,X\n"
    status, body = call(
        consumer, "POST", base + "/import?source=acme&ttl_days=2", operator_token, csv
    )
    assert (status, body["imported"], body["rejected"]) == (200, 2, 1)
    # imported answers are served from memory like any upstream answer
    wait_held(consumer, before + 2)
    assert lookup(consumer, "+13105550100")[1].get("name") == "Imported Co"
    assert lookup(consumer, "+13105550100")[1]["source"] == "acme"
    status, body = call(consumer, "GET", base + "?prefix=%2B1310555010", operator_token)
    listed = body["answers"]
    assert status == 200 and isinstance(listed, list)
    assert [(a["number"], a["name"]) for a in listed] == [
        ("+13105550100", "Imported Co"),
        ("+13105550101", None),
    ]
    status, body = call(
        consumer, "PUT", base + "/+13105550100/pin", operator_token, b'{"name": "Pinned Co"}'
    )
    assert (status, body["pinned"], body["expires_at"]) == (200, True, None)
    eventually(lambda: lookup(consumer, "+13105550100")[1].get("name") == "Pinned Co", 10, "pinned")
    assert call(consumer, "DELETE", base + "/+13105550101", operator_token)[0] == 204
    assert call(consumer, "DELETE", base + "/+13105550101", operator_token)[0] == 404


@pytest.mark.parametrize(
    "case",
    [
        ("GET", "?limit=0", None, "limit"),
        ("GET", "?prefix=abc", None, "prefix"),
        ("DELETE", "", None, "all"),
        ("PUT", "/+13105550199/pin", b'{"name": "<b>x</b>"}', "name"),
        ("PUT", "/+13105550199/pin", b'{"nam": "X"}', "nam"),
        ("PUT", "/+13105550199/pin", None, "number"),
        ("PUT", "/12/pin", b"{}", "number"),
        ("POST", "/import", b"no,header\n", "file"),
        ("POST", "/import?source=Bad%20Name", b"phone,name\n", "source"),
        ("POST", "/import?ttl_days=x", b"phone,name\n", "ttl_days"),
    ],
)
def test_bad_operator_requests_are_4xx_naming_the_field(
    consumer: Daemon, operator_token: str, case: tuple[str, str, bytes | None, str]
) -> None:
    method, path, body, field = case
    status, answer = call(
        consumer, method, "/api/operator/upstream/answers" + path, operator_token, body
    )
    assert 400 <= status < 500 and answer.get("field") == field, (status, answer)


def test_the_cli_lists_pins_and_purges(consumer: Daemon, consumer_db: str) -> None:
    before = held(consumer)
    done = cli(consumer_db, "upstream", "pin", "+13105550300", "--name", "Cli Co")
    assert done.returncode == 0, done.stderr
    wait_held(consumer, before + 1)
    assert lookup(consumer, "+13105550300")[1].get("name") == "Cli Co"
    listed = cli(consumer_db, "upstream", "list", "--prefix", "+13105550300", "--json")
    assert json.loads(listed.stdout)["pinned"] is True
    assert cli(consumer_db, "upstream", "purge", "+13105550300").stdout.strip() == "deleted=1"
    bad = cli(consumer_db, "upstream", "pin", "+13105550301")
    assert bad.returncode == 1 and "no upstream answer" in bad.stderr


def test_a_tenant_can_turn_upstream_off(
    consumer: Daemon, consumer_db: str, fake: FakeProvider, operator_token: str
) -> None:
    # its SIP network is the tests' own address: dips from here are the tenant's (last test)
    done = cli(
        consumer_db,
        *("tenant", "create", "quiet", "--name", "Quiet", "--region", "US"),
        *("--network", "127.0.0.1/32"),
    )
    assert done.returncode == 0, done.stderr
    held_number = "+15550001111"  # named by the fake in an earlier test, held since
    eventually(lambda: lookup(consumer, held_number + "?tenant=quiet")[0] == 200, 10, "tenant")
    policy = "/api/operator/upstream/tenants/quiet"
    status, body = call(consumer, "PUT", policy, operator_token, b'{"upstream": "off"}')
    assert (status, body) == (200, {"tenant": "quiet", "upstream": "off", "accounts": {}})
    # held answers are not the tenant's any more (a held number: waiting costs nothing)
    eventually(lambda: lookup(consumer, held_number + "?tenant=quiet")[0] == 404, 10, "off")
    assert dip(consumer, held_number, "z9hG4bKquiet1")[0] == 404
    fresh = "+15550009999"
    assert dip(consumer, fresh, "z9hG4bKquiet2")[0] == 404
    assert lookup(consumer, fresh + "?tenant=quiet")[0] == 404
    assert fake.asked[fresh] == 0  # never asked for that tenant
    assert lookup(consumer, fresh)[1].get("name") == "Fake 9999"  # everyone else: as before
    listed = call(consumer, "GET", "/api/operator/upstream/tenants", operator_token)
    assert listed == (200, {"tenants": [{"tenant": "quiet", "upstream": "off", "accounts": {}}]})
    assert call(consumer, "PUT", policy, operator_token, b'{"upstream": "on"}')[0] == 200
    eventually(lambda: lookup(consumer, held_number + "?tenant=quiet")[0] == 200, 10, "on")
    assert dip(consumer, held_number, "z9hG4bKquiet3")[0] == 302
    bad = call(consumer, "PUT", policy, operator_token, b'{"upstream": "maybe"}')
    assert (bad[0], bad[1].get("field")) == (400, "upstream")
    missing = call(consumer, "PUT", policy + "x", operator_token, b'{"upstream": "off"}')
    assert (missing[0], missing[1].get("field")) == (404, "tenant")


def test_a_tenant_asks_with_its_own_account(
    consumer: Daemon, fake: FakeProvider, operator_token: str
) -> None:
    # after the test above: 'quiet' is on again and its network is the tests' address
    policy = "/api/operator/upstream/tenants/quiet"
    accounts = {
        "fake": {"headers": ["Authorization: Bearer quiet-key"]},
        "fake-oc": {"account_sid": "ACquiet", "auth_token": "quiet-token"},
    }
    status, body = call(
        consumer, "PUT", policy, operator_token, json.dumps({"accounts": accounts}).encode()
    )
    shown = {"fake": {"set": ["headers"]}, "fake-oc": {"set": ["account_sid", "auth_token"]}}
    assert (status, body) == (200, {"tenant": "quiet", "upstream": "on", "accounts": shown})
    fresh = (f"+1555000{n}" for n in itertools.count(3000))

    def asks_with_its_key() -> bool:  # the change log brings the account to every worker
        number = next(fresh)
        lookup(consumer, number + "?tenant=quiet")
        return fake.auth.get(number) == "Bearer quiet-key"

    eventually(asks_with_its_key, 10, "the tenant's account in use")
    for n in range(4):  # every worker has it: HTTP in its context, a SIP dip from its network
        number = next(fresh)
        assert lookup(consumer, number + "?tenant=quiet")[1].get("name") == f"Fake {number[-4:]}"
        assert fake.auth[number] == "Bearer quiet-key"
        number = next(fresh)
        assert dip(consumer, number, f"z9hG4bKown{n}")[0] == 302
        assert fake.auth[number] == "Bearer quiet-key"
    number = next(fresh)  # anyone else: the deployment's account
    assert lookup(consumer, number)[1].get("name") == f"Fake {number[-4:]}"
    assert fake.auth[number] == "Bearer s3cret-token"
    assert lookup(consumer, "+14440000001?tenant=quiet")[1].get("name") == "Open 0001"
    assert fake.query["+14440000001"]["account_sid"] == "ACquiet"
    assert fake.query["+14440000001"]["auth_token"] == "quiet-token"
    assert lookup(consumer, "+14440000002")[1].get("source") == "fake-oc"
    assert "account_sid" not in fake.query["+14440000002"]
    # an answer paid with the tenant's account is the deployment's (README): held for all
    assert lookup(consumer, "+14440000001")[1].get("name") == "Open 0001"
    assert fake.asked["+14440000001"] == 1

    listed = call(consumer, "GET", "/api/operator/upstream/tenants", operator_token)
    assert listed == (200, {"tenants": [{"tenant": "quiet", "upstream": "on", "accounts": shown}]})
    for secret in ("quiet-key", "quiet-token", "ACquiet"):
        assert secret not in consumer.output
        assert secret not in http_get(consumer.base + "/metrics")[1].decode()

    assert call(consumer, "PUT", policy, operator_token, b'{"upstream": "on"}')[1]["accounts"] == {}

    def asks_with_the_deployments_key() -> bool:
        number = next(fresh)
        lookup(consumer, number + "?tenant=quiet")
        return fake.auth.get(number) == "Bearer s3cret-token"

    eventually(asks_with_the_deployments_key, 10, "the account removed")


@pytest.mark.parametrize(
    ("accounts", "field"),
    [
        ({"nosuch": {"headers": ["A: b"]}}, "accounts.nosuch"),
        ({"fake": {"account_sid": "AC1", "auth_token": "t"}}, "accounts.fake.account_sid"),
        ({"fake": {"headers": ["no colon"]}}, "accounts.fake.headers"),
        ({"fake": {"headers": "Authorization: Bearer x"}}, "accounts.fake.headers"),
        ({"fake": {"headers": ["X-Key: a\r\nHost: evil"]}}, "accounts.fake.headers"),
        ({"fake": {}}, "accounts.fake"),
        ({"fake-oc": {"account_sid": "AC1"}}, "accounts.fake-oc.auth_token"),
        ({"fake-oc": {"username": "u"}}, "accounts.fake-oc.password"),
        ({"fake-oc": {"account_sid": 5, "auth_token": "t"}}, "accounts.fake-oc.account_sid"),
        ({"silent": {"username": "u", "password": "p"}}, "accounts.silent"),
        (["fake"], "accounts"),
    ],
)
def test_a_wrong_account_is_400_naming_the_field(
    consumer: Daemon, operator_token: str, accounts: object, field: str
) -> None:
    body = json.dumps({"accounts": accounts}).encode()
    status, answer = call(
        consumer, "PUT", "/api/operator/upstream/tenants/quiet", operator_token, body
    )
    assert (status, answer.get("field")) == (400, field), answer
