"""``cnamd serve | migrate`` and the supervisor's ``worker``: the daemon's processes."""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING

from cnamd import logs
from cnamd.cli.command import configured, run, settings_from, with_settings
from cnamd.settings import Settings, from_layer

if TYPE_CHECKING:
    from cnamd.cli.command import Subparsers


def add_parsers(sub: Subparsers) -> None:
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
    serve.set_defaults(handler=configured(_serve))

    mig = sub.add_parser(
        "migrate",
        help="apply database migrations and exit",
        description="Apply pending migrations, each in one transaction.",
    )
    with_settings(mig)
    mig.add_argument(
        "--check", action="store_true", help="only report pending migrations; exit 1 if any"
    )
    mig.set_defaults(handler=configured(_migrate))

    # started by the supervisor with its sockets and settings; not for people
    sub.add_parser("worker").set_defaults(handler=lambda _args: run(_work))


async def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from cnamd.cpus import worker_count
    from cnamd.server import Server
    from cnamd.supervisor import Supervisor

    # SIGHUP re-reads the same sources: the file, the environment, the flags
    def reread() -> Settings:
        return settings_from(args)

    if worker_count(settings) == 1:
        await Server(settings, demo=args.demo, reload_settings=reread).run()
    else:
        await Supervisor(settings, demo=args.demo, reload_settings=reread).run()
    return 0


async def _work() -> int:
    """A child of the supervisor, serving on the sockets it inherited."""
    from cnamd.server import Server, WorkerSpec
    from cnamd.supervisor import WORKER_ENV

    spec = json.loads(os.environ[WORKER_ENV])
    settings = from_layer(spec["settings"])
    logs.configure(settings.log)
    worker = WorkerSpec(
        spec["index"],
        spec["database_url"],
        spec["sockets"],
        spec["heartbeat_fd"],
        spec.get("control_fd", -1),
        spec.get("snapshot_path", ""),
        spec.get("status_path", ""),
        spec.get("limits_fd", -1),
    )
    await Server(settings, worker=worker).run()
    return 0


async def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from cnamd.database import DatabaseServer, check_migrations, migrate_database, writes_url

    async with DatabaseServer(settings.database) as followed:
        # migrations are writes: to the primary when database.url is a standby
        url = writes_url(settings, followed)
        if args.check:
            missing = await check_migrations(url, settings.database.connect_timeout)
            print("pending: " + (", ".join(map(str, missing)) or "none"))
            return 1 if missing else 0
        await migrate_database(url, settings.database.connect_timeout, demo=False)
        print("schema current")
        return 0
