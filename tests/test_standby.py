"""Daemons that follow a PostgreSQL hot standby: served from it, writes to the primary,
and the failover drill. One primary and one streaming standby (pg_basebackup -R, the
embedded binaries) for the whole module; the drill, which promotes the standby, runs last.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from sip_peer import display_name, parse_reply

from cnamd.store.demo import load_demo
from cnamd.store.migrations import migrate
from cnamd.store.replicated_pair import ReplicatedPair
from cnamd.store.replication import Replication, replication
from ops_daemon import Daemon, eventually, http_get, value
from test_daemon import free_port, run_cli, sip_dip

DB = "cnamd"
INSERT = (
    "INSERT INTO cnam_entries (scope, tenant_id, key, is_prefix, name, approval, approved_at)"
    " SELECT 'enterprise', id, $1, false, $2, 'approved', now() FROM tenants WHERE slug = 'demo'"
)
ENTERPRISE = "/api/partner/enterprise/demo/cnam"


def sql(url: str, query: str, *args: object) -> Any:
    """One statement on ``url``, its first value."""

    async def run() -> Any:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            return await conn.fetchval(query, *args, timeout=10)
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicatedPair]:
    """A primary with the demo data and its streaming standby, for the module."""
    root = tmp_path_factory.mktemp("replicated")
    started = ReplicatedPair.create(root, free_port(), free_port())
    try:

        async def prepare() -> None:
            admin = await asyncpg.connect(started.primary.url(), timeout=10)
            try:
                await admin.execute(f"CREATE DATABASE {DB}")
            finally:
                await admin.close()
            conn = await asyncpg.connect(started.primary.url(DB), timeout=10)
            try:
                await migrate(conn)
                await load_demo(conn)
            finally:
                await conn.close()

        asyncio.run(prepare())
        # the standby has replayed the schema and the demo data
        eventually(
            lambda: _ask(started.standby.url(DB), "SELECT count(*) FROM tenants") == 1,
            20,
            "the standby replays the primary",
        )
        yield started
    finally:
        started.stop()


def _ask(url: str, query: str) -> Any:
    try:
        return sql(url, query)
    except (OSError, asyncpg.PostgresError):
        return None


@pytest.fixture(scope="module")
def token(pair: ReplicatedPair) -> str:
    """A partner key of tenant demo, made on the primary (replicated to the standby)."""
    made = run_cli(
        "apikey", "create", "--role", "partner", "--enterprise", "demo",
        "--database-url", pair.primary.url(DB),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def standby_only(
    pair: ReplicatedPair, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    """A daemon that knows only the standby: a supervisor whose loader and two workers
    each poll it."""
    daemon = Daemon(
        tmp_path_factory.mktemp("standby-only"),
        workers=2,
        database_url=pair.standby.url(DB),
        demo=False,
    )
    try:
        daemon.wait_ready()
        yield daemon
    finally:
        daemon.stop()


def lookup(daemon: Daemon, number: str) -> str | None:
    status, body = http_get(f"{daemon.base}/v1/lookup/{number}?tenant=demo")
    return json.loads(body).get("name") if status == 200 else None


def dip(daemon: Daemon, number: str) -> str | None:
    """The name a SIP dip of ``number`` (to the demo tenant's number) answers, or None."""
    reply = parse_reply(sip_dip(daemon.sip_port, number))
    return display_name(reply.one("Contact")) if reply.status == 302 else None


def test_a_change_on_the_primary_is_served_by_a_daemon_following_the_standby(
    pair: ReplicatedPair, standby_only: Daemon
) -> None:
    ready = standby_only.wait_ready()
    assert ready["database_mode"] == "standby"
    eventually(lambda: standby_only.readyz()[1]["replay_lag"] == 0, 10, "caught up: lag 0")
    sql(pair.primary.url(DB), INSERT, "+492216690001", "Standby Heard")
    eventually(lambda: lookup(standby_only, "+492216690001") == "Standby Heard", 5, "served")
    samples = standby_only.scrape()
    assert value(samples, "cnamd_database_mode", mode="standby") == 1
    assert value(samples, "cnamd_database_mode", mode="primary") == 0
    assert value(samples, "cnamd_database_replay_lag_seconds") == 0
    # the feed polls: no LISTEN on the standby, no error in the log
    assert "Traceback" not in standby_only.output


def test_a_write_to_a_standby_only_daemon_is_a_clear_503_while_lookups_go_on(
    pair: ReplicatedPair, standby_only: Daemon, token: str
) -> None:
    # the key was made on the primary: it reaches each worker by replication, then that
    # worker's own poll of the standby. One worker answering with it is not enough (a
    # loaded clean-clone run got a 401 from the other one): wait until both applied it.
    head = sql(pair.primary.url(DB), "SELECT max(id) FROM change_log")

    def every_worker_has_it() -> bool:
        workers = standby_only.readyz()[1].get("workers")
        return (
            isinstance(workers, list)
            and len(workers) == 2
            and all((w["change_id"] or 0) >= head for w in workers)
        )

    eventually(every_worker_has_it, 15, "the key applied by both workers")

    async def load() -> list[tuple[str, int, Any]]:
        headers = {"Authorization": f"Bearer {token}"}
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(
            standby_only.base, headers=headers, timeout=timeout
        ) as http:

            async def one(i: int) -> tuple[str, int, Any]:
                method, path, body = (
                    ("POST", f"{ENTERPRISE}/+4922166{i:05d}", {"name": f"Refused {i}"})
                    if i % 2
                    else ("GET", "/v1/lookup/+492216698712?tenant=demo", None)
                )
                async with http.request(method, path, json=body) as resp:
                    return method, resp.status, await resp.json(content_type=None)

            return await asyncio.gather(*(one(i) for i in range(40)))

    answers = asyncio.run(load())
    writes = [(status, body) for method, status, body in answers if method == "POST"]
    reads = [(status, body) for method, status, body in answers if method == "GET"]
    assert writes and all(status == 503 for status, _ in writes), writes[:3]
    for _status, body in writes:
        assert body["status"] == "read-only-standby"
        assert body["field"] == "database.primary_url"
        assert "writes go to the primary" in body["message"]
    assert all(status == 200 and body["name"] == "John Doe" for status, body in reads), reads
    # the order worker waits for a primary, saying so once, not a warning per poll
    standby_only.wait_lines("order worker: the database is a read-only standby")
    assert "order worker: database error" not in standby_only.output
    assert "Traceback" not in standby_only.output


def test_a_role_without_pg_read_all_stats_sees_a_caught_up_standby_as_0_s_behind(
    pair: ReplicatedPair,
) -> None:
    """Such a role sees the WAL receiver's pid but not its status: read as streaming,
    or an idle primary would make every unprivileged daemon report hours of lag."""
    sql(pair.primary.url(DB), "CREATE ROLE cnamd_plain LOGIN")

    async def look() -> Replication:
        url = pair.standby.url(DB).replace("postgres@", "cnamd_plain@")
        conn = await asyncpg.connect(url, timeout=10)
        try:
            return await replication(conn, 5)
        finally:
            await conn.close()

    eventually(
        lambda: (
            _ask(pair.standby.url(DB), "SELECT 1 FROM pg_roles WHERE rolname = 'cnamd_plain'") == 1
        ),
        5,
        "role replicated",
    )
    status = asyncio.run(look())
    assert status.standby and status.caught_up


def test_a_region_cut_off_from_its_primary_starts_and_serves_from_its_standby(
    pair: ReplicatedPair, tmp_path: Path
) -> None:
    """The primary named in database.primary_url does not answer at start-up: a
    supervisor with workers checks the schema on the standby and serves, no snapshot."""
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/{DB}"
    daemon = Daemon(
        tmp_path,
        workers=2,
        database_url=pair.standby.url(DB),
        demo=False,
        args=("--set", f"database.primary_url={nowhere}", "--set", "database.connect_timeout=1"),
    )
    try:
        ready = daemon.wait_ready()
        assert ready["database_mode"] == "standby"
        assert lookup(daemon, "+492216698712") == "John Doe"
        daemon.wait_lines("the primary is unreachable at start-up")
    finally:
        daemon.stop()


def test_store_commands_write_to_the_primary_and_say_so_on_a_standby(pair: ReplicatedPair) -> None:
    standby = ("--database-url", pair.standby.url(DB))
    refused = run_cli(
        "tenant", "create", "refused", "--name", "Refused", "--region", "DE", *standby
    )
    assert refused.returncode == 2, refused.stderr
    assert "Traceback" not in refused.stderr
    assert "read-only hot standby" in refused.stderr and "database.primary_url" in refused.stderr
    made = run_cli(
        "tenant", "create", "regional", "--name", "Regional", "--region", "DE",
        *standby, "--set", f"database.primary_url={pair.url(DB)}",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    query = "SELECT count(*) FROM tenants WHERE slug = 'regional'"
    eventually(lambda: _ask(pair.standby.url(DB), query) == 1, 5, "replicated")


@pytest.mark.timeout(120)
def test_a_follower_stopped_past_the_pruned_point_reloads_and_serves_the_same_digest(
    pair: ReplicatedPair, tmp_path: Path
) -> None:
    """Retention on the primary's daemon prunes changes a stopped standby follower never
    read: restarted from its snapshot, it finds the gap, reloads whole, and serves
    exactly what the primary's daemon serves."""
    snapshot = tmp_path / "follower.snapshot"
    follower = Daemon(
        tmp_path / "f1", database_url=pair.standby.url(DB), demo=False, snapshot=snapshot
    )
    try:
        stopped_at = follower.wait_ready()["change_id"]
    finally:
        follower.stop()
    assert isinstance(stopped_at, int)

    async def write() -> None:
        conn = await asyncpg.connect(pair.primary.url(DB), timeout=10)
        try:
            for i in range(50):
                await conn.execute(INSERT, f"+4922166902{i:02d}", f"Pruned {i}")
        finally:
            await conn.close()

    asyncio.run(write())
    primary_daemon = Daemon(
        tmp_path / "p",
        database_url=pair.primary.url(DB),
        demo=False,
        args=(
            "--set",
            "database.change_log_max_age=0",
            "--set",
            "database.change_log_keep_rows=5",
            "--set",
            "database.change_log_prune_interval=0.2",
        ),
    )
    try:
        primary_daemon.wait_ready()
        first = "SELECT coalesce(min(id), 0) FROM change_log"
        eventually(
            lambda: (_ask(pair.standby.url(DB), first) or 0) > stopped_at + 1,
            15,
            "the pruning reaches the standby, past the stopped follower",
        )
        rows = _ask(pair.standby.url(DB), "SELECT count(*) FROM change_log")
        assert rows is not None and rows <= 5 + 50  # bounded (writes may land between)
        assert value(primary_daemon.scrape(), "cnamd_change_log_pruned_total") >= 45

        follower = Daemon(
            tmp_path / "f2", database_url=pair.standby.url(DB), demo=False, snapshot=snapshot
        )
        follower.wait_ready()
        follower.wait_lines("gap in the change log")
        assert value(follower.scrape(), "cnamd_cache_reloads_total", cause="gap") >= 1

        def same_digest() -> bool:
            mine, theirs = follower.readyz()[1], primary_daemon.readyz()[1]
            return mine["change_id"] == theirs["change_id"] and mine["digest"] == theirs["digest"]

        eventually(same_digest, 10, "the reloaded follower serves what the primary's daemon does")
        assert lookup(follower, "+492216690249") == "Pruned 49"
        assert "Traceback" not in follower.output + primary_daemon.output
    finally:
        follower.stop()
        primary_daemon.stop()


@pytest.mark.timeout(120)
def test_failover_drill_dips_go_on_lag_grows_then_writes_resume_after_promotion(
    pair: ReplicatedPair, token: str, tmp_path: Path
) -> None:
    """Stop the primary: the standby's daemons answer every dip and report the lag
    growing (stale past database.max_replay_lag). Promote the standby: writes through
    the same daemons go through again, to the new primary, without a restart. A writer
    sends names through the whole drill: each is answered 200 or 503, never a 500, and
    every one answered 200 is served by both daemons at the end."""
    daemons = [
        Daemon(
            tmp_path / f"d{i}",
            database_url=pair.standby.url(DB),
            demo=False,
            args=(
                "--set",
                f"database.primary_url={pair.url(DB)}",
                "--set",
                "database.max_replay_lag=1",
                "--set",
                "database.statement_timeout=2",
            ),
        )
        for i in range(2)
    ]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def put(daemon: Daemon, number: str, name: str) -> int:
        import urllib.error
        import urllib.request

        data = json.dumps({"name": name}).encode()
        req = urllib.request.Request(
            f"{daemon.base}{ENTERPRISE}/{number}", data=data, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)
        except OSError:
            return 0

    try:
        for daemon in daemons:
            daemon.wait_ready()
        # before: a write through a standby daemon goes to the primary and comes back
        assert put(daemons[0], "+492216690100", "Before Failover") == 200
        for daemon in daemons:
            eventually(lambda d=daemon: dip(d, "+492216690100") == "Before Failover", 5, "dip")

        written: dict[str, str] = {}
        statuses: list[int] = []
        done = threading.Event()

        def writer() -> None:
            for i in range(3000):  # a bound; the drill stops it long before
                if done.is_set():
                    return
                number, name = f"+492216681{i:04d}", f"Drill {i}"
                statuses.append(put(daemons[0], number, name))
                if statuses[-1] == 200:
                    written[number] = name
                done.wait(0.02)

        writing = threading.Thread(target=writer, daemon=True)
        writing.start()
        eventually(lambda: len(written) >= 5, 10, "writes go through before the failover")
        pair.primary.stop()
        lags: list[float] = []

        def lag_grows() -> bool:
            for daemon in daemons:
                assert dip(daemon, "+492216698712") == "John Doe"  # every dip answered
            lag = standby_lag(daemons[0])
            lags.append(lag)
            return lag > 1.5

        eventually(lag_grows, 20, "the replay lag grows past 1.5 s")
        assert lags == sorted(lags), lags
        status, ready = daemons[0].readyz()
        assert status == 200 and ready["stale"] is True  # cache.stale_ready_status = 200
        assert any("behind its primary" in str(r) for r in ready["reasons"])  # type: ignore[attr-defined]
        eventually(
            lambda: value(daemons[1].scrape(), "cnamd_database_replay_lag_seconds") > 1,
            5,
            "the other daemon's lag gauge grows too",
        )

        pair.standby.promote()
        for daemon in daemons:
            eventually(
                lambda d=daemon: put(d, f"+49221669{d.http_port:05d}", "After Failover") == 200,
                30,
                "writes resume against the promoted standby",
            )
            eventually(lambda d=daemon: d.readyz()[1]["database_mode"] == "primary", 10, "mode")
        resumed = len(statuses)
        eventually(lambda: statuses[resumed:].count(200) >= 5, 10, "the writer's names go through")
        done.set()
        writing.join(timeout=10)
        assert set(statuses) <= {200, 503}, sorted(set(statuses))
        assert 503 in statuses  # while there was no primary
        last = max(written)
        for daemon in daemons:
            eventually(lambda d=daemon: lookup(d, last) == written[last], 5, "the last write")
            served = {number: lookup(daemon, number) for number in written}
            assert served == written, [n for n in written if served[n] != written[n]][:5]
        for daemon in daemons:
            for other in daemons:
                number = f"+49221669{other.http_port:05d}"
                eventually(lambda d=daemon, n=number: dip(d, n) == "After Failover", 5, "heard")
            status, ready = daemon.readyz()
            assert status == 200 and ready["stale"] is False and ready["replay_lag"] == 0
    finally:
        for daemon in daemons:
            daemon.stop()


def standby_lag(daemon: Daemon) -> float:
    lag = daemon.readyz()[1]["replay_lag"]
    assert isinstance(lag, int | float)
    return float(lag)
