"""The database a process works on: the configured URL, or the embedded server.

One place decides whether PostgreSQL is started here (``database.url`` empty)
and stops it again; the daemon, the supervisor and every CLI command that
needs the store go through it, so they agree on which server they mean.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from cnamd.settings import DatabaseSettings
from cnamd.store.demo import load_demo
from cnamd.store.embedded import EmbeddedPostgres
from cnamd.store.migrations import migrate, pending
from cnamd.store.pool import connect_once


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


async def migrate_database(url: str, timeout: float, *, demo: bool) -> None:
    """Apply pending migrations (and the demo data); StoreUnavailable if unreachable."""
    conn = await connect_once(url, timeout)
    try:
        await migrate(conn)
        if demo:
            await load_demo(conn)
    finally:
        await conn.close()


async def check_migrations(url: str, timeout: float) -> list[int]:
    """Versions not yet applied (for ``cnamd migrate --check``)."""
    conn = await connect_once(url, timeout)
    try:
        return [m.version for m in await pending(conn)]
    finally:
        await conn.close()
