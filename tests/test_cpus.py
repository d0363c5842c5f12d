"""``server.cpus``: the serving workers on the CPUs it names; the bulk workers, the loader
and the embedded PostgreSQL on the others (cpus.py)."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from pathlib import Path

import psutil
import pytest

from cnamd import cpus
from cnamd.errors import ConfigError
from cnamd.replica.loader import SPEC_ENV
from cnamd.settings import NOT_SETTINGS_ENV, load, parse_cpus
from cnamd.supervisor import WORKER_ENV
from test_daemon import Daemon, partner_key, run_cli, wait_ready, worker_pids


def test_cpu_lists_are_read_as_taskset_and_systemd_write_them() -> None:
    assert parse_cpus("0") == {0}
    assert parse_cpus("0-2,5, 7") == {0, 1, 2, 5, 7}
    for bad in ("", "x", "1-", "-1", "3-1", "0,,1", "0-99999"):
        with pytest.raises(ValueError):
            parse_cpus(bad)
    assert load(environ={}, overrides=["server.cpus=0-1"]).server.cpus == "0-1"
    with pytest.raises(ConfigError, match=r"server\.cpus"):
        load(environ={}, overrides=["server.cpus=first"])


def test_what_the_daemon_hands_its_processes_is_not_read_as_a_setting() -> None:
    """A SIGHUP re-reads the environment, where the split (and a worker's or the
    loader's spec) is: refused as an unknown setting, it refused every reload."""
    plumbing = {cpus.SPLIT_ENV, WORKER_ENV, SPEC_ENV}
    assert plumbing <= NOT_SETTINGS_ENV
    environ = {name: "0/1" for name in plumbing} | {"CNAMD_SERVER_CPUS": "0"}
    assert load(environ=environ).server.cpus == "0"


def test_a_cpu_this_host_does_not_give_the_daemon_stops_it_naming_the_setting(
    tmp_path: Path,
) -> None:
    missing = max(os.sched_getaffinity(0)) + 1
    ran = run_cli(
        "serve",
        *("--set", f"server.cpus={missing}", "--embedded-dir", str(tmp_path / "pgdata")),
        *("--http-listen", "127.0.0.1:0", "--sip-listen", "127.0.0.1:0"),
    )
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert f"server.cpus names CPUs this process may not run on: {missing}" in ran.stderr
    assert not (tmp_path / "pgdata").exists()  # it stopped before starting anything


def test_background_work_leaves_serving_a_cpu_or_takes_the_cpus_set_aside(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """How many bulk workers a daemon starts (http/cnam_csv.py: at most two of these)."""
    monkeypatch.delenv(cpus.SPLIT_ENV, raising=False)
    monkeypatch.setattr(cpus, "usable", lambda: 2)
    assert cpus.for_background() == 1
    monkeypatch.setattr(cpus, "usable", lambda: 1)
    assert cpus.for_background() == 1  # one CPU: still a worker, at NICE
    monkeypatch.setattr(cpus, "usable", lambda: 8)
    assert cpus.for_background() == 7
    monkeypatch.setenv(cpus.SPLIT_ENV, "0/1-3")
    assert cpus.for_background() == 3
    assert cpus.usable() == 8  # the serving process's own affinity is not what counts


def _affinity(process: psutil.Process) -> set[int]:
    return set(process.cpu_affinity())


def _postgres(data_dir: Path) -> list[psutil.Process]:
    """The embedded PostgreSQL's postmaster and every process it has started."""
    postmaster = psutil.Process(int((data_dir / "postmaster.pid").read_text().split()[0]))
    assert str(data_dir) in " ".join(postmaster.cmdline())
    return [postmaster, *postmaster.children(recursive=True)]


def _bulk_workers(supervisor: int) -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process(supervisor).children(recursive=True)
        if "multiprocessing.spawn" in " ".join(child.cmdline())
        and "resource_tracker" not in " ".join(child.cmdline())
    ]


def test_the_serving_workers_keep_their_cpus_and_the_imports_work_runs_beside(
    tmp_path: Path,
) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    serving = {allowed[0]}
    aside = set(allowed) - serving
    daemon = Daemon(tmp_path, "--workers", "2", "--set", f"server.cpus={allowed[0]}")
    try:
        wait_ready(daemon.base, daemon.proc, timeout=60)
        workers = worker_pids(daemon.proc)
        assert len(workers) == 2
        # a SIGHUP re-reads the environment the split is in (answered by the end: see below)
        daemon.proc.send_signal(signal.SIGHUP)
        token = partner_key(daemon)  # a CLI connection: a backend forked after the split
        rows = "".join(f"+1212555{n:04d},Kept Apart {n}\n" for n in range(400))
        body = f"phone,name\n{rows}".encode()  # over 4 KiB: parsed by the bulk workers
        upload = urllib.request.Request(
            daemon.base + "/api/partner/enterprise/demo/cnam-import",
            data=body,
            method="POST",
            headers={"Content-Type": "text/csv", "Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(upload, timeout=30) as answer:
            assert json.loads(answer.read())["inserted"] == 400
        supervisor = psutil.Process(daemon.proc.pid)
        postgres = _postgres(daemon.data_dir)
        bulk = _bulk_workers(daemon.proc.pid)
        assert postgres and bulk  # what the split is about: PostgreSQL and the parsing
        if aside:
            assert all(_affinity(psutil.Process(pid)) == serving for pid in workers)
            assert {p.pid: _affinity(p) for p in postgres} == {p.pid: aside for p in postgres}
            assert {p.pid: _affinity(p) for p in bulk} == {p.pid: aside for p in bulk}
            assert _affinity(supervisor) == set(allowed)  # it only watches: left alone
        else:  # a one-CPU host: nothing to keep apart, nothing pinned
            every = [supervisor, *(psutil.Process(pid) for pid in workers), *postgres, *bulk]
            assert all(_affinity(p) == set(allowed) for p in every)
    finally:
        daemon.proc.terminate()
        out, _ = daemon.proc.communicate(timeout=30)
        daemon.stop()
    assert "reload refused" not in out, out
    assert "settings reloaded" in out, out
    if aside:
        assert f"serving={allowed[0]}" in out, out
    else:
        assert "server.cpus leaves no CPU for the rest; nothing is pinned" in out, out
