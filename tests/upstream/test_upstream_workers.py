"""Upstream sources across the workers of a host (issue #17): one ``--workers 2`` daemon
asking a local HTTP provider shows that a source's daily budget is the deployment's,
not each process's, that the workers missing one number ask for it once, and that a
SIGHUP changes the sources of every worker without a restart."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest
from fake_provider import FakeProvider
from sip_peer import parse_reply

from cnamd.store.embedded import EmbeddedPostgres
from cnamd.upstream.budget import block_for
from databases import TEMPLATE, Database
from ops_daemon import CLI, Daemon, eventually, http_get, invite, sip_exchange, value

pytestmark = pytest.mark.timeout(120)

BUDGET = 300


@pytest.fixture(scope="module")
async def db(pg: EmbeddedPostgres) -> AsyncIterator[str]:
    async with Database(pg, TEMPLATE) as url:
        yield url


def sources(fake: FakeProvider) -> list[dict[str, object]]:
    base = f"http://127.0.0.1:{fake.port}"
    return [
        {
            "name": "budget",
            "kind": "http-json",
            "url": base + "/cnam/{e164}",
            "name_pointer": "/data/caller_name/caller_name",
            "countries": ["+1333"],
            "daily_budget": BUDGET,
        },
        {
            "name": "slow",
            "kind": "http-json",
            "url": base + "/cnam/{e164}",
            "name_pointer": "/data/caller_name/caller_name",
            "countries": ["+1334"],
        },
    ]


def toml(sources: list[dict[str, object]]) -> str:
    """``[[upstream.sources]]`` tables (strings, numbers and lists of strings: JSON's forms)."""
    tables = []
    for source in sources:
        keys = "".join(f"{key} = {json.dumps(value)}\n" for key, value in source.items())
        tables.append("[[upstream.sources]]\n" + keys)
    # a dip waits for the other worker's answer through the change feed: room on a busy host
    return "[upstream]\nsip_deadline = 1.5\n\n" + "\n".join(tables)


@pytest.fixture(scope="module")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, db: str, fake: FakeProvider
) -> Iterator[Daemon]:
    """Its sources in a configuration file, so that a SIGHUP may change them."""
    started = Daemon(
        tmp_path_factory.mktemp("workers"),
        workers=2,
        database_url=db,
        demo=False,
        config=toml(sources(fake)),
    )
    try:
        started.wait_ready(60)
        yield started
    finally:
        started.stop()


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


def call(daemon: Daemon, method: str, path: str, token: str, body: object) -> tuple[int, bytes]:
    req = urllib.request.Request(
        daemon.base + path,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def lookup(daemon: Daemon, number: str) -> int:
    return http_get(daemon.base + "/v1/lookup/" + number.replace("+", "%2B"))[0]


async def test_the_daily_budget_holds_across_the_workers(
    daemon: Daemon, db: str, fake: FakeProvider
) -> None:
    numbers = [f"+1333555{n:04d}" for n in range(BUDGET + 100)]
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda number: lookup(daemon, number), numbers))
    paid = sum(fake.asked[number] for number in numbers)
    # never more than the budget; fewer by at most the blocks the workers hold unspent
    assert BUDGET - 2 * (block_for(BUDGET) - 1) <= paid <= BUDGET
    assert statuses.count(200) == paid and statuses.count(404) == len(numbers) - paid
    samples = daemon.scrape()
    refused = value(samples, "cnamd_upstream_requests_total", source="budget", result="over-budget")
    assert refused == len(numbers) - paid
    conn = await asyncpg.connect(db)
    try:
        reserved = await conn.fetchval(
            "SELECT sum(spent) FROM upstream_budget WHERE source = 'budget'"
        )
    finally:
        await conn.close()
    assert paid <= reserved <= BUDGET


def test_concurrent_misses_in_both_workers_make_one_request(
    daemon: Daemon, fake: FakeProvider
) -> None:
    number = "+13345550001"  # the fake takes SLOW seconds: every lookup overlaps the first
    with ThreadPoolExecutor(32) as pool:
        answers = list(
            pool.map(
                lambda _: http_get(daemon.base + "/v1/lookup/" + number.replace("+", "%2B")),
                range(100),
            )
        )
    assert {status for status, _ in answers} == {200}
    assert {json.loads(body)["name"] for _, body in answers} == {"Fake 0001"}
    assert fake.asked[number] == 1
    # the other worker had misses too, and waited for the answer through the change feed
    samples = daemon.scrape()
    assert value(samples, "cnamd_upstream_shared_waits_total", result="answered") >= 1
    assert value(samples, "cnamd_upstream_shared_waits_total", result="expired") == 0


def test_concurrent_dips_over_both_workers_make_one_request(
    daemon: Daemon, fake: FakeProvider
) -> None:
    number = "+13345550002"  # UDP datagrams are steered to a worker at random

    def dip(n: int) -> int:
        data = invite(daemon.sip_port, number, branch=f"z9hG4bKshared{n}")
        return parse_reply(sip_exchange(daemon.sip_port, data)).status

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(dip, range(40)))
    assert statuses == [302] * 40
    assert fake.asked[number] == 1


def test_every_worker_asks_with_a_tenants_own_account(
    daemon: Daemon, db: str, fake: FakeProvider
) -> None:
    made = cli(db, "tenant", "create", "acme", "--name", "Acme", "--region", "US")
    assert made.returncode == 0, made.stderr
    key = cli(db, "apikey", "create", "--role", "operator")
    assert key.returncode == 0, key.stderr
    token = key.stdout.rstrip("\n").split("\n")[-1]
    body = {"accounts": {"slow": {"headers": ["Authorization: Bearer acme-key"]}}}
    status, _ = call(daemon, "PUT", "/api/operator/upstream/tenants/acme", token, body)
    assert status == 200
    fresh = (f"+1334777{n:04d}" for n in range(1000))

    def asked_with(number: str) -> str:
        lookup(daemon, number + "?tenant=acme")
        return fake.auth.get(number, "")

    eventually(lambda: asked_with(next(fresh)) == "Bearer acme-key", 10, "the account in use")
    for _ in range(10):  # spread over both workers: each has it from its change feed
        assert asked_with(next(fresh)) == "Bearer acme-key"
    number = next(fresh)
    lookup(daemon, number)
    assert fake.auth[number] == ""  # the deployment's source has no credentials


def test_a_sighup_changes_the_sources_of_every_worker(daemon: Daemon, fake: FakeProvider) -> None:
    workers = daemon.workers()
    fresh = (f"+1334666{n:04d}" for n in range(1000))

    def source_of(number: str) -> object:
        status, body = http_get(daemon.base + "/v1/lookup/" + number.replace("+", "%2B"))
        return json.loads(body).get("source") if status == 200 else status

    assert source_of(next(fresh)) == "slow"
    changed = sources(fake)
    changed[1] = {  # "slow" replaced by another source, at another address, for its numbers
        "name": "swapped",
        "kind": "http-json",
        "url": f"http://127.0.0.1:{fake.port}/flaky/{{e164}}",
        "name_pointer": "/data/caller_name/caller_name",
        "countries": ["+1334"],
    }
    daemon.config.write_text(toml(changed))
    daemon.sighup()
    daemon.wait_lines("settings applied", count=2)  # one line per worker
    for _ in range(20):  # any worker: each answers from the new sources
        assert source_of(next(fresh)) == "swapped"
    assert daemon.workers() == workers  # no restart
    assert "need a restart" not in daemon.output


def test_a_sighup_adds_the_first_sources(tmp_path: Path, db: str, fake: FakeProvider) -> None:
    started = Daemon(tmp_path, workers=2, database_url=db, demo=False, config="")
    try:
        started.wait_ready(60)
        number = "+13335559999"
        assert lookup(started, number) == 404 and fake.asked[number] == 0
        workers = started.workers()
        started.config.write_text(toml(sources(fake)[1:]))  # "slow": +1334 only
        started.sighup()
        started.wait_lines("settings applied", count=2)
        for n in range(10):
            fresh = f"+1334888{n:04d}"
            status, body = http_get(started.base + "/v1/lookup/" + fresh.replace("+", "%2B"))
            assert (status, json.loads(body).get("source")) == (200, "slow")
        assert started.workers() == workers
    finally:
        started.stop()
