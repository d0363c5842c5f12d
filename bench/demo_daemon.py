"""A ``cnamd serve --demo`` for a benchmark: fresh loopback ports, its own embedded
PostgreSQL under ``where``, its log in ``where/daemon.log``, ready before it is used,
stopped with SIGTERM after. The daemon's code is whatever ``cnamd`` imports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CLI = [sys.executable, "-m", "cnamd.cli"]


def free_port() -> int:
    with socket.socket() as tcp:
        tcp.bind(("127.0.0.1", 0))
        port: int = tcp.getsockname()[1]
    return port


def environment() -> dict[str, str]:
    """This process's environment without settings (CNAMD_*) that would change the daemon."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CNAMD_")}


@dataclass(frozen=True)
class Demo:
    proc: subprocess.Popen[bytes]
    base: str  # http://127.0.0.1:PORT
    http: int
    sip: int
    data: Path  # the embedded PostgreSQL's directory (its socket's too)
    log: Path


def wait_ready(
    base: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 120
) -> None:
    """Until ``base``'s /readyz answers 200; exits the bench if ``proc`` ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit("the daemon exited; see its log")
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the daemon was not ready in time")


@contextmanager
def demo(where: Path, workers: int, *extra: str) -> Iterator[Demo]:
    """The daemon with ``workers`` workers and ``extra`` flags, ready; stopped after."""
    http, sip = free_port(), free_port()
    data = where / "pgdata"
    log_path = where / "daemon.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                *CLI,
                *("serve", "--demo", "--workers", str(workers), "--snapshot", ""),
                *("--http-listen", f"127.0.0.1:{http}", "--sip-listen", f"127.0.0.1:{sip}"),
                *("--embedded-dir", str(data), *extra),
            ],
            cwd=where,
            env=environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{http}"
            wait_ready(base, proc)
            yield Demo(proc, base, http, sip, data, log_path)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
