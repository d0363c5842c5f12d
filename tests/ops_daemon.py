"""A real ``cnamd serve`` for the operations tests: config file, log capture, scrapes.

Not a test module: the operations tests (metrics, readiness, reload, logs)
share it. Everything runs on loopback and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import psutil
from prometheus_client.parser import text_string_to_metric_families
from sip_peer import parse_reply, request

from pristine_pgdata import seed
from test_daemon import free_port, replaced_workers, worker_pids

CLI = [sys.executable, "-m", "cnamd.cli"]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def eventually(check: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


class Daemon:
    """``cnamd serve`` on free loopback ports; its stdout and stderr collected line by line."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        workers: int = 1,
        config: str | None = None,
        database_url: str | None = None,
        demo: bool = True,
        args: tuple[str, ...] = (),
        snapshot: Path | None = None,
    ) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.http_port, self.sip_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.config = tmp_path / "cnamd.toml"
        self.data_dir = tmp_path / "var" / "pgdata"
        cmd = [
            *CLI,
            "serve",
            "--http-listen",
            f"127.0.0.1:{self.http_port}",
            "--sip-listen",
            f"127.0.0.1:{self.sip_port}",
            "--snapshot",
            str(snapshot or tmp_path / "var" / "cache.snapshot"),
            "--workers",
            str(workers),
            "--set",
            "database.retry_max_seconds=1",
            *args,
        ]
        if database_url is None:
            seed(self.data_dir)
            cmd += ["--embedded-dir", str(self.data_dir)]
        else:
            cmd += ["--database-url", database_url]
        if demo:
            cmd.append("--demo")
        if config is not None:
            self.config.write_text(config)
            cmd += ["--config", str(self.config)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNAMD_")}
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            cmd,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = 30) -> dict[str, object]:
        found: dict[str, object] = {}

        def ready() -> bool:
            assert self.proc.poll() is None, "daemon exited:\n" + self.output
            try:
                status, body = http_get(self.base + "/readyz")
            except OSError:
                return False
            if status == 200:
                found.update(json.loads(body))
            return status == 200

        eventually(ready, timeout, "daemon ready")
        return found

    def readyz(self) -> tuple[int, dict[str, object]]:
        status, body = http_get(self.base + "/readyz")
        return status, json.loads(body)

    def wait_lines(self, text: str, count: int = 1, timeout: float = 10) -> list[str]:
        """Wait until ``count`` log lines contain ``text``; return them."""

        def matching() -> list[str]:
            return [line for line in list(self.lines) if text in line]

        eventually(lambda: len(matching()) >= count, timeout, f"{count} log lines with {text!r}")
        return matching()

    def scrape(self) -> Samples:
        status, body = http_get(self.base + "/metrics")
        assert status == 200
        return parse_metrics(body.decode())

    def sighup(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def workers(self) -> set[int]:
        return worker_pids(self.proc)

    def replaced(self, victim: int, count: int, timeout: float = 30) -> set[int]:
        """``replaced_workers`` of this daemon."""
        return replaced_workers(self.proc, victim, count, timeout)

    def stop(self) -> str:
        """SIGTERM, then kill if need be; the whole output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        for proc in psutil.process_iter(["name", "cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if proc.info["name"] == "postgres" and str(self.data_dir) in cmdline:
                proc.kill()
        return self.output


@contextlib.contextmanager
def serving(tmp_path: Path, *, workers: int, args: tuple[str, ...] = ()) -> Iterator[Daemon]:
    """A demo daemon with all its ``workers`` up (bounded), stopped at the end."""
    started = Daemon(tmp_path, workers=workers, args=args)
    try:
        started.wait_ready(60)
        eventually(lambda: len(started.workers()) == workers, 30, f"{workers} workers")
        yield started
    finally:
        started.stop()


def parse_metrics(text: str) -> Samples:
    """Every sample of an exposition, parsed by prometheus_client's own parser."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def families(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def sip_exchange(port: int, data: bytes, *, tcp: bool = False, expect_answer: bool = True) -> bytes:
    """Send one SIP message from a fresh loopback socket; the raw answer (b"" if none)."""
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.settimeout(3 if expect_answer else 0.3)
        if tcp:
            sock.connect(("127.0.0.1", port))
            sock.sendall(data)
        else:
            sock.sendto(data, ("127.0.0.1", port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            if expect_answer:
                raise
            return b""


def invite(
    port: int, calling: str, *, branch: str, tcp: bool = False, extra: tuple[str, ...] = ()
) -> bytes:
    """An INVITE dip as an SBC sends it (the Via names the transport)."""
    transport = "TCP" if tcp else "UDP"
    return request(
        "INVITE",
        f"sip:+492216698700@127.0.0.1:{port}",
        via=f"SIP/2.0/{transport} 127.0.0.1:5999;branch={branch};rport",
        from_=f"<sip:{calling}@127.0.0.1>;tag=t1",
        to="<sip:+492216698700@127.0.0.1>",
        call_id=f"{branch}@127.0.0.1",
        extra=extra,
    )


class DatabaseProxy:
    """Loopback TCP in front of the test PostgreSQL's Unix socket, to take the database
    away from a daemon (``cut``) and give it back (``restore``) without touching it."""

    def __init__(self, db_url: str) -> None:
        host = parse_qs(urlsplit(db_url).query)["host"][0]
        (self.socket_path,) = [
            p for p in glob.glob(os.path.join(host, ".s.PGSQL.*")) if not p.endswith(".lock")
        ]
        self.database = urlsplit(db_url).path.lstrip("/")
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.up = True
        self._closed = False
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, user: str = "postgres", password: str = "") -> str:
        auth = f"{user}:{password}@" if password else f"{user}@"
        return f"postgresql://{auth}127.0.0.1:{self.port}/{self.database}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.socket_path)
            except OSError:
                client.close()
                upstream.close()
                continue
            with self._lock:  # cut() may have run meanwhile: it must see this pair
                if not self.up:
                    client.close()
                    upstream.close()
                    continue
                self._open += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every connection and refuse new ones, as a dead database host would."""
        with self._lock:
            self.up = False
            conns, self._open = self._open, []
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.listener.close()
        self._thread.join(timeout=2)


LOOKUP = "/v1/lookup/+492216698712?tenant=demo"


class ServingClients:
    """The legitimate side of a fault test, on a loop of its own thread: 6 keep-alive
    HTTP clients, a lookup each every 20 ms, and UDP dips every 4 ms, until ``stop``.
    ``statuses`` counts the lookups' statuses (or their exceptions' names)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.statuses: Counter[object] = Counter()
        self.sent: set[str] = set()
        self.answered: Counter[int] = Counter()
        self.answered_branches: set[str] = set()
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def start(self) -> None:
        self._thread.start()
        assert self.ready.wait(30), "the legitimate clients did not connect"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        clients = self

        class Replies(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                reply = parse_reply(data)
                clients.answered[reply.status] += 1
                clients.answered_branches.add(reply.one("Call-ID").split("@")[0])

        transport, _ = await loop.create_datagram_endpoint(
            Replies, remote_addr=("127.0.0.1", self.daemon.sip_port)
        )
        connector = aiohttp.TCPConnector(limit=6, keepalive_timeout=30)
        async with aiohttp.ClientSession(self.daemon.base, connector=connector) as session:

            async def lookups() -> None:
                while not self._stop.is_set():
                    try:
                        async with session.get(LOOKUP) as answer:
                            await answer.read()
                            self.statuses[answer.status] += 1
                    except (aiohttp.ClientError, OSError) as exc:
                        self.statuses[type(exc).__name__] += 1
                    await asyncio.sleep(0.02)

            # the six connections open (and answered once) before the attack starts
            await asyncio.gather(*(session.get(LOOKUP) for _ in range(6)))
            self.ready.set()
            clients_done = asyncio.gather(*(lookups() for _ in range(6)))
            n = 0
            while not self._stop.is_set():
                branch = f"z9hG4bKlim{n}"
                transport.sendto(invite(self.daemon.sip_port, "+492216698712", branch=branch))
                self.sent.add(branch)
                n += 1
                await asyncio.sleep(0.004)
            await clients_done
            for _ in range(100):  # the last dips' answers: at most 2 s
                if self.sent <= self.answered_branches:
                    break
                await asyncio.sleep(0.02)
        transport.close()
