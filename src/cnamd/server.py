"""The daemon's life: startup, serve, shutdown. The one composition root.

One process serves HTTP and SIP from one Directory. It runs alone (``--workers
1``), binding its own sockets and owning the database, or as a worker of the
supervisor, adopting the sockets and the database URL it was handed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from cnamd import __version__, collector, cpus, fd_table, logs, metrics
from cnamd.cache.directory import Directory
from cnamd.cache.upstream import UpstreamAnswers
from cnamd.callers import DirectoryCallers
from cnamd.change_log_pruner import ChangeLogPruner
from cnamd.database import DatabaseServer, prepare_schema, writes_url
from cnamd.errors import ConfigError, StoreUnavailable
from cnamd.http import access_log
from cnamd.http.app import make_app
from cnamd.http.fastpath import LookupRunner
from cnamd.http.keys import AUTH_LIMITER, SERVED, TRUSTED, UPSTREAM
from cnamd.listeners import ListenSpec, adopt, bind_all
from cnamd.loop_lag import LoopLag
from cnamd.order_worker import OrderWorker
from cnamd.reload import ReloadPlan, plan_reload
from cnamd.replica.feed import ChangeFeed
from cnamd.settings import Settings, SipSettings, UpstreamSettings, from_layer
from cnamd.sharedlimits import LimitRegion, RateLimiter
from cnamd.sip.dip import Dip, DipSettings
from cnamd.sip.requestlog import request_log
from cnamd.sip.transport import StreamLimits, UdpListener, serve_tcp, serve_udp
from cnamd.store.pool import Pool, open_pool, publish_pool_metrics
from cnamd.upstream.chain import Chain, Upstream
from cnamd.upstream.sweeper import sweep_forever
from cnamd.upstream.writer import Writer
from cnamd.worker_status import HostStatus, heartbeat, read_status

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What the supervisor hands a worker process."""

    index: int
    database_url: str
    sockets: dict[str, int]
    heartbeat_fd: int
    control_fd: int = -1  # the supervisor writes new settings here (SIGHUP)
    snapshot_path: str = ""  # the host's snapshot, loaded by the supervisor
    status_path: str = ""  # the supervisor's view of every worker (worker_status.py)
    limits_fd: int = -1  # the per-source limits shared by all workers (sharedlimits.py)


def dip_settings(settings: Settings) -> DipSettings:
    sip = settings.sip
    return DipSettings(
        number_source=sip.number_source,
        miss_reply=sip.miss_reply,
        invalid_reply=sip.invalid_reply,
        anonymous_name=sip.anonymous_name,
        deny_reply=sip.deny_reply,
        server_header=settings.server.software,
        retry_after=max(1, sip.retry_after),
    )


def sip_limiter(sip: SipSettings, limits: LimitRegion) -> RateLimiter | None:
    """The per-source limiter for ``sip.rate``, shared by the workers; a reload retunes
    it, keeping debts."""
    return limits.bucket("sip", sip.rate, sip.burst) if sip.rate > 0 else None


def reread(source: Callable[[], Settings] | None) -> Settings | ConfigError | None:
    """A SIGHUP's first step: the configuration read again. None when there is no
    source to re-read, the ConfigError when it is refused; both are logged."""
    if source is None:
        log.warning("SIGHUP ignored: no configuration source to re-read")
        return None
    try:
        return source()
    except ConfigError as exc:
        log.error(
            "reload refused; the running settings stay",
            extra={"field": exc.field, "reason": exc.reason},
        )
        return exc


def log_reload(plan: ReloadPlan, **fields: Any) -> None:
    """One line for what a reload applied, one for what waits for a restart."""
    log.info(
        "settings reloaded",
        extra={"applied": ",".join(plan.applied) or "nothing changed", **fields},
    )
    if plan.needs_restart:
        log.warning(
            "settings changed that need a restart; the running values stay",
            extra={"settings": ",".join(plan.needs_restart), **fields},
        )


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.sip.tls_listen:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.sip.tls_cert, settings.sip.tls_key)
    return context


def _noop() -> None:
    """A signal handler that only keeps the default action (exit) away."""


class Server:
    """Owns every long-lived part of one serving process."""

    def __init__(
        self,
        settings: Settings,
        *,
        demo: bool = False,
        worker: WorkerSpec | None = None,
        reload_settings: Callable[[], Settings] | None = None,
    ) -> None:
        self.settings = settings
        self.demo = demo
        self.worker = worker
        # re-reads file < environment < flags on SIGHUP (single process; a worker is told)
        self.reload_settings = reload_settings
        self.http_app: web.Application | None = None
        self._metrics_tick: asyncio.Task[None] | None = None
        self._loop_lag = LoopLag()
        self.directory = Directory()
        # a worker uses the supervisor's database; it never starts one
        self.database = DatabaseServer(settings.database) if worker is None else None
        # the upstream scope (issue #17): held answers, the chain when sources are set
        self.upstream_answers = UpstreamAnswers()
        self.upstream: Upstream | None = None
        self.callers: DirectoryCallers | None = None  # the dip's, told of new sources
        self._sweeper: asyncio.Task[None] | None = None
        self.sockets: list[tuple[ListenSpec, socket.socket]] = []
        self.feed: ChangeFeed | None = None
        self.pool: Pool | None = None
        self.orders: OrderWorker | None = None
        self.pruner: ChangeLogPruner | None = None
        self.http_runner: web.AppRunner | None = None
        self.sip_udp: list[UdpListener] = []
        self.sip_streams: list[asyncio.Server] = []
        self.dip: Dip | None = None
        self.limits: LimitRegion | None = None
        self.listeners_up = False
        self.stopping = asyncio.Event()
        self._heartbeat: asyncio.Task[None] | None = None

    # -- phases --------------------------------------------------------------

    async def startup(self) -> None:
        """Database and sockets, listeners (answering 503 until loaded), then the cache."""
        metrics.BUILD_INFO.labels(__version__).set(1)
        metrics.CONFIG_RELOAD_OK.set(1)
        access_log.set_enabled(self.settings.http.access_log)
        # before the first connection: a table grown later stalls the loop (fd_table.py)
        slots = fd_table.grow(fd_table.capacity(self.settings))
        log.debug("descriptor table grown", extra={"slots": slots})
        db = self.settings.database
        if self.worker is None:
            assert self.database is not None
            cpus.plan(self.settings.server.cpus)  # before the database and the loader start
            url = await self.database.start()
            try:
                await prepare_schema(self.settings, url, demo=self.demo)
            except StoreUnavailable as exc:
                # The feed decides: serve a snapshot, wait, or give up (database.on_unreachable).
                log.warning("database unreachable at start-up", extra={"reason": exc.reason})
            self.sockets = bind_all(self.settings)
        else:
            url = self.worker.database_url
            self.sockets = adopt(self.worker.sockets)
            self._heartbeat = asyncio.create_task(
                heartbeat(self.worker.heartbeat_fd, self._applied_change_id)
            )
        cpus.serve_here()  # server.cpus: this process serves; the threads it starts follow
        # the API, imports and order workers write: to the primary when url is a standby
        self.pool = await open_pool(
            writes_url(self.settings, url),
            min_size=db.pool_min,
            max_size=db.pool_max,
            timeout=db.connect_timeout,
            statement_timeout=db.statement_timeout,
        )
        await self._start_upstream()
        await self._start_listeners()
        self.feed = ChangeFeed(
            url,
            self.directory,
            self.settings.cache,
            db,
            self.settings.sip.allow,
            log_settings=self.settings.log,
            # a worker follows the host's snapshot; the supervisor makes the full loads
            loader=self.worker is None,
            snapshot_path=Path(self.worker.snapshot_path)
            if self.worker is not None and self.worker.snapshot_path
            else None,
            on_failure=self._feed_failed,
            upstream_answers=self.upstream_answers,
        )
        self.directory.held = True
        await self.feed.start(prefer_snapshot=True)
        # A mapped snapshot is seconds old: answer only once caught up with the database,
        # unless the database cannot be reached within the bound (then serve it, stale).
        waits = {
            asyncio.ensure_future(self.feed.caught_up.wait()),
            asyncio.ensure_future(self.stopping.wait()),
        }
        await asyncio.wait(
            waits, timeout=db.connect_timeout + db.ping_timeout, return_when="FIRST_COMPLETED"
        )
        for wait in waits:
            wait.cancel()
        # start-up's objects out of every later full collection's walk (collector.py),
        # while nothing is answered yet: the collection itself stops the loop too
        frozen = collector.settle()
        self.directory.held = False
        assert self.dip is not None
        self.dip.available = True  # with the line above: SIP and HTTP answer from here on
        if self.worker is None or self.worker.index == 0:
            # Atmosphere CNAM orders: one worker per daemon; SKIP LOCKED shares them safely
            self.orders = OrderWorker(self.pool, self.settings)
            self.orders.start()
            # expired upstream answers: one sweeper per daemon, like the orders
            self._sweeper = asyncio.create_task(
                sweep_forever(self.pool, self.settings.upstream.sweep_interval, db.connect_timeout)
            )
        if self.worker is None:
            # the host's loader keeps the change log bounded, on the primary
            self.pruner = ChangeLogPruner(writes_url(self.settings, url), db)
            self.pruner.start()
        self._metrics_tick = asyncio.create_task(self._publish_metrics())
        self._loop_lag.start()
        log.info(
            "cnamd ready",
            extra={
                "version": __version__,
                "worker": self.worker.index if self.worker else None,
                "entries": sum(self.directory.counts().values()),
                "stale": self.directory.stale,
                "frozen": frozen,
            },
        )

    def _applied_change_id(self) -> int | None:
        """For the heartbeat: the change id served, None while nothing is answered yet
        (not loaded, or holding back to catch up; with the database away the snapshot
        is served, stale, once the wait is over, and its change id is reported)."""
        feed = self.feed
        if feed is None or not self.directory.serving:
            return None
        return feed.last_change_id

    async def _served(self, change_id: int) -> None:
        """Returns once this process's cache serves ``change_id`` (an upload's turn)."""
        if self.feed is not None:
            await self.feed.reached(change_id)

    def _feed_failed(self) -> None:
        """The change feed stopped for good: stop serving, so the supervisor (or the
        service manager) starts a fresh process instead of one with a frozen cache."""
        log.critical("stopping: the cache can no longer be kept fresh")
        self.stopping.set()

    async def _start_upstream(self) -> None:
        """The upstream chain when sources are configured (its writer on the pool)."""
        settings = self.settings.upstream
        chain = self._new_chain(settings) if settings.sources else None
        self.upstream = Upstream(self.upstream_answers, chain, settings)

    def _new_chain(self, settings: UpstreamSettings) -> Chain:
        """A started chain (no await: a SIGHUP adding the first sources starts one)."""
        assert self.pool is not None
        writer = Writer(
            self.pool,
            batch_size=settings.batch_size,
            flush_interval=settings.flush_interval,
            timeout=self.settings.database.connect_timeout,
        )
        chain = Chain(
            settings, self.upstream_answers, writer, max_length=self.settings.names.max_length
        )
        chain.begin()
        if self.limits is not None:
            self._share_claims(chain)
        return chain

    def _share_claims(self, chain: Chain) -> None:
        """With several workers, one of them asks for a number (upstream/claims.py)."""
        assert self.limits is not None
        if cpus.worker_count(self.settings) > 1:
            window = chain.claims.window
            chain.claims.table = self.limits.bucket("upstream", 1.0 / window, 1.0)

    def _reconfigure_upstream(self, settings: UpstreamSettings) -> None:
        """SIGHUP changed ``upstream``: new sources and deadlines from the next lookup on."""
        upstream = self.upstream
        if upstream is None:
            return
        upstream.reconfigure(settings)
        if self.callers is not None:
            self.callers.deadline = settings.sip_deadline
        if upstream.chain is not None:
            upstream.chain.reconfigure(settings)
        elif settings.sources:
            upstream.chain = self._new_chain(settings)
            if self.callers is not None:
                self.callers.chain = upstream.chain

    async def _start_listeners(self) -> None:
        fd = -1 if self.worker is None else self.worker.limits_fd
        region = self.limits = LimitRegion.create() if fd < 0 else LimitRegion.attach(fd)
        http = self.settings.http
        auth = region.bucket("auth", http.auth_failure_rate, http.auth_failure_burst)
        if self.upstream is not None and self.upstream.chain is not None:
            self._share_claims(self.upstream.chain)
        app = self.http_app = make_app(self.settings, self.directory, self, self.pool, auth)
        assert self.upstream is not None
        app[UPSTREAM] = self.upstream
        app[SERVED] = self._served
        self.http_runner = LookupRunner(
            app,
            access_log=logging.getLogger(access_log.LOGGER),
            access_log_class=access_log.AccessLog,
            shutdown_timeout=self.settings.server.shutdown_timeout,
            # aiohttp's own default is an hour: every idle PBX or scanner connection a socket
            keepalive_timeout=self.settings.http.idle_timeout,
            max_connections=self.settings.http.max_connections,
            handle_signals=False,
        )
        await self.http_runner.setup()
        sip = self.settings.sip
        self.callers = DirectoryCallers(
            self.directory,
            self.upstream_answers,
            self.upstream.chain,
            self.settings.upstream.sip_deadline,
        )
        self.dip = Dip(
            dip_settings(self.settings),
            self.callers,
            limiter=sip_limiter(sip, region),
        )
        self.dip.trace = request_log(sip.log_sample)
        self.dip.available = False  # 503 + Retry-After until the first load
        limits = StreamLimits(
            idle_timeout=sip.tcp_idle_timeout,
            max_connections=sip.tcp_max_connections,
            message_timeout=sip.tcp_message_timeout,
        )
        tls = tls_context(self.settings)
        for spec, sock in self.sockets:
            if spec.kind == "http":
                await web.SockSite(self.http_runner, sock).start()
            elif spec.kind == "sip-udp":
                # kernel drops: one count per socket (worker 0 for one the workers share)
                counts = spec.worker >= 0 or self.worker is None or self.worker.index == 0
                self.sip_udp.append(await serve_udp(sock, self.dip, count_kernel_drops=counts))
            else:
                ctx = tls if spec.kind == "sip-tls" else None
                self.sip_streams.append(await serve_tcp(sock, self.dip, ssl=ctx, limits=limits))
            if self.worker is None or self.worker.index == 0:
                log.info("listening", extra={"kind": spec.kind, "address": spec.address})
        self.listeners_up = True

    def handle_signals(self) -> None:
        """SIGTERM / SIGINT stop, SIGHUP reloads (a worker: when the supervisor says);
        installed before start-up, which may wait seconds for the database."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        # a worker's own SIGHUP comes from a process-group kill: the supervisor re-reads
        # the file once and sends every worker the result over its control pipe
        loop.add_signal_handler(signal.SIGHUP, self.reload if self.worker is None else _noop)

    async def serve(self) -> None:
        """Serve until SIGTERM / SIGINT (or a feed that cannot go on)."""
        if self.worker is not None and self.worker.control_fd >= 0:
            self._follow_control(self.worker.control_fd)
        await self.stopping.wait()
        log.info("stopping")

    # -- live settings -----------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: re-read the configuration; apply it, or refuse it and keep running as is."""
        new = reread(self.reload_settings)
        if new is None:
            return
        if isinstance(new, ConfigError):
            metrics.CONFIG_RELOAD_OK.set(0)
            return
        metrics.CONFIG_RELOAD_OK.set(1)
        log_reload(self.apply(new))

    def apply(self, new: Settings) -> ReloadPlan:
        """Take over the live-changeable part of ``new`` (reload.LIVE), all at once.

        Everything here is a synchronous swap on the event loop's thread, so a
        request sees either the old settings or the new ones, and none is dropped.
        """
        plan = plan_reload(self.settings, new)
        now = plan.settings
        if plan.touches("log"):
            logs.configure(now.log)
        if plan.touches("upstream"):
            self._reconfigure_upstream(now.upstream)
        if plan.touches("http"):
            access_log.set_enabled(now.http.access_log)
            if self.http_app is not None:
                self.http_app[TRUSTED].replace(now.http.trusted_networks)
                self.http_app[AUTH_LIMITER].retune(
                    now.http.auth_failure_rate, now.http.auth_failure_burst
                )
        if plan.touches("sip"):
            if "sip.allow" in plan.applied and self.feed is not None:
                self.feed.set_allowed(now.sip.allow)
            if self.dip is not None:
                assert self.limits is not None
                self.dip.configure(dip_settings(now), sip_limiter(now.sip, self.limits))
                self.dip.trace = request_log(now.sip.log_sample)
        self.settings = now
        return plan

    def _follow_control(self, fd: int) -> None:
        """In a worker: apply each settings document the supervisor writes (one JSON line)."""
        loop = asyncio.get_running_loop()
        os.set_blocking(fd, False)
        pending = bytearray()

        def readable() -> None:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return
            if not chunk:  # the supervisor is gone; the heartbeat notices and stops us
                loop.remove_reader(fd)
                return
            pending.extend(chunk)
            while (end := pending.find(b"\n")) >= 0:
                line = bytes(pending[:end])
                del pending[: end + 1]
                self._control(line)

        loop.add_reader(fd, readable)

    def _control(self, line: bytes) -> None:
        """One message of the supervisor: new settings, or word that a reload was refused."""
        try:
            message = json.loads(line)
            if "refused" in message:
                metrics.CONFIG_RELOAD_OK.set(0)
                return
            new = from_layer(message["settings"])
        except (ValueError, KeyError, TypeError, ConfigError) as exc:
            log.error("unreadable settings from the supervisor", extra={"reason": str(exc)})
            return
        metrics.CONFIG_RELOAD_OK.set(1)
        plan = self.apply(new)
        assert self.worker is not None
        log.info(
            "settings applied",
            extra={"worker": self.worker.index, "applied": ",".join(plan.applied) or "none"},
        )

    async def _publish_metrics(self) -> None:
        """Every second: hot-path tallies and pool gauges into the (shared) metrics, so a
        scrape answered by any worker sees this one at most a second late."""
        while True:
            await asyncio.sleep(1.0)
            metrics.flush_tallies()
            if self.pool is not None:
                publish_pool_metrics(self.pool)

    async def shutdown(self) -> None:
        """Close listeners, answer in-flight requests, stop the feed and the database."""
        self.listeners_up = False
        if self._metrics_tick is not None:
            self._metrics_tick.cancel()
        self._loop_lag.stop()
        if self.worker is not None and self.worker.control_fd >= 0:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self.worker.control_fd)
        for udp in self.sip_udp:
            udp.pause()  # open until the drain has answered the dips parked on upstream
        for stream in self.sip_streams:
            stream.close()
        await self._drain()
        for udp in self.sip_udp:
            udp.close()
        if self.http_runner is not None:
            access_log.flush()  # the last batch of the access log
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self.orders is not None:
            await self.orders.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.upstream is not None and self.upstream.chain is not None:
            await self.upstream.chain.close()  # writes the answers still queued
        if self.pruner is not None:
            await self.pruner.stop()
        if self.feed is not None:
            await self.feed.stop()
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), self.settings.server.shutdown_timeout)
            except TimeoutError:
                self.pool.terminate()
        for _spec, sock in self.sockets:
            sock.close()
        if self.directory.cache is not None:
            self.directory.cache.close()
        if self.database is not None:
            await self.database.stop()
        log.info("stopped")

    async def _drain(self) -> None:
        """Answer the HTTP requests in flight and the SIP dips parked on upstream within
        ``server.shutdown_timeout``: past it, their waits end as at their deadline (the
        miss), still before the SIP sockets close. An SBC would rather have the miss than
        a timeout; before, the UDP sockets closed first and every parked dip went unanswered.

        The front's parked lookups and aiohttp's handlers are drained one after the other,
        and aiohttp waits for a handler twice (before and after asking it to stop), so a
        wait for upstream longer than the grace period (``upstream.http_deadline`` may be)
        held the drain for three of them: past the supervisor's patience, which killed the
        worker with its lookups unanswered and its upstream answers unwritten."""
        chain = self.upstream.chain if self.upstream is not None else None
        grace = None
        if chain is not None:
            loop = asyncio.get_running_loop()
            grace = loop.call_later(self.settings.server.shutdown_timeout, chain.give_up)
        try:
            if self.http_runner is not None:
                await self.http_runner.cleanup()
            if chain is not None:
                await chain.unparked()
        finally:
            if grace is not None:
                grace.cancel()

    async def run(self) -> None:
        self.handle_signals()
        try:
            await self.startup()
            await self.serve()
        finally:
            await self.shutdown()

    # -- readiness -------------------------------------------------------------

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """/readyz: 200 only when loaded, listening and confirmed by the database."""
        feed = self.feed
        db_up = feed.db_up if feed is not None else False
        # a standby too far behind its primary is as stale as a database away
        lagging = feed is not None and feed.lagging
        body: dict[str, Any] = {
            "loaded": self.directory.ready,
            "database": "up" if db_up else "down",
            "database_mode": feed.mode if feed is not None else None,
            "replay_lag": round(feed.replay_lag, 3) if feed is not None else 0.0,
            "listeners": self.listeners_up,
            # a cache the database does not confirm now: a snapshot, or the database away
            "stale": self.directory.stale or not db_up or lagging,
            "change_id": self.directory.digest.last_change_id,
            # count and XOR of entry hashes: equal on two daemons serving the same names
            "digest": self.directory.digest.text(),
            "entries": sum(self.directory.counts().values()),
        }
        reasons = []
        if not self.directory.ready:
            reasons.append("first cache load not done")
        if not self.listeners_up:
            reasons.append("listeners not up")
        failing = [] if feed is None or not feed.failed else ["change feed stopped"]
        if self.directory.held:
            failing.append("catching up with the database before answering")
        host = self._host_status()
        if host is not None:
            body["workers"] = [asdict(w) for w in host.workers]
            failing += host.problems(time.time())
        elif self.worker is not None and self.worker.status_path:
            failing.append("no status from the supervisor")
        reasons += failing
        status = 200
        # cache.stale_ready_status says whether a cache the database does not confirm
        # (a snapshot at start-up, or the last state after the database went away) is
        # ready: 200 keeps every daemon in the pool while PostgreSQL is down.
        if self.directory.stale:
            reasons.append("serving a snapshot the database has not confirmed")
            status = self.settings.cache.stale_ready_status
        elif not db_up and self.directory.ready:
            reasons.append("database unreachable; serving the cache as last loaded")
            status = self.settings.cache.stale_ready_status
        elif lagging and feed is not None and self.directory.ready:
            reasons.append(
                f"the standby is {feed.replay_lag:.1f} s behind its primary"
                f" (database.max_replay_lag {self.settings.database.max_replay_lag:g} s)"
            )
            status = self.settings.cache.stale_ready_status
        if not self.directory.ready or not self.listeners_up or failing:
            status = 503
        body["status"] = "ready" if status == 200 else "not-ready"
        body["reasons"] = reasons
        return status, body

    def _host_status(self) -> HostStatus | None:
        """The supervisor's view of every worker (None when running alone)."""
        if self.worker is None or not self.worker.status_path:
            return None
        return read_status(Path(self.worker.status_path))

    def metrics_extra(self) -> bytes:
        """Exposition lines /metrics adds: the supervisor's view of the workers."""
        host = self._host_status()
        return host.exposition() if host is not None else b""
