"""The real daemon as a user starts it: a subprocess, its ports, its signals, its exit codes."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
from sip_peer import display_name, parse_reply, request

from cnamd import fd_table
from cnamd.settings import load
from pristine_pgdata import seed

CLI = [sys.executable, "-m", "cnamd.cli"]


def _port_range() -> tuple[int, int]:
    """20000-32000, or this pytest-xdist worker's own slice of it.

    Two workers could otherwise both find one port free and hand it to two
    daemons before either binds it.
    """
    low, high = 20000, 32000
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1 ... under pytest -n
    if not worker:
        return low, high
    width = (high - low) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    start = low + int(worker.removeprefix("gw")) * width
    return start, start + width - 1


def free_port() -> int:
    """A loopback port free for both TCP and UDP now, below Linux's ephemeral range.

    The kernel's own pick (port 0) comes from the ephemeral range (32768+),
    where any test's outgoing connection may take the port before the daemon
    binds it ("Address already in use"); below it only listeners compete.
    """
    low, high = _port_range()
    for _ in range(1000):
        port = random.randint(low, high)
        try:
            with socket.socket() as tcp, socket.socket(type=socket.SOCK_DGRAM) as udp:
                tcp.bind(("127.0.0.1", port))
                udp.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free loopback port in 20000-32000")


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def env_without_cnamd() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CNAMD_")}


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or env_without_cnamd(),
        cwd=cwd,
        check=False,
    )


def postgres_processes(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] == "postgres" and str(data_dir) in cmdline:
            found.append(proc)
    return found


class Daemon:
    """A ``cnamd serve --demo`` subprocess on free loopback ports."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.http_port, self.sip_port = free_port(), free_port()
        self.data_dir = tmp_path / "var" / "pgdata"
        seed(self.data_dir)
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.proc = subprocess.Popen(
            [
                *CLI,
                "serve",
                "--demo",
                "--http-listen",
                f"127.0.0.1:{self.http_port}",
                "--sip-listen",
                f"127.0.0.1:{self.sip_port}",
                "--embedded-dir",
                str(self.data_dir),
                "--snapshot",
                str(tmp_path / "var" / "cache.snapshot"),
                *extra,
            ],
            cwd=tmp_path,
            env=env_without_cnamd(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)
        for pg in postgres_processes(self.data_dir):
            pg.kill()


def partner_key(daemon: Daemon, enterprise: str = "demo") -> str:
    """A partner key for ``enterprise``, made by ``cnamd apikey create`` beside the running
    daemon on its embedded database; the token line it prints."""
    made = run_cli(
        "apikey",
        "create",
        "--role",
        "partner",
        "--enterprise",
        enterprise,
        "--embedded-dir",
        str(daemon.data_dir),
    )
    assert made.returncode == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]


def wait_ready(base: str, proc: subprocess.Popen[str], timeout: float = 20) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "daemon exited"
        try:
            status, body = http_get(base + "/readyz")
        except OSError:
            status, body = 0, b""
        if status == 200:
            doc: dict[str, object] = json.loads(body)
            return doc
        time.sleep(0.1)
    raise AssertionError("daemon not ready in time")


def test_serve_demo_becomes_ready_and_stops_cleanly_on_sigterm(
    daemon: Daemon,
) -> None:
    proc, base, data_dir = daemon.proc, daemon.base, daemon.data_dir
    ready = wait_ready(base, proc)
    assert ready["loaded"] is True and ready["database"] == "up"
    status, body = http_get(base + "/v1/lookup/+492216698712?tenant=demo")
    assert status == 200 and json.loads(body)["name"] == "John Doe"
    assert postgres_processes(data_dir), "the embedded PostgreSQL should be running"
    status, body = http_get(base + "/metrics")
    assert status == 200
    assert b'cnamd_db_pool_connections{state="idle"} 1.0' in body  # database.pool_min
    assert b'cnamd_lookups_total{front="http",result="hit",scope="enterprise"} 1.0' in body
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=5)
    assert proc.returncode == 0, out
    assert time.monotonic() - started < 5
    assert "Traceback" not in out
    assert postgres_processes(data_dir) == []
    # start-up's heap frozen before serving, out of every full collection (collector.py)
    ready_line = next(line for line in out.splitlines() if "cnamd ready" in line)
    assert int(re.search(r"frozen=(\d+)", ready_line).group(1)) > 20_000, ready_line


def test_readyz_is_503_until_the_first_load(
    daemon: Daemon,
) -> None:
    proc, base, _ = daemon.proc, daemon.base, daemon.data_dir
    wait_ready(base, proc)
    # a second daemon on an unreachable database, told to wait for it, is alive but not ready
    port = free_port()
    waiting = subprocess.Popen(
        [
            *CLI,
            "serve",
            "--http-listen",
            f"127.0.0.1:{port}",
            "--sip-listen",
            f"127.0.0.1:{free_port()}",
            "--database-url",
            "postgresql://x@127.0.0.1:1/none",
            "--snapshot",
            "",
            "--set",
            "database.on_unreachable=retry",
        ],
        env=env_without_cnamd(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        status = 0
        while time.monotonic() < deadline:
            try:
                status, body = http_get(f"http://127.0.0.1:{port}/readyz")
                break
            except OSError:
                time.sleep(0.1)
        assert status == 503
        assert "first cache load not done" in json.loads(body)["reasons"]
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    finally:
        waiting.send_signal(signal.SIGTERM)
        out, _ = waiting.communicate(timeout=10)
    assert waiting.returncode == 0, out
    assert "database unreachable, retrying" in out or "retrying" in out


def test_bad_config_file_exits_2_naming_the_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[http]\nlisten = 8080\n")
    result = run_cli("serve", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "http.listen" in result.stderr and "8080" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_env_value_exits_2_naming_the_variable() -> None:
    env = env_without_cnamd() | {"CNAMD_SIP_RATE": "lots"}
    result = run_cli("serve", env=env)
    assert result.returncode == 2
    assert "sip.rate" in result.stderr and "'lots'" in result.stderr


def test_unknown_setting_exits_2() -> None:
    result = run_cli("serve", "--set", "http.colour=blue")
    assert result.returncode == 2
    assert "http.colour" in result.stderr and "unknown setting" in result.stderr


def test_unreachable_database_exits_2_naming_the_cause(tmp_path: Path) -> None:
    result = run_cli(
        "serve",
        "--database-url",
        "postgresql://x@127.0.0.1:1/none",
        "--snapshot",
        "",
        "--http-listen",
        f"127.0.0.1:{free_port()}",
        "--sip-listen",
        f"127.0.0.1:{free_port()}",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "database.url" in result.stderr and "cannot connect" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_applies_and_check_reports(tmp_path: Path) -> None:
    data = str(tmp_path / "pg")
    assert run_cli("migrate", "--check", "--embedded-dir", data).returncode == 1
    result = run_cli("migrate", "--embedded-dir", data)
    assert result.returncode == 0, result.stderr
    check = run_cli("migrate", "--check", "--embedded-dir", data)
    assert (check.returncode, check.stdout.strip()) == (0, "pending: none")
    assert postgres_processes(tmp_path / "pg") == []


def test_version_and_help() -> None:
    assert run_cli("version").stdout.startswith("cnamd ")
    help_text = run_cli("serve", "--help").stdout
    for flag in ("--config", "--demo", "--http-listen", "--sip-listen", "--set"):
        assert flag in help_text


def sip_dip(port: int, calling: str, *, tcp: bool = False, branch: str = "z9hG4bK-d1") -> bytes:
    """One INVITE dip from a fresh loopback socket; the raw answer."""
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.settimeout(3)
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()[1]
        transport = "TCP" if tcp else "UDP"
        data = request(
            "INVITE",
            f"sip:+492216698700@127.0.0.1:{port}",
            via=f"SIP/2.0/{transport} 127.0.0.1:{local};branch={branch};rport",
            from_=f"<sip:{calling}@127.0.0.1>;tag=t1",
            to="<sip:+492216698700@127.0.0.1>",
            call_id=f"{branch}@127.0.0.1",
        )
        if tcp:
            sock.connect(("127.0.0.1", port))
            sock.sendall(data)
        else:
            sock.sendto(data, ("127.0.0.1", port))
        answer: bytes = sock.recv(65535)
        return answer


def test_sip_dip_over_udp_and_tcp_gets_302_with_the_name(daemon: Daemon, tmp_path: Path) -> None:
    proc, base, _ = daemon.proc, daemon.base, daemon.data_dir
    wait_ready(base, proc)
    port = daemon.sip_port
    for tcp in (False, True):
        reply = parse_reply(sip_dip(port, "+492216698712", tcp=tcp))
        assert reply.status == 302
        assert display_name(reply.one("Contact")) == "John Doe"
    miss = parse_reply(sip_dip(port, "+15555550100", branch="z9hG4bK-miss"))
    assert miss.status == 404


def worker_pids(proc: subprocess.Popen[str]) -> set[int]:
    """Live worker processes of the supervisor (a killed one is a zombie until reaped)."""
    found = set()
    for child in psutil.Process(proc.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "worker" in child.cmdline():
                found.add(child.pid)
        except psutil.Error:
            continue
    return found


def fd_table_size(pid: int) -> int:
    """The process's descriptor table (Linux's ``FDSize``): slots, open or not."""
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line[:7] == "FDSize:")


def grown_to(pid: int) -> int:
    """What fd_table grows a worker of default settings to under its own soft limit."""
    soft = psutil.Process(pid).rlimit(psutil.RLIMIT_NOFILE)[0]
    return min(fd_table.capacity(load(environ={})), soft)


def replaced_workers(
    proc: subprocess.Popen[str], victim: int, count: int, timeout: float
) -> set[int]:
    """The workers once ``victim`` is gone and ``count`` run, read in one look: two looks
    can see the victim alive in one and its replacement not yet started in the other."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = worker_pids(proc)
        if len(now) == count and victim not in now:
            return now
        time.sleep(0.1)
    raise AssertionError(f"worker {victim} was not replaced within {timeout} s")


def udp_sockets(pid: int, port: int) -> set[int]:
    """Inodes of the UDP sockets on ``port`` that process ``pid`` holds open."""
    on_port = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                on_port.add(int(fields[9]))
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                held.add(int(target[8:-1]))
    return held & on_port


def test_workers_serve_inherited_sockets_and_a_crashed_worker_is_restarted(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, "--workers", "2")
    try:
        wait_ready(daemon.base, daemon.proc)
        deadline = time.monotonic() + 20
        while len(worker_pids(daemon.proc)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        first = worker_pids(daemon.proc)
        assert len(first) == 2
        # sip.udp_steering=random: each worker reads its own UDP socket of the SIP port
        sockets = {pid: udp_sockets(pid, daemon.sip_port) for pid in first}
        assert all(len(fds) == 1 for fds in sockets.values()), sockets
        assert len({inode for fds in sockets.values() for inode in fds}) == 2
        # grown before serving for every connection a worker may hold (fd_table.py)
        assert all(fd_table_size(pid) >= grown_to(pid) for pid in first)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        now = replaced_workers(daemon.proc, victim, 2, 20)
        wait_ready(daemon.base, daemon.proc)
        (replacement,) = now - first
        assert udp_sockets(replacement, daemon.sip_port) == sockets[victim]  # inherited again
        assert fd_table_size(replacement) >= grown_to(replacement)
        for i in range(10):  # every answer comes from some live worker
            reply = parse_reply(sip_dip(daemon.sip_port, "+492216698712", branch=f"z9hG4bK-w{i}"))
            assert reply.status == 302
        daemon.proc.send_signal(signal.SIGTERM)
        out, _ = daemon.proc.communicate(timeout=10)
        assert daemon.proc.returncode == 0, out
        assert not any(psutil.pid_exists(pid) for pid in now)
        assert postgres_processes(daemon.data_dir) == []
    finally:
        daemon.stop()
