"""The daemon's life: startup, serve, shutdown. The one composition root."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

from aiohttp import web

from cnamd import __version__, metrics
from cnamd.cache.directory import Directory
from cnamd.cache.feed import ChangeFeed
from cnamd.errors import StoreUnavailable
from cnamd.http.app import make_app
from cnamd.settings import Settings
from cnamd.store.demo import load_demo
from cnamd.store.embedded import EmbeddedPostgres
from cnamd.store.migrations import migrate, pending
from cnamd.store.pool import connect_once

log = logging.getLogger(__name__)


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` -> (host, port); validated by settings already."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


async def prepare_database(settings: Settings, embedded: EmbeddedPostgres | None) -> str:
    """The database URL: the configured one, or the embedded server's once started."""
    if settings.database.url:
        return settings.database.url
    assert embedded is not None
    return await embedded.start()


async def migrate_database(url: str, timeout: float, *, demo: bool) -> None:
    """Apply pending migrations (and the demo data); StoreUnavailable if unreachable."""
    conn = await connect_once(url, timeout)
    try:
        await migrate(conn)
        if demo:
            await load_demo(conn)
    finally:
        await conn.close()


class Server:
    """Owns every long-lived part; ``run()`` returns when a stop signal arrives."""

    def __init__(self, settings: Settings, *, demo: bool = False) -> None:
        self.settings = settings
        self.demo = demo
        self.directory = Directory()
        self.embedded = (
            None
            if settings.database.url
            else EmbeddedPostgres(Path(settings.database.embedded_dir))
        )
        self.feed: ChangeFeed | None = None
        self.http_runner: web.AppRunner | None = None
        self.listeners_up = False
        self.schema_current = False
        self.stopping = asyncio.Event()

    # -- phases --------------------------------------------------------------

    async def startup(self) -> None:
        """Database, migrations, first cache load, then the listeners."""
        metrics.BUILD_INFO.info({"version": __version__})
        url = await prepare_database(self.settings, self.embedded)
        db = self.settings.database
        try:
            await migrate_database(url, db.connect_timeout, demo=self.demo)
            self.schema_current = True
        except StoreUnavailable as exc:
            # The feed decides: serve a snapshot, wait, or give up (database.on_unreachable).
            log.warning("database unreachable at start-up", extra={"reason": exc.reason})
        self.feed = ChangeFeed(
            url, self.directory, self.settings.cache, db, self.settings.sip.allow
        )
        await self.feed.start()
        await self._start_http()
        self.listeners_up = True
        log.info(
            "cnamd ready",
            extra={
                "version": __version__,
                "http": self.settings.http.listen,
                "entries": sum(self.directory.counts().values()),
                "stale": self.directory.stale,
            },
        )

    async def _start_http(self) -> None:
        app = make_app(self.settings, self.directory, self)
        self.http_runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=self.settings.server.shutdown_timeout,
            handle_signals=False,
        )
        await self.http_runner.setup()
        host, port = split_address(self.settings.http.listen)
        site = web.TCPSite(self.http_runner, host, port, reuse_address=True)
        await site.start()
        log.info("http listening", extra={"address": self.settings.http.listen})

    async def serve(self) -> None:
        """Wait for SIGTERM / SIGINT."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        await self.stopping.wait()
        log.info("stopping")

    async def shutdown(self) -> None:
        """Close listeners, answer in-flight requests, stop the feed and the database."""
        self.listeners_up = False
        if self.http_runner is not None:
            await self.http_runner.cleanup()
        if self.feed is not None:
            await self.feed.stop()
        if self.directory.cache is not None:
            self.directory.cache.close()
        if self.embedded is not None:
            await self.embedded.stop()
        log.info("stopped")

    async def run(self) -> None:
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
        body: dict[str, Any] = {
            "loaded": self.directory.ready,
            "database": "up" if db_up else "down",
            "listeners": self.listeners_up,
            "stale": self.directory.stale,
            "change_id": self.directory.digest.last_change_id,
            "entries": sum(self.directory.counts().values()),
        }
        reasons = []
        if not self.directory.ready:
            reasons.append("first cache load not done")
        if not self.listeners_up:
            reasons.append("listeners not up")
        status = 200
        if self.directory.stale:
            reasons.append("serving a snapshot the database has not confirmed")
            status = self.settings.cache.stale_ready_status
        elif not db_up and self.directory.ready:
            reasons.append("database unreachable; serving the cache as last loaded")
        if not self.directory.ready or not self.listeners_up:
            status = 503
        body["status"] = "ready" if status == 200 else "not-ready"
        body["reasons"] = reasons
        return status, body


async def check_migrations(url: str, timeout: float) -> list[int]:
    """Versions not yet applied (for ``cnamd migrate --check``)."""
    conn = await connect_once(url, timeout)
    try:
        return [m.version for m in await pending(conn)]
    finally:
        await conn.close()
