"""Worker processes that share the listening sockets, bound once here.

As Kamailio's children share theirs, and as uvicorn's multiprocess supervisor
does: the parent binds every socket, prepares the database and the first cache
snapshot, then starts N workers that inherit the sockets (``pass_fds``) and map
the snapshot read-only, so their caches share pages. Not SO_REUSEPORT: the
kernel would hash each UDP sender to one socket, so one SBC sending from one
port would load one worker only.

Each worker writes a heartbeat byte to a pipe every second; a worker that dies
or stays silent for ``HEARTBEAT_TIMEOUT`` is killed and restarted. SIGTERM and
SIGINT stop all. SIGHUP re-reads the configuration here, once: an invalid one
is refused and logged, a valid one is split into live changes (written to each
worker's control pipe as one JSON line) and changes that need a restart
(logged; the running values stay, also for workers started later).

Metrics: every worker gets ``PROMETHEUS_MULTIPROC_DIR``, a directory made
here for this run, so a scrape answered by any worker sums all of them
(``metrics.py``); a dead worker's live gauges are dropped, its counters kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead

from cnamd import logs, metrics
from cnamd.cache.loader import load_in_child, snapshot_usable
from cnamd.errors import ConfigError, StoreUnavailable
from cnamd.listeners import ListenSpec, bind_all
from cnamd.settings import Settings, as_layer
from cnamd.sharedlimits import LimitRegion, warn_if_per_process
from cnamd.store.embedded import EmbeddedPostgres

log = logging.getLogger(__name__)

WORKER_ENV = "CNAMD_WORKER"
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_TIMEOUT = 10.0
RESTART_BACKOFF_MAX = 10.0


@dataclass
class Worker:
    """One child process and the read end of its heartbeat pipe."""

    index: int
    process: subprocess.Popen[bytes]
    heartbeat_fd: int
    control_fd: int  # write end: settings documents for the worker, one JSON line each
    last_beat: float = field(default_factory=time.monotonic)
    restarts: int = 0


def worker_count(settings: Settings) -> int:
    return settings.server.workers or os.cpu_count() or 1


class Supervisor:
    """Binds, prepares, spawns and watches the workers."""

    def __init__(
        self,
        settings: Settings,
        *,
        demo: bool = False,
        reload_settings: Callable[[], Settings] | None = None,
    ) -> None:
        self.settings = settings
        self.demo = demo
        self.reload_settings = reload_settings
        self.metrics_dir = ""
        self.count = worker_count(settings)
        self.embedded = (
            None
            if settings.database.url
            else EmbeddedPostgres(Path(settings.database.embedded_dir))
        )
        self.sockets: list[tuple[ListenSpec, socket.socket]] = []
        self.workers: dict[int, Worker] = {}
        # per-source limits every worker meters in (sharedlimits.py), kept across restarts
        self.limits = LimitRegion.create()
        warn_if_per_process(self.limits, self.count)
        self.stopping = asyncio.Event()
        self.url = ""

    async def run(self) -> None:
        from cnamd.server import migrate_database, prepare_database

        try:
            self.url = await prepare_database(self.settings, self.embedded)
            db = self.settings.database
            try:
                await migrate_database(self.url, db.connect_timeout, demo=self.demo)
                await self._prime_snapshot()
            except StoreUnavailable as exc:
                if db.on_unreachable == "exit" and not self._snapshot_usable():
                    raise
                log.warning(
                    "database unreachable; workers will wait or serve the snapshot",
                    extra={"reason": exc.reason},
                )
            self.sockets = bind_all(self.settings, self.count)
            self.metrics_dir = tempfile.mkdtemp(prefix="cnamd-metrics-")
            for index in range(self.count):
                self._spawn(index)
            log.info(
                "supervisor started",
                extra={
                    "workers": self.count,
                    "http": self.settings.http.listen,
                    "sip": ",".join(self.settings.sip.listen),
                },
            )
            await self._watch()
        finally:
            await self._stop_workers()
            for _spec, sock in self.sockets:
                sock.close()
            self.limits.close()
            if self.metrics_dir:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)
            if self.embedded is not None:
                await self.embedded.stop()

    def _snapshot_usable(self) -> bool:
        path = self.settings.cache.snapshot_path
        return bool(path) and snapshot_usable(Path(path))

    async def _prime_snapshot(self) -> None:
        """Make sure a snapshot is there for the workers to map (shared pages).

        A usable one from the last run is kept: the workers catch up from its
        change id and confirm it by digest. Otherwise the loader's child builds it.
        """
        path = self.settings.cache.snapshot_path
        if path and not self._snapshot_usable():
            await load_in_child(
                self.url,
                Path(path),
                connect_timeout=self.settings.database.connect_timeout,
                log_settings=self.settings.log,
                cause="prime",
            )

    def _child_env(self, spec: dict[str, object]) -> dict[str, str]:
        """The environment of a worker: ours plus its spec (settings, database URL, sockets)."""
        env = dict(os.environ)
        env[WORKER_ENV] = json.dumps(
            {"database_url": self.url, "settings": as_layer(self.settings), **spec}
        )
        env[metrics.MULTIPROC_ENV] = self.metrics_dir
        return env

    def _spawn(self, index: int, restarts: int = 0) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        control_read, control_write = os.pipe()
        os.set_blocking(control_write, False)  # a stuck worker must not stall the supervisor
        fds = {spec.key: sock.fileno() for spec, sock in self.sockets if spec.serves(index)}
        env = self._child_env(
            {
                "index": index,
                "sockets": fds,
                "heartbeat_fd": write_fd,
                "control_fd": control_read,
                "limits_fd": self.limits.fd,
            }
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "cnamd.cli", "worker"],
            pass_fds=[*fds.values(), write_fd, control_read, self.limits.fd],
            env=env,
        )
        os.close(write_fd)
        os.close(control_read)
        self.workers[index] = Worker(index, process, read_fd, control_write, restarts=restarts)
        log.info("worker started", extra={"worker": index, "pid": process.pid})

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.5)
            if not self.stopping.is_set():
                await self._check_workers()

    async def _check_workers(self) -> None:
        now = time.monotonic()
        for index, worker in list(self.workers.items()):
            self._read_beats(worker, now)
            code = worker.process.poll()
            silent = now - worker.last_beat > HEARTBEAT_TIMEOUT
            if code is None and not silent:
                continue
            if code is None:
                log.error(
                    "worker silent, killing it", extra={"worker": index, "pid": worker.process.pid}
                )
                worker.process.kill()
                await asyncio.to_thread(worker.process.wait)
                code = worker.process.returncode
            else:
                log.error(
                    "worker exited, restarting",
                    extra={"worker": index, "code": code, "pid": worker.process.pid},
                )
            os.close(worker.heartbeat_fd)
            os.close(worker.control_fd)
            # its live gauges go, its counters stay in the sums
            mark_process_dead(worker.process.pid, self.metrics_dir)  # type: ignore[no-untyped-call]
            del self.workers[index]
            await asyncio.sleep(min(RESTART_BACKOFF_MAX, 0.1 * 2**worker.restarts))
            self._spawn(index, worker.restarts + 1)

    @staticmethod
    def _read_beats(worker: Worker, now: float) -> None:
        try:
            if os.read(worker.heartbeat_fd, 4096):
                worker.last_beat = now
        except BlockingIOError:
            pass

    def _forward(self, sig: int) -> None:
        for worker in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(sig)

    async def _stop_workers(self) -> None:
        self._forward(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.server.shutdown_timeout + 1
        for worker in self.workers.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                await asyncio.to_thread(worker.process.wait, remaining)
            except subprocess.TimeoutExpired:
                log.warning(
                    "worker did not stop in time, killing it", extra={"worker": worker.index}
                )
                worker.process.kill()
                await asyncio.to_thread(worker.process.wait)
            os.close(worker.heartbeat_fd)
            os.close(worker.control_fd)
        self.workers.clear()
        log.info("workers stopped")

    def reload(self) -> None:
        """SIGHUP: re-read the configuration once and send the live part to every worker."""
        from cnamd.reload import plan_reload
        from cnamd.server import log_reload, reread

        new = reread(self.reload_settings)
        if new is None:
            return
        if isinstance(new, ConfigError):
            self._tell({"refused": str(new)})  # for cnamd_config_last_reload_successful
            return
        plan = plan_reload(self.settings, new)
        self.settings = plan.settings  # workers started from now on get these
        if plan.touches("log"):
            logs.configure(plan.settings.log)
        log_reload(plan, workers=self._tell({"settings": as_layer(plan.settings)}))

    def _tell(self, message: dict[str, object]) -> int:
        """Write one JSON line to every worker's control pipe; how many got it whole."""
        line = json.dumps(message).encode() + b"\n"
        told = 0
        for worker in self.workers.values():
            try:
                written = os.write(worker.control_fd, line)
            except (BlockingIOError, BrokenPipeError) as exc:
                written, reason = 0, type(exc).__name__
            else:
                reason = "pipe full"
            if written == len(line):
                told += 1
            else:
                # a stuck or dying worker: the heartbeat check restarts it with these settings
                log.warning("worker not told", extra={"worker": worker.index, "reason": reason})
        return told


async def heartbeat(fd: int) -> None:
    """In a worker: tell the supervisor we are alive, until cancelled or orphaned."""
    while True:
        try:
            os.write(fd, b".")
        except BlockingIOError:
            pass
        except OSError:  # the supervisor is gone: stop serving
            os.kill(os.getpid(), signal.SIGTERM)
            return
        await asyncio.sleep(HEARTBEAT_INTERVAL)
