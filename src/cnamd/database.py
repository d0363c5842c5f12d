"""The database a process works on: the configured URL, or the embedded server;
where its writes go; its schema.

One place decides whether PostgreSQL is started here (``database.url`` empty)
and stops it again; the daemon, the supervisor and every CLI command that
needs the store go through it, so they agree on which server they mean.
Writes go to ``database.primary_url`` when the daemon follows a hot standby.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType

from cnamd.errors import StoreUnavailable
from cnamd.settings import DatabaseSettings, Settings
from cnamd.store.demo import load_demo
from cnamd.store.embedded import EmbeddedPostgres
from cnamd.store.migrations import migrate, pending
from cnamd.store.pool import connect_once

log = logging.getLogger(__name__)


class DatabaseServer:
    """``start()`` -> the URL to use; ``stop()`` stops the embedded server if this started it.

    Also an async context manager yielding the URL, for commands that run and exit.
    """

    def __init__(self, settings: DatabaseSettings) -> None:
        self.url = settings.url
        self.embedded = None if settings.url else EmbeddedPostgres(Path(settings.embedded_dir))

    async def start(self) -> str:
        if self.embedded is not None:
            self.url = await self.embedded.start()
        return self.url

    async def stop(self) -> None:
        if self.embedded is not None:
            await self.embedded.stop()

    async def __aenter__(self) -> str:
        return await self.start()

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        await self.stop()


def writes_url(settings: Settings, url: str) -> str:
    """Where writes go: ``database.primary_url``, else the database the daemon follows."""
    return settings.database.primary_url or url


async def migrate_database(url: str, timeout: float, *, demo: bool) -> None:
    """Apply pending migrations (and the demo data); StoreUnavailable if unreachable.

    A hot standby takes no writes: its schema is the primary's, checked, not migrated.
    """
    conn = await connect_once(url, timeout)
    try:
        if await conn.fetchval("SELECT pg_is_in_recovery()"):
            missing = [m.version for m in await pending(conn)]
            if missing:
                raise StoreUnavailable(
                    f"the standby's schema lacks migrations {missing}: migrate the primary",
                    field="database.primary_url",
                )
            return
        await migrate(conn)
        if demo:
            await load_demo(conn)
    finally:
        await conn.close()


async def prepare_schema(settings: Settings, url: str, *, demo: bool) -> None:
    """Migrate through the primary; when only a standby ``url`` answers (a region cut off
    from its primary), check the schema there instead: the daemon can serve from it.
    StoreUnavailable when neither answers."""
    timeout = settings.database.connect_timeout
    writes = writes_url(settings, url)
    try:
        await migrate_database(writes, timeout, demo=demo)
    except StoreUnavailable as exc:
        if writes == url:
            raise
        log.warning(
            "the primary is unreachable at start-up; checking the schema on the standby",
            extra={"reason": exc.reason},
        )
        await migrate_database(url, timeout, demo=False)


async def check_migrations(url: str, timeout: float) -> list[int]:
    """Versions not yet applied (for ``cnamd migrate --check``)."""
    conn = await connect_once(url, timeout)
    try:
        return [m.version for m in await pending(conn)]
    finally:
        await conn.close()
