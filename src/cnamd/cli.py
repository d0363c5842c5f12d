"""``cnamd serve | migrate | version``: flags -> Settings -> server; errors -> exit code.

Exit codes: 0 done, 2 a setting or the database is wrong (one line on stderr
naming the cause), 1 anything unexpected.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from cnamd import __version__, logs
from cnamd.errors import CnamdError, ConfigError, StoreUnavailable
from cnamd.settings import Settings, from_layer, load

EXIT_USAGE = 2

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnamd",
        description="Caller-name (CNAM) lookup daemon: answers SIP dips and HTTP lookups "
        "from an in-memory cache kept fresh from PostgreSQL.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def with_settings(p: argparse.ArgumentParser) -> None:
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

    serve = sub.add_parser(
        "serve",
        help="run the daemon",
        description="Run the daemon: migrate, load the cache, answer lookups.",
    )
    with_settings(serve)
    serve.add_argument("--http-listen", metavar="HOST:PORT", help="HTTP API address")
    serve.add_argument("--sip-listen", metavar="HOST:PORT[,...]", help="SIP UDP/TCP addresses")
    serve.add_argument("--workers", metavar="N", help="worker processes")
    serve.add_argument("--snapshot", metavar="FILE", help="cache snapshot file ('' disables)")
    serve.add_argument(
        "--demo", action="store_true", help="load the demo tenant and names (idempotent)"
    )

    mig = sub.add_parser(
        "migrate",
        help="apply database migrations and exit",
        description="Apply pending migrations, each in one transaction.",
    )
    with_settings(mig)
    mig.add_argument(
        "--check", action="store_true", help="only report pending migrations; exit 1 if any"
    )

    sub.add_parser("version", help="print the version")
    # started by the supervisor with its sockets and settings; not for people
    sub.add_parser("worker")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = list(args.set)
    for attr, name in NAMED_FLAGS.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides.append(f"{name}={value}")
    return load(args.config, overrides=overrides)


def _run(coro_fn: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run on uvloop where installed: the SIP front's speed depends on it."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.run(coro_fn())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro_fn())


async def _serve(settings: Settings, demo: bool) -> int:
    from cnamd.server import Server
    from cnamd.supervisor import Supervisor, worker_count

    if worker_count(settings) == 1:
        await Server(settings, demo=demo).run()
    else:
        await Supervisor(settings, demo=demo).run()
    return 0


async def _work() -> int:
    """A child of the supervisor, serving on the sockets it inherited."""
    from cnamd.server import Server, WorkerSpec
    from cnamd.supervisor import WORKER_ENV

    spec = json.loads(os.environ[WORKER_ENV])
    settings = from_layer(spec["settings"])
    logs.configure(settings.log)
    worker = WorkerSpec(spec["index"], spec["database_url"], spec["sockets"], spec["heartbeat_fd"])
    await Server(settings, worker=worker).run()
    return 0


async def _migrate(settings: Settings, check: bool) -> int:
    from cnamd.server import check_migrations, migrate_database, prepare_database
    from cnamd.store.embedded import EmbeddedPostgres

    embedded = (
        None if settings.database.url else EmbeddedPostgres(Path(settings.database.embedded_dir))
    )
    try:
        url = await prepare_database(settings, embedded)
        if check:
            missing = await check_migrations(url, settings.database.connect_timeout)
            print("pending: " + (", ".join(map(str, missing)) or "none"))
            return 1 if missing else 0
        await migrate_database(url, settings.database.connect_timeout, demo=False)
        print("schema current")
        return 0
    finally:
        if embedded is not None:
            await embedded.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"cnamd {__version__}")
        return 0
    try:
        if args.command == "worker":
            return _run(_work)
        settings = settings_from(args)
        logs.configure(settings.log)
        if args.command == "serve":
            return _run(lambda: _serve(settings, args.demo))
        return _run(lambda: _migrate(settings, args.check))
    except (ConfigError, StoreUnavailable) as exc:
        print(f"cnamd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CnamdError as exc:
        print(f"cnamd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except Exception:
        logging.getLogger("cnamd").exception("cnamd stopped by an unexpected error")
        return 1
    finally:
        logging.shutdown()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
