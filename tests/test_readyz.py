"""/readyz follows the database and the snapshot as ``cache.stale_ready_status`` says,
with the reasons in its body; /healthz stays 200 throughout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ops_daemon import Daemon, DatabaseProxy, eventually, http_get, value


@pytest.fixture
def proxy(db_url: str) -> Iterator[DatabaseProxy]:
    found = DatabaseProxy(db_url)
    try:
        yield found
    finally:
        found.close()


def reasons(daemon: Daemon) -> tuple[int, list[str]]:
    status, body = daemon.readyz()
    found = body["reasons"]
    assert isinstance(found, list)
    return status, [str(r) for r in found]


@pytest.mark.timeout(90)
def test_readyz_flips_on_database_loss_and_back(tmp_path: Path, proxy: DatabaseProxy) -> None:
    daemon = Daemon(
        tmp_path, database_url=proxy.url(), args=("--set", "cache.stale_ready_status=503")
    )
    try:
        assert daemon.wait_ready()["database"] == "up"
        proxy.cut()
        eventually(lambda: daemon.readyz()[0] == 503, 15, "not ready without the database")
        status, why = reasons(daemon)
        assert why == ["database unreachable; serving the cache as last loaded"]
        assert daemon.readyz()[1]["database"] == "down"
        assert value(daemon.scrape(), "cnamd_db_up") == 0
        assert http_get(daemon.base + "/healthz")[0] == 200
        # the cache still answers lookups meanwhile
        status, _ = http_get(daemon.base + "/v1/lookup/+492216698712?tenant=demo")
        assert status == 200

        proxy.restore()
        eventually(lambda: daemon.readyz()[0] == 200, 20, "ready again with the database")
        assert reasons(daemon) == (200, [])
        assert value(daemon.scrape(), "cnamd_db_up") == 1
    finally:
        daemon.stop()


@pytest.mark.timeout(120)
def test_readyz_on_a_snapshot_follows_the_setting(tmp_path: Path, proxy: DatabaseProxy) -> None:
    snapshot = tmp_path / "cache.snapshot"
    first = Daemon(tmp_path / "a", database_url=proxy.url(), snapshot=snapshot)
    try:
        first.wait_ready()
    finally:
        first.stop()
    assert snapshot.exists()

    # the database is away at start-up: the daemon serves the snapshot, and says so
    proxy.cut()
    daemon = Daemon(tmp_path / "b", database_url=proxy.url(), snapshot=snapshot, config="")
    try:
        ready = daemon.wait_ready()  # default cache.stale_ready_status = 200
        assert ready["stale"] is True
        assert "serving a snapshot the database has not confirmed" in ready["reasons"]  # type: ignore[operator]
        assert value(daemon.scrape(), "cnamd_cache_stale") == 1
        assert value(daemon.scrape(), "cnamd_cache_last_full_load_timestamp_seconds") > 1.7e9

        daemon.config.write_text("[cache]\nstale_ready_status = 503\n")
        daemon.sighup()
        eventually(lambda: daemon.readyz()[0] == 503, 5, "stale is not ready by the setting")

        proxy.restore()  # the feed catches up, the digest confirms the snapshot
        eventually(lambda: daemon.readyz()[0] == 200, 20, "ready once confirmed")
        assert daemon.readyz()[1]["stale"] is False
        assert value(daemon.scrape(), "cnamd_cache_stale") == 0
    finally:
        daemon.stop()


@pytest.mark.timeout(120)
def test_workers_serve_the_snapshot_while_the_database_is_down(
    tmp_path: Path, proxy: DatabaseProxy
) -> None:
    snapshot = tmp_path / "cache.snapshot"
    first = Daemon(tmp_path / "a", database_url=proxy.url(), snapshot=snapshot, workers=2)
    try:
        first.wait_ready()
    finally:
        first.stop()

    # two workers behind a supervisor, the database away: each worker serves the
    # snapshot once its bounded wait is over, and the supervisor counts it as serving
    proxy.cut()
    daemon = Daemon(tmp_path / "b", database_url=proxy.url(), snapshot=snapshot, workers=2)
    try:
        ready = daemon.wait_ready(45)  # cache.stale_ready_status = 200
        assert ready["stale"] is True and ready["database"] == "down"
        workers = ready["workers"]
        assert isinstance(workers, list) and len(workers) == 2
        assert all(w["change_id"] is not None for w in workers)
        status, _ = http_get(daemon.base + "/v1/lookup/+492216698712?tenant=demo")
        assert status == 200

        proxy.restore()
        eventually(lambda: daemon.readyz()[1]["stale"] is False, 30, "confirmed by the database")
    finally:
        daemon.stop()
