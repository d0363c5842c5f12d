"""What every ``cnamd`` command shares: settings flags, the event loop, a store
connection and exit codes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnamd import logs
from cnamd.errors import ReadOnlyStore, StoreUnavailable
from cnamd.settings import Settings, load

if TYPE_CHECKING:
    import asyncpg

EXIT_USAGE = 2

if TYPE_CHECKING:
    #: the ``cnamd`` subcommands' parser that each command group's ``add_parsers`` adds to
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

# flag -> setting, one to one (uvicorn's habit); anything else through --set
NAMED_FLAGS = {
    "http_listen": "http.listen",
    "sip_listen": "sip.listen",
    "database_url": "database.url",
    "embedded_dir": "database.embedded_dir",
    "log_level": "log.level",
    "log_format": "log.format",
    "workers": "server.workers",
    "snapshot": "cache.snapshot_path",
}


def with_settings(p: argparse.ArgumentParser) -> None:
    """The flags of every command that reads the settings."""
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML settings file (see config/cnamd.example.toml)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any setting; repeatable",
    )
    p.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL URL; empty starts the embedded PostgreSQL",
    )
    p.add_argument("--embedded-dir", metavar="DIR", help="embedded PostgreSQL data directory")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["kv", "json"])


def settings_from(args: argparse.Namespace) -> Settings:
    """File < environment < flags: the settings a command was started with."""
    overrides = list(args.set)
    for attr, name in NAMED_FLAGS.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides.append(f"{name}={value}")
    return load(args.config, overrides=overrides)


#: what a command does once its settings are read: the exit code
Work = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


def configured(work: Work) -> Callable[[argparse.Namespace], int]:
    """A command's handler: its settings read (file < environment < flags), logging
    set up from them, then ``work`` run on the event loop."""

    def handler(args: argparse.Namespace) -> int:
        settings = settings_from(args)
        logs.configure(settings.log)
        return run(lambda: work(settings, args))

    return handler


def run(coro_fn: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run on uvloop where installed: the SIP front's speed depends on it."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.run(coro_fn())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro_fn())


@contextlib.asynccontextmanager
async def store(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """One connection to a current schema; the embedded server is attached to
    (or started) as ``cnamd migrate`` does, so this works beside a running daemon."""
    import asyncpg

    from cnamd.database import DatabaseServer, writes_url
    from cnamd.store.migrations import pending
    from cnamd.store.pool import connect_once

    async with DatabaseServer(settings.database) as url:
        # store commands write (imports, keys, tenants): to the primary if one is named
        conn = await connect_once(writes_url(settings, url), settings.database.connect_timeout)
        try:
            missing = await pending(conn)
            if missing:
                raise StoreUnavailable(
                    f"the schema lacks migrations {', '.join(str(m.version) for m in missing)};"
                    " run cnamd migrate",
                    field="database",
                )
            try:
                yield conn
            except asyncpg.ReadOnlySQLTransactionError as exc:
                raise ReadOnlyStore(
                    "the database is a read-only hot standby; store commands that write go to"
                    " the primary (database.primary_url)",
                    field="database.primary_url",
                ) from exc
        finally:
            await conn.close()


def one_line(exc: Exception) -> str:
    """An error as one line for stderr: an OSError's file and reason, else its first line."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
