"""SIGHUP: a new configuration reaches the next request, in one process and in every
worker; what cannot change live is kept and named; a broken file changes nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sip_peer import parse_reply

from cnamd.reload import LIVE, changed, plan_reload
from cnamd.settings import SECTIONS, load
from ops_daemon import Daemon, eventually, invite, sip_exchange, value

OPEN = '[sip]\nallow = ["127.0.0.0/8"]\n'
CLOSED = '[sip]\nallow = ["10.0.0.0/8"]\n'
BROKEN = '[sip]\nallow = ["10.0.0.0/8"\n'  # not TOML: the bracket never closes


def settings(text: str, tmp_path: Path) -> object:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load(path, environ={})


def test_live_changes_are_taken_and_the_others_wait_for_a_restart(tmp_path: Path) -> None:
    old = load(None, environ={})
    new = load(
        None,
        environ={},
        overrides=["sip.allow=10.0.0.0/8", "log.level=debug", "sip.listen=127.0.0.1:5070"],
    )
    plan = plan_reload(old, new)
    assert plan.applied == ("sip.allow", "log.level")
    assert plan.needs_restart == ("sip.listen",)
    assert plan.settings.sip.allow == ("10.0.0.0/8",)
    assert plan.settings.log.level == "debug"
    assert plan.settings.sip.listen == old.sip.listen  # the bound socket stays
    assert changed(plan.settings, new) == ["sip.listen"]


def test_an_unchanged_configuration_applies_nothing() -> None:
    same = load(None, environ={})
    plan = plan_reload(same, load(None, environ={}))
    assert (plan.applied, plan.needs_restart, plan.settings) == ((), (), same)


def test_every_live_setting_exists() -> None:
    known = {f"{s}.{f}" for s, cls in SECTIONS.items() for f in cls.__dataclass_fields__}
    assert known >= LIVE


def dip_status(daemon: Daemon, branch: str) -> int:
    data = invite(daemon.sip_port, "+15555550100", branch=branch)
    return parse_reply(sip_exchange(daemon.sip_port, data)).status


@pytest.mark.timeout(90)
def test_sighup_applies_a_new_acl_to_the_next_request_and_refuses_a_broken_file(
    tmp_path: Path, db_url: str
) -> None:
    # no demo data: the demo tenant's own SIP networks would admit loopback whatever sip.allow says
    daemon = Daemon(tmp_path, database_url=db_url, demo=False, config=OPEN)
    try:
        daemon.wait_ready()
        assert dip_status(daemon, "z9hG4bK-r0") == 404  # admitted by sip.allow; no such name

        # dips keep being answered while the settings change under them
        answers: list[int] = []
        stop = threading.Event()

        def keep_dipping() -> None:
            i = 0
            while not stop.is_set() and i < 2000:
                answers.append(dip_status(daemon, f"z9hG4bK-k{i}"))
                i += 1

        dipper = threading.Thread(target=keep_dipping)
        dipper.start()
        try:
            eventually(lambda: len(answers) >= 3, 10, "dips before the reload")
            daemon.config.write_text(CLOSED)
            daemon.sighup()
            daemon.wait_lines("settings reloaded")
            eventually(lambda: answers[-1:] == [403], 5, "a denied dip after the reload")
        finally:
            stop.set()
            dipper.join(timeout=10)
        assert set(answers) <= {403, 404} and answers[0] == 404, set(answers)
        assert dip_status(daemon, "z9hG4bK-r1") == 403
        assert "applied=sip.allow" in daemon.wait_lines("settings reloaded")[-1]

        daemon.config.write_text(BROKEN)
        daemon.sighup()
        refused = daemon.wait_lines("reload refused")
        assert "not valid TOML" in refused[-1] and "field=--config" in refused[-1]
        assert dip_status(daemon, "z9hG4bK-r2") == 403  # still serving, with the old settings
        assert value(daemon.scrape(), "cnamd_config_last_reload_successful") == 0

        daemon.config.write_text(OPEN + "\n[database]\npool_max = 5\n")
        daemon.sighup()
        needs = daemon.wait_lines("need a restart")
        assert "settings=database.pool_max" in needs[-1]
        assert dip_status(daemon, "z9hG4bK-r3") == 404
        assert value(daemon.scrape(), "cnamd_config_last_reload_successful") == 1
    finally:
        out = daemon.stop()
    assert daemon.proc.returncode == 0, out
    assert "Traceback" not in out


@pytest.mark.timeout(90)
def test_sighup_reaches_every_worker_through_the_supervisor(tmp_path: Path, db_url: str) -> None:
    daemon = Daemon(tmp_path, database_url=db_url, demo=False, config=OPEN, workers=2)
    try:
        daemon.wait_ready()
        eventually(lambda: len(daemon.workers()) == 2, 20, "two workers")
        daemon.wait_lines("cnamd ready", count=2, timeout=20)
        daemon.config.write_text(CLOSED)
        daemon.sighup()
        applied = daemon.wait_lines("settings applied", count=2)
        assert {line.split("worker=")[1].split()[0] for line in applied} == {"0", "1"}
        assert daemon.wait_lines("settings reloaded")[-1].endswith("workers=2")
        # whichever worker reads it, every dip now meets the new ACL
        assert {dip_status(daemon, f"z9hG4bK-w{i}") for i in range(20)} == {403}

        daemon.config.write_text(BROKEN)
        daemon.sighup()
        daemon.wait_lines("reload refused")
        assert {dip_status(daemon, f"z9hG4bK-b{i}") for i in range(10)} == {403}
        eventually(
            lambda: value(daemon.scrape(), "cnamd_config_last_reload_successful") == 0,
            5,
            "the refusal in the metrics",
        )
        assert len(daemon.workers()) == 2
    finally:
        out = daemon.stop()
    assert daemon.proc.returncode == 0, out
    assert "Traceback" not in out
