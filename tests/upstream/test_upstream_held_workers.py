"""The held upstream answers mapped by every process of a host (cache/held_file.py):
one ``--workers 2`` daemon on a database that already holds answers. Every process
maps one file (same inode, its pages shared), answers equal the database's, a purge,
a pin or a new answer after the build reaches every worker, a mapped answer expires
on time, and a replaced worker or a restarted daemon answers the same from the file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from cnamd.store.embedded import EmbeddedPostgres
from databases import TEMPLATE, Database
from ops_daemon import CLI, Daemon, eventually, http_get, value

pytestmark = pytest.mark.timeout(180)

POSITIVE = [f"+1515555{i:04d}" for i in range(300)]
NEGATIVE = [f"+1516555{i:04d}" for i in range(50)]
PINNED = "+15175550001"
SOON = "+15185550001"  # expires a few seconds after the daemon starts
SOON_SECONDS = 20
SOON_AT: list[float] = []  # its expiry, epoch seconds, read back from the database
COMPACT = 100  # answers changed since the file's build before the loader writes a new one
ASKS = 8  # new connections per number: the kernel spreads them over both workers


@pytest.fixture(scope="module")
async def db(pg: EmbeddedPostgres) -> AsyncIterator[str]:
    async with Database(pg, TEMPLATE) as url:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                "INSERT INTO upstream_answers (number, name, source, expires_at)"
                " SELECT n, 'Held ' || right(n, 4), 'opencnam', now() + interval '1 day'"
                " FROM unnest($1::text[]) n",
                POSITIVE,
            )
            await conn.execute(
                "INSERT INTO upstream_answers (number, name, source, expires_at)"
                " SELECT n, NULL, 'telnyx', now() + interval '1 day' FROM unnest($1::text[]) n",
                NEGATIVE,
            )
            await conn.execute(
                "INSERT INTO upstream_answers (number, name, source, pinned)"
                " VALUES ($1, 'Always Here', 'operator', true)",
                PINNED,
            )
            await conn.execute(
                "INSERT INTO upstream_answers (number, name, source, expires_at)"
                f" VALUES ($1, 'Soon Gone', 'opencnam', now() + interval '{SOON_SECONDS} seconds')",
                SOON,
            )
            SOON_AT.append(
                await conn.fetchval(
                    "SELECT extract(epoch FROM expires_at)::float8 FROM upstream_answers"
                    " WHERE number = $1",
                    SOON,
                )
            )
        finally:
            await conn.close()
        yield url


def start(home: Path, db: str) -> Daemon:
    daemon = Daemon(
        home,
        workers=2,
        database_url=db,
        demo=False,
        snapshot=home / "cache.snapshot",
        # the sweeper must not delete the expiring answer: its lapse is the cache's doing
        args=(
            *("--set", "upstream.sweep_interval=3600", "--set", "cache.snapshot_interval=0.5"),
            *("--set", f"cache.compact_threshold={COMPACT}"),
        ),
    )
    daemon.wait_ready(60)
    return daemon


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("held")


@pytest.fixture(scope="module")
def daemon(home: Path, db: str) -> Iterator[Daemon]:
    started = start(home, db)
    try:
        yield started
    finally:
        started.stop()


def answers(daemon: Daemon, number: str) -> set[tuple[int, str | None, str | None]]:
    """Every distinct (status, name, source) over ASKS new connections."""
    seen = set()
    for _ in range(ASKS):
        status, body = http_get(daemon.base + "/v1/lookup/" + number.replace("+", "%2B"))
        data = json.loads(body) if body else {}
        seen.add((status, data.get("name"), data.get("source")))
    return seen


async def stored(db: str) -> dict[str, tuple[str | None, str]]:
    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetch(
            "SELECT number, name, source FROM upstream_answers"
            " WHERE pinned OR expires_at > now() + interval '2 seconds'"
        )
    finally:
        await conn.close()
    return {r["number"]: (r["name"], r["source"]) for r in rows}


def expected(row: tuple[str | None, str] | None) -> set[tuple[int, str | None, str | None]]:
    if row is None or row[0] is None:  # no answer, or a negative one: the lookup misses
        return {(404, None, None)}
    return {(200, row[0], row[1])}


async def assert_equal_to_database(daemon: Daemon, db: str, numbers: list[str]) -> None:
    rows = await stored(db)
    for number in numbers:
        assert answers(daemon, number) == expected(rows.get(number)), number


def held_path(home: Path) -> Path:
    return home / "cache.snapshot.upstream"


def mappings(pid: int, path: Path) -> tuple[set[int], int, int]:
    """(inodes, Rss kB, Pss kB) of the process's mappings of ``path``."""
    inodes: set[int] = set()
    rss = pss = 0
    inside = False
    with open(f"/proc/{pid}/smaps") as fh:
        for line in fh:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                inside = len(fields) >= 6 and fields[5] == str(path)
                if inside:
                    inodes.add(int(fields[4]))
            elif inside and fields[0] == "Rss:":
                rss += int(fields[1])
            elif inside and fields[0] == "Pss:":
                pss += int(fields[1])
    return inodes, rss, pss


def sample() -> list[str]:
    return [*POSITIVE[::37], *NEGATIVE[::9], PINNED, "+15195550000"]


async def test_every_process_maps_one_file_and_answers_as_the_database(
    daemon: Daemon, db: str, home: Path
) -> None:
    path = held_path(home)
    inode = path.stat().st_ino
    processes = [daemon.proc.pid, *daemon.workers()]
    assert len(processes) == 3
    seen = {pid: mappings(pid, path) for pid in processes}
    assert all(found[0] == {inode} for found in seen.values()), seen
    rss = max(found[1] for found in seen.values())
    assert rss > 0
    # the pages are shared: three processes' Pss add up to one copy (page rounding aside)
    assert sum(found[2] for found in seen.values()) <= rss + 4 * len(processes), seen
    await assert_equal_to_database(daemon, db, sample())
    count = len(POSITIVE) + len(NEGATIVE) + 2
    eventually(
        lambda: value(daemon.scrape(), "cnamd_cache_entries", scope="upstream") == count,
        10,
        "every held answer counted",
    )
    if time.time() < SOON_AT[0] - 2:  # served from the file until it lapses (a slow start
        assert answers(daemon, SOON) == {(200, "Soon Gone", "opencnam")}  # may come after)
    # no process read them one by one: each mapped the file
    assert "upstream answers read whole from PostgreSQL" not in daemon.output


def cli(db: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNAMD_")}
    done = subprocess.run(
        [*CLI, "upstream", *args, "--database-url", db],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_a_purge_a_pin_and_a_new_answer_after_the_build_reach_every_worker(
    daemon: Daemon, db: str
) -> None:
    cli(db, "purge", POSITIVE[1])
    cli(db, "pin", NEGATIVE[1], "--name", "Pinned Now")
    conn = await asyncpg.connect(db)
    try:
        await conn.execute(
            "INSERT INTO upstream_answers (number, name, source, expires_at)"
            " VALUES ('+15205550001', 'Paid Elsewhere', 'opencnam', now() + interval '1 hour')"
        )
    finally:
        await conn.close()
    for number, want in (
        (POSITIVE[1], {(404, None, None)}),
        (NEGATIVE[1], {(200, "Pinned Now", "operator")}),
        ("+15205550001", {(200, "Paid Elsewhere", "opencnam")}),
    ):
        eventually(lambda n=number, w=want: answers(daemon, n) == w, 10, f"{number} everywhere")


async def test_a_replaced_worker_maps_the_file_and_answers_the_same(
    daemon: Daemon, db: str, home: Path
) -> None:
    first = daemon.workers()
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    now = daemon.replaced(victim, 2)
    daemon.wait_ready(30)
    (replacement,) = now - first
    eventually(
        lambda: mappings(replacement, held_path(home))[0] == {held_path(home).stat().st_ino},
        20,
        "the new worker maps the host's file",
    )
    await assert_equal_to_database(
        daemon, db, [*sample(), POSITIVE[1], NEGATIVE[1], "+15205550001"]
    )
    assert "upstream answers read whole from PostgreSQL" not in daemon.output


async def test_answers_piling_up_since_the_build_make_a_new_file(
    daemon: Daemon, db: str, home: Path
) -> None:
    before = held_path(home).stat().st_ino
    fresh = [f"+1521555{i:04d}" for i in range(COMPACT + 20)]
    conn = await asyncpg.connect(db)
    try:
        for at in range(0, len(fresh), 40):  # transactions below the threshold: applied live
            await conn.execute(
                "INSERT INTO upstream_answers (number, name, source, expires_at)"
                " SELECT n, 'Piled ' || right(n, 4), 'opencnam', now() + interval '1 hour'"
                " FROM unnest($1::text[]) n",
                fresh[at : at + 40],
            )
    finally:
        await conn.close()
    eventually(lambda: held_path(home).stat().st_ino != before, 30, "a new held-answers file")
    inode = held_path(home).stat().st_ino
    eventually(
        lambda: all(mappings(pid, held_path(home))[0] == {inode} for pid in daemon.workers()),
        30,
        "every worker maps the new file",
    )
    await assert_equal_to_database(daemon, db, [*fresh[::17], POSITIVE[1], NEGATIVE[1]])


def test_a_mapped_answer_expires_on_time(daemon: Daemon, db: str) -> None:
    eventually(
        lambda: answers(daemon, SOON) == {(404, None, None)},
        SOON_SECONDS + 10,
        "the mapped answer lapsed",
    )
    assert time.time() >= SOON_AT[0] - 0.5  # not before its time (clocks of one host)


async def test_a_restart_answers_as_the_database(daemon: Daemon, db: str, home: Path) -> None:
    daemon.stop()
    again = start(home, db)
    try:
        await assert_equal_to_database(
            again, db, [*sample(), POSITIVE[1], NEGATIVE[1], "+15205550001"]
        )
        inode = held_path(home).stat().st_ino
        for pid in again.workers():
            assert mappings(pid, held_path(home))[0] == {inode}
        assert "upstream answers read whole from PostgreSQL" not in again.output
    finally:
        again.stop()


async def test_a_refused_file_is_written_again_and_mapped_by_every_process(
    daemon: Daemon, db: str, home: Path
) -> None:
    """A held-answers file this build refuses (an older format after an upgrade; here a
    damaged byte): the daemon serves the answers read from PostgreSQL, then the loader's
    one full load writes a new file, and every process maps it instead of its own copy."""
    daemon.stop()
    path = held_path(home)
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    before = path.stat().st_ino
    again = start(home, db)
    try:
        assert "held upstream answers refused" in again.output
        await assert_equal_to_database(again, db, [*sample(), POSITIVE[1], NEGATIVE[1]])
        eventually(lambda: path.stat().st_ino != before, 30, "a new held-answers file")
        inode = path.stat().st_ino
        eventually(
            lambda: all(
                mappings(pid, path)[0] == {inode} for pid in (again.proc.pid, *again.workers())
            ),
            30,
            "every process maps the new file",
        )
        await assert_equal_to_database(again, db, [*sample(), POSITIVE[1], NEGATIVE[1]])
    finally:
        again.stop()
