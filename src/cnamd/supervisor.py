"""Worker processes that share the listening sockets, bound once here.

As Kamailio's children share theirs, and as uvicorn's multiprocess supervisor
does: the parent binds every socket (listeners.py: one shared socket per
address, except UDP, where each worker gets its own socket of one steered
SO_REUSEPORT group), prepares the database, then starts N workers that
inherit the sockets (``pass_fds``).

The supervisor is the host's only cache loader, as Kamailio's mtree reloads
once per host: its own ChangeFeed (the loader role) makes every full load
(start-up, compaction, gap, digest difference) and writes the snapshot and,
every ``cache.snapshot_interval``, its tail. Workers map that one file, so
their caches share pages, and map it again when the base is replaced.

Each worker writes its applied change id to a heartbeat pipe every second.
A worker that dies or stays silent for ``HEARTBEAT_TIMEOUT`` is killed and
restarted; one whose cache stays behind the host's for more than
``cache.max_worker_lag`` is reported not ready, and past twice that
restarted. What the supervisor sees is written to a status file every half
second for every worker's /readyz and /metrics (worker_status.py). SIGTERM and
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

from cnamd import cpus, logs, metrics
from cnamd.cache.directory import Directory
from cnamd.change_log_pruner import ChangeLogPruner
from cnamd.database import DatabaseServer, prepare_schema, writes_url
from cnamd.errors import ConfigError, StoreUnavailable
from cnamd.listeners import ListenSpec, bind_all
from cnamd.replica.feed import ChangeFeed
from cnamd.replica.loader import snapshot_usable
from cnamd.settings import Settings, as_layer
from cnamd.sharedlimits import LimitRegion, warn_if_per_process
from cnamd.worker_status import HostStatus, LagWatch, WorkerView, write_status

log = logging.getLogger(__name__)

WORKER_ENV = "CNAMD_WORKER"
HEARTBEAT_TIMEOUT = 10.0
RESTART_BACKOFF_MAX = 10.0
RESTART_LAG_FACTOR = 2.0  # restart a worker behind for this many times cache.max_worker_lag


@dataclass
class Worker:
    """One child process and the read end of its heartbeat pipe."""

    index: int
    process: subprocess.Popen[bytes]
    heartbeat_fd: int
    control_fd: int  # write end: settings documents for the worker, one JSON line each
    last_beat: float = field(default_factory=time.monotonic)
    restarts: int = 0
    change_id: int | None = None  # from the heartbeats; None until its cache caught up
    beats: bytearray = field(default_factory=bytearray)  # a heartbeat line not yet whole


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
        self.count = cpus.worker_count(settings)
        self.database = DatabaseServer(settings.database)
        self.sockets: list[tuple[ListenSpec, socket.socket]] = []
        self.workers: dict[int, Worker] = {}
        # per-source limits every worker meters in (sharedlimits.py), kept across restarts
        self.limits = LimitRegion.create()
        warn_if_per_process(self.limits, self.count)
        self.stopping = asyncio.Event()
        self.url = ""
        self.run_dir = ""  # this run's metrics, status file and (snapshots off) scratch snapshot
        self.cache: ChangeFeed | None = None
        self.pruner: ChangeLogPruner | None = None
        self.lags = LagWatch()

    async def run(self) -> None:
        try:
            # before the database, the loader and the workers start: each takes its side
            cpus.plan(self.settings.server.cpus)
            self.url = await self.database.start()
            writes = writes_url(self.settings, self.url)
            self.run_dir = tempfile.mkdtemp(prefix="cnamd-run-")
            self.metrics_dir = os.path.join(self.run_dir, "metrics")
            os.mkdir(self.metrics_dir)
            db = self.settings.database
            try:
                await prepare_schema(self.settings, self.url, demo=self.demo)
            except StoreUnavailable as exc:
                if db.on_unreachable == "exit" and not self._snapshot_usable():
                    raise
                log.warning(
                    "database unreachable; workers will wait or serve the snapshot",
                    extra={"reason": exc.reason},
                )
            await self._start_cache()
            # the host's loader keeps the change log bounded, on the primary
            self.pruner = ChangeLogPruner(writes, db)
            self.pruner.start()
            self.sockets = bind_all(self.settings, self.count)
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
            if self.pruner is not None:
                await self.pruner.stop()
            if self.cache is not None:
                await self.cache.stop()
                if self.cache.directory.cache is not None:
                    self.cache.directory.cache.close()
            for _spec, sock in self.sockets:
                sock.close()
            self.limits.close()
            if self.run_dir:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            await self.database.stop()

    def _snapshot_usable(self) -> bool:
        path = self.settings.cache.snapshot_path
        return bool(path) and snapshot_usable(Path(path))

    @property
    def snapshot_path(self) -> Path:
        """The host's snapshot: the configured one, else a scratch file of this run."""
        path = self.settings.cache.snapshot_path
        return Path(path) if path else Path(self.run_dir) / "cache.snapshot"

    @property
    def status_path(self) -> Path:
        return Path(self.run_dir) / "status.json"

    async def _start_cache(self) -> None:
        """The host's cache: loaded here once (or mapped from a usable snapshot) before any
        worker maps it; with the database away and no snapshot, per database.on_unreachable."""
        self.cache = ChangeFeed(
            self.url,
            Directory(),
            self.settings.cache,
            self.settings.database,
            self.settings.sip.allow,
            log_settings=self.settings.log,
            loader=True,
            snapshot_path=self.snapshot_path,
            on_failure=self.stopping.set,
        )
        await self.cache.start(prefer_snapshot=True)

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
                "snapshot_path": str(self.snapshot_path),
                "status_path": str(self.status_path),
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
        head = self.cache.last_change_id if self.cache is not None else 0
        self.lags.head_at(head, now)
        for index, worker in list(self.workers.items()):
            self._read_beats(worker, now)
            code = worker.process.poll()
            silent = now - worker.last_beat > HEARTBEAT_TIMEOUT
            lag = self._lag(worker, now)
            # reported not ready past max_worker_lag (the status below); restarted past twice
            # that, so a worker that is only slow (mapping a new base) may catch up first
            behind = lag > RESTART_LAG_FACTOR * self.settings.cache.max_worker_lag
            if code is None and not silent and not behind:
                continue
            if code is None:
                fields: dict[str, object] = {"worker": index, "pid": worker.process.pid}
                if silent:
                    log.error("worker silent, killing it", extra=fields)
                else:
                    fields |= {"lag_seconds": round(lag, 1), "change_id": worker.change_id}
                    log.error("worker behind the host's cache, restarting it", extra=fields)
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
        known = [w.change_id for w in self.workers.values() if w.change_id is not None]
        if known:
            self.lags.forget_before(min(known))
        self._write_status(head, now)

    def _lag(self, worker: Worker, now: float) -> float:
        """Seconds the worker's cache has been behind the host's (0 while it starts)."""
        return 0.0 if worker.change_id is None else self.lags.lag(worker.change_id, now)

    def _write_status(self, head: int, now: float) -> None:
        views = tuple(
            WorkerView(w.index, w.process.pid, w.change_id, self._lag(w, now), w.restarts)
            for w in sorted(self.workers.values(), key=lambda w: w.index)
        )
        status = HostStatus(time.time(), head, self.settings.cache.max_worker_lag, views)
        try:
            write_status(self.status_path, status)
        except OSError as exc:
            log.error("worker status not written", extra={"reason": str(exc)})

    @staticmethod
    def _read_beats(worker: Worker, now: float) -> None:
        """Take the heartbeats written since the last check: one line each, the worker's
        applied change id, or ``-`` while its cache has not caught up yet."""
        try:
            chunk = os.read(worker.heartbeat_fd, 4096)
        except BlockingIOError:
            return
        if not chunk:
            return
        worker.last_beat = now
        worker.beats += chunk
        *lines, rest = worker.beats.split(b"\n")
        worker.beats = bytearray(rest)
        if lines:
            last = lines[-1].strip()
            worker.change_id = int(last) if last.isdigit() else None

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
