"""``cnamd serve | migrate | version``: flags -> Settings -> server; errors -> exit code.

Exit codes: 0 done, 2 a setting or the database is wrong (one line on stderr
naming the cause), 1 anything unexpected.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import datetime
import json
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cnamd import __version__, logs
from cnamd.errors import CnamdError, ConfigError, ReadOnlyStore, StoreUnavailable
from cnamd.settings import Settings, from_layer, load

if TYPE_CHECKING:
    import asyncpg

    from cnamd.model import Role
    from cnamd.phonebook_csv import Rejected
    from cnamd.store.apikeys import KeyInfo

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

    _add_bulk_parsers(sub, with_settings)
    _add_admin_parsers(sub, with_settings)
    _add_dip_parser(sub)
    _add_approval_parsers(sub, with_settings)

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


async def _serve(
    settings: Settings, demo: bool, reload_settings: Callable[[], Settings] | None = None
) -> int:
    from cnamd.server import Server
    from cnamd.supervisor import Supervisor, worker_count

    if worker_count(settings) == 1:
        await Server(settings, demo=demo, reload_settings=reload_settings).run()
    else:
        await Supervisor(settings, demo=demo, reload_settings=reload_settings).run()
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


async def _migrate(settings: Settings, check: bool) -> int:
    from cnamd.server import check_migrations, migrate_database, prepare_database
    from cnamd.store.embedded import EmbeddedPostgres

    embedded = (
        None if settings.database.url else EmbeddedPostgres(Path(settings.database.embedded_dir))
    )
    try:
        # migrations are writes: to the primary when database.url is a standby
        url = settings.database.primary_url or await prepare_database(settings, embedded)
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
        if args.command == "dip":
            return _run(lambda: _dip(args))
        settings = settings_from(args)
        logs.configure(settings.log)
        if args.command == "serve":
            # SIGHUP re-reads the same sources: the file, the environment, the flags
            return _run(lambda: _serve(settings, args.demo, lambda: settings_from(args)))
        if args.command == "import":
            return _run(lambda: _import(settings, args))
        if args.command == "export":
            return _run(lambda: _export(settings, args))
        if args.command in ("approve", "reject"):
            return _run(lambda: _approval(settings, args))
        if args.command in ("apikey", "tenant"):
            return _run(lambda: _admin(settings, args))
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


# --- cnamd import / export: one owner's phone book as CSV (store/imports.py) ---

_SCOPE_HELP = "whose phone book: global, enterprise:E, usergroup:E:G or user:E:U"


def _add_bulk_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    with_settings: Callable[[argparse.ArgumentParser], None],
) -> None:
    imp = sub.add_parser(
        "import",
        help="merge a phone-book CSV into one owner's names",
        description="Merge FILE (header phone,name[,prefix]) into the phone book of --scope,"
        " all in one transaction: a failed or killed import changes nothing. National"
        " numbers are read in the tenant's region; the last row for a phone wins. Prints"
        " one summary line; rows not imported go to the --report CSV. Exit 0 even when"
        " rows were rejected.",
    )
    with_settings(imp)
    imp.add_argument("file", type=Path, metavar="FILE", help="CSV file, UTF-8")
    imp.add_argument("--scope", required=True, metavar="SPEC", help=_SCOPE_HELP)
    imp.add_argument(
        "--replace",
        action="store_true",
        help="also delete the owner's entries FILE does not list (not done if a row is rejected)",
    )
    imp.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="processes validating rows (numbers are the slow part); default: one per CPU"
        " core for a file over 1 MiB, else 0: validate in this process",
    )
    imp.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="CSV of rows not imported (line,phone,name,reason), written only if there are"
        " any; default: next to FILE, named FILE's stem + .rejected.csv",
    )

    exp = sub.add_parser(
        "export",
        help="write one owner's names as CSV",
        description="Write the phone book of --scope as CSV (phone,name,prefix), in phone"
        " order, from one snapshot; importing it again changes nothing.",
    )
    with_settings(exp)
    exp.add_argument("file", nargs="?", type=Path, metavar="FILE", help="output (default stdout)")
    exp.add_argument("--scope", required=True, metavar="SPEC", help=_SCOPE_HELP)


@contextlib.asynccontextmanager
async def _store(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """One connection to a current schema; the embedded server is attached to
    (or started) as ``cnamd migrate`` does, so this works beside a running daemon."""
    import asyncpg

    from cnamd.server import prepare_database
    from cnamd.store.embedded import EmbeddedPostgres
    from cnamd.store.migrations import pending
    from cnamd.store.pool import connect_once

    embedded = (
        None if settings.database.url else EmbeddedPostgres(Path(settings.database.embedded_dir))
    )
    try:
        # store commands write (imports, keys, tenants): to the primary if one is named
        url = settings.database.primary_url or await prepare_database(settings, embedded)
        conn = await connect_once(url, settings.database.connect_timeout)
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
    finally:
        if embedded is not None:
            await embedded.stop()


class _Rejections:
    """The report CSV, created at the first row not imported (none: no file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self._writer: Any = None

    def write(self, row: Rejected) -> None:
        if self._writer is None:
            self._file = self.path.open("w", encoding="utf-8", newline="")
            self._writer = csv.writer(self._file, lineterminator="\n")
            self._writer.writerow(("line", "phone", "name", "reason"))
        self._writer.writerow((row.line, row.phone, row.name, row.reason))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _Progress:
    """``N rows read, R rows/s`` rewritten in place on a terminal's stderr.

    Hand-rolled: one counter line is a dozen lines here, not worth tqdm or
    rich as a dependency of the daemon's package. Checks the clock once per
    8192 rows, so it costs nothing measurable.
    """

    def __init__(self) -> None:
        self.started = self.shown = time.monotonic()

    def count(self, rows: Iterable[Any]) -> Iterator[Any]:
        read = 0
        for read, row in enumerate(rows, 1):
            if not read & 8191 and time.monotonic() - self.shown >= 0.25:
                self.show(
                    f"{read:,} rows read, {read / (time.monotonic() - self.started):,.0f} rows/s"
                )
            yield row
        self.show(f"{read:,} rows read; merging")

    def show(self, text: str) -> None:
        self.shown = time.monotonic()
        sys.stderr.write(f"\r\x1b[K{text}")
        sys.stderr.flush()

    def clear(self) -> None:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


async def _import(settings: Settings, args: argparse.Namespace) -> int:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from cnamd.phonebook_csv import read_lines
    from cnamd.store.imports import import_entries
    from cnamd.store.owners import owner_from_spec

    path: Path = args.file
    report_path: Path = args.report or path.with_name(path.stem + ".rejected.csv")
    progress = _Progress() if sys.stderr.isatty() else None
    rejections = _Rejections(report_path)
    executor = None
    try:
        # utf-8-sig drops a spreadsheet's BOM; an undecodable byte becomes U+FFFD
        # and fails that row's name or number rule instead of the whole import
        with path.open(encoding="utf-8-sig", errors="replace", newline="") as source:
            jobs = args.jobs
            if jobs is None:
                big = os.fstat(source.fileno()).st_size > 1 << 20
                jobs = (os.cpu_count() or 1) if big else 0
            if jobs > 0:
                # forkserver: workers forked from a clean process, not from this
                # one with its event loop, database socket and threads
                context = multiprocessing.get_context("forkserver")
                executor = ProcessPoolExecutor(
                    jobs, mp_context=context, initializer=_exit_with, initargs=(os.getpid(),)
                )
            async with _store(settings) as conn:
                owner = await owner_from_spec(conn, args.scope)
                rows = read_lines(source)
                report = await import_entries(
                    conn,
                    owner,
                    progress.count(rows) if progress else rows,
                    max_name_length=settings.names.max_length,
                    replace=args.replace,
                    on_reject=rejections.write,
                    executor=executor,
                )
    except (CnamdError, OSError) as exc:
        print(f"cnamd: import {path}: {_one_line(exc)}; nothing imported", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
        rejections.close()
        if progress:
            progress.clear()
    where = f" report={report_path}" if report.rejected or report.superseded else ""
    print(f"{report.summary()}{where}")
    if report.replace_refused:
        print(
            "cnamd: --replace deleted nothing since rows were rejected; fix them, import again",
            file=sys.stderr,
        )
    return 0


def _exit_with(parent: int) -> None:
    """Pool worker initializer: exit once ``parent`` is gone.

    The workers of a killed import would otherwise wait forever on a queue
    whose other end they hold themselves.
    """

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


async def _export(settings: Settings, args: argparse.Namespace) -> int:
    from cnamd.phonebook_csv import HEADER, format_entry
    from cnamd.store.imports import export_entries
    from cnamd.store.owners import owner_from_spec

    path: Path | None = None if args.file in (None, Path("-")) else args.file
    # written aside and renamed at the end: a failed export leaves no half file
    partial = path.with_name(f".{path.name}.partial") if path else None
    count = 0
    try:
        async with _store(settings) as conn:
            owner = await owner_from_spec(conn, args.scope)
            with (
                partial.open("w", encoding="utf-8", newline="")
                if partial
                else contextlib.nullcontext(sys.stdout)
            ) as out:
                out.write(HEADER)
                async for entry in export_entries(conn, owner):
                    out.write(format_entry(entry))
                    count += 1
        if partial and path:
            partial.replace(path)
    except (CnamdError, OSError) as exc:
        print(f"cnamd: export: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if partial:
            partial.unlink(missing_ok=True)
    print(f"exported={count}", file=sys.stderr)
    return 0


def _one_line(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


# --- cnamd apikey / tenant: keys and tenants without SQL (store/apikeys.py, store/tenants.py) ---


def _add_admin_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    with_settings: Callable[[argparse.ArgumentParser], None],
) -> None:
    apikey = sub.add_parser(
        "apikey",
        help="create, list and revoke API keys",
        description="Manage API keys; works beside a running daemon.",
    )
    actions = apikey.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="create a key and print its token once",
        description="Create a key. The token KEYID.SECRET is printed once, alone on the last"
        " line; only a hash of the secret is stored.",
    )
    with_settings(create)
    create.add_argument("--role", required=True, metavar="ROLE", help="user, partner or operator")
    create.add_argument("--user", metavar="U|E:U", help="a user key's user")
    create.add_argument(
        "--enterprise",
        action="append",
        default=[],
        metavar="E",
        help="a partner key reaches this enterprise, its usergroups and users; repeatable",
    )
    create.add_argument(
        "--usergroup",
        action="append",
        default=[],
        metavar="E:G",
        help="a partner key reaches this usergroup; repeatable",
    )
    create.add_argument("--label", default="", metavar="TEXT", help="what the key is for")
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument(
        "--expires", metavar="ISO8601", help="expiry with its UTC offset, e.g. 2030-01-01T00:00Z"
    )
    expiry.add_argument("--expires-in", type=float, metavar="DAYS", help="expiry in DAYS days")
    listing = actions.add_parser(
        "list", help="list keys (never their secrets)", description="One line per key."
    )
    with_settings(listing)
    listing.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    revoke = actions.add_parser(
        "revoke", help="revoke a key", description="Revoke a key; it stays listed."
    )
    with_settings(revoke)
    revoke.add_argument("key_id", metavar="KEYID")

    tenant = sub.add_parser(
        "tenant", help="create and list tenants", description="Manage tenants (enterprises)."
    )
    tenant_actions = tenant.add_subparsers(dest="action", metavar="ACTION", required=True)
    new = tenant_actions.add_parser(
        "create", help="create a tenant", description="Create a tenant; its slug is permanent."
    )
    with_settings(new)
    new.add_argument("slug", metavar="SLUG", help="a-z 0-9 _ -, up to 63")
    new.add_argument("--name", required=True, metavar="NAME")
    new.add_argument(
        "--region", required=True, metavar="CC", help="ISO 3166 alpha-2, e.g. DE or US"
    )
    new.add_argument(
        "--network",
        action="append",
        default=[],
        metavar="CIDR",
        help="a SIP source network of the tenant; repeatable",
    )
    tenant_list = tenant_actions.add_parser("list", help="list tenants")
    with_settings(tenant_list)


async def _admin(settings: Settings, args: argparse.Namespace) -> int:
    """``cnamd apikey ...`` and ``cnamd tenant ...``; any CnamdError is one line and exit 2."""
    try:
        async with _store(settings) as conn:
            if args.command == "tenant":
                return await _tenant_command(conn, args)
            return await _apikey_command(conn, args)
    except CnamdError as exc:
        print(f"cnamd: {exc}", file=sys.stderr)
        return EXIT_USAGE


async def _apikey_command(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    from cnamd.store import apikeys

    if args.action == "create":
        info, token = await apikeys.create_key(
            conn,
            _role(args.role),
            user=args.user,
            enterprises=args.enterprise,
            usergroups=args.usergroup,
            label=args.label,
            expires_at=_expiry(args.expires, args.expires_in),
        )
        print(f"created {_describe(info)}")
        print("the token below is shown this once; only its hash is stored:")
        print(token)
    elif args.action == "list":
        keys = await apikeys.list_keys(conn)
        if args.json:
            print(json.dumps([k.to_json() for k in keys], indent=2))
        else:
            _print_table(keys)
    else:
        info = await apikeys.revoke_key(conn, args.key_id)
        assert info.revoked_at is not None
        print(f"revoked {info.key_id} at {info.revoked_at.isoformat()}")
    return 0


def _role(text: str) -> Role:
    from cnamd.errors import InvalidRequest
    from cnamd.model import Role

    try:
        return Role(text)
    except ValueError:
        raise InvalidRequest(
            f"{text!r} is not a role; use {', '.join(r.value for r in Role)}", field="role"
        ) from None


def _expiry(text: str | None, days: float | None) -> datetime.datetime | None:
    """``--expires`` (with its UTC offset: a bare local time is ambiguous) or ``--expires-in``."""
    from cnamd.errors import InvalidRequest

    if days is not None:
        return datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)
    if text is None:
        return None
    try:
        at = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"{text!r} is not an ISO 8601 time", field="expires") from None
    if at.tzinfo is None:
        raise InvalidRequest(f"{text!r} needs a UTC offset, e.g. Z or +01:00", field="expires")
    return at


def _reach(info: KeyInfo) -> str:
    if info.user is not None:
        return f"user {info.enterprise}:{info.user}"
    return "grants " + ",".join(info.grants) if info.grants else "everything"


def _state(info: KeyInfo) -> str:
    if info.revoked_at is not None:
        return "revoked"
    if info.expires_at is not None and info.expires_at <= datetime.datetime.now(datetime.UTC):
        return "expired"
    return "live"


def _describe(info: KeyInfo) -> str:
    expires = info.expires_at.isoformat() if info.expires_at else "never"
    label = f", label {info.label!r}" if info.label else ""
    return f"{info.role.value} key {info.key_id}: {_reach(info)}, expires {expires}{label}"


def _print_table(keys: Sequence[KeyInfo]) -> None:
    def stamp(at: datetime.datetime | None) -> str:
        return at.strftime("%Y-%m-%dT%H:%MZ") if at else "-"

    rows = [("KEY_ID", "ROLE", "STATE", "EXPIRES", "LAST_USED", "REACH", "LABEL")]
    rows += [
        (
            k.key_id,
            k.role.value,
            _state(k),
            stamp(k.expires_at),
            stamp(k.last_used_at),
            _reach(k),
            k.label,
        )
        for k in keys
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())


async def _tenant_command(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    from cnamd.model import Principal, Role
    from cnamd.store import tenants

    operator = Principal("cli", Role.OPERATOR)
    if args.action == "create":
        spec = tenants.tenant_spec(args.slug, args.name, args.region, args.network)
        made = await tenants.create_tenant(conn, operator, spec)
        networks = ", ".join(made.networks) or "none"
        print(f"created tenant {made.slug}: {made.name}, region {made.region}, networks {networks}")
    else:
        for t in await tenants.list_tenants(conn, operator):
            print(f"{t.slug}\t{t.region}\t{t.name}\t{','.join(t.networks)}")
    return 0


# --- cnamd dip: one SIP dip, as an SBC sends it (sip/dip_client.py) ---


def _add_dip_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dip = sub.add_parser(
        "dip",
        help="ask a CNAM server for a caller's name with one SIP INVITE",
        description="Send the INVITE dip an SBC sends and print the answer: the status,"
        " and the name a 302 carries. Exit 0: a name; 1: no name; 2: no answer.",
    )
    dip.add_argument("calling", metavar="CALLING", help="the caller's number, e.g. +492216698712")
    dip.add_argument(
        "--to",
        default="+10000000000",
        metavar="CALLED",
        help="the called number (its owner gives the tenant/user context)",
    )
    dip.add_argument(
        "--server", default="127.0.0.1:5060", metavar="HOST:PORT", help="the SIP server"
    )
    dip.add_argument("--tcp", action="store_true", help="over TCP instead of UDP")
    dip.add_argument("--timeout", type=float, default=2.0, metavar="SECONDS")


async def _dip(args: argparse.Namespace) -> int:
    from cnamd.sip.dip_client import dip

    try:
        answer = await dip(args.server, args.calling, args.to, tcp=args.tcp, timeout=args.timeout)
    except TimeoutError:
        print(f"cnamd: {args.server}: no answer within {args.timeout:g} s", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"cnamd: {args.server}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{answer.status} {answer.reason}" + (f": {answer.name}" if answer.name else ""))
    return 0 if answer.name else 1


# --- cnamd approve / reject: operators' verdict on CNAM records (store/cnam_records.py) ---


def _add_approval_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    with_settings: Callable[[argparse.ArgumentParser], None],
) -> None:
    approve = sub.add_parser(
        "approve",
        help="list pending CNAM records, or approve some",
        description="Without IDs, list the CNAM records waiting for approval; with IDs, approve"
        " them: the numbers associated with each are served its name.",
    )
    with_settings(approve)
    approve.add_argument("ids", nargs="*", metavar="ID", help="record ids")
    reject = sub.add_parser(
        "reject",
        help="reject CNAM records with a reason",
        description="Reject CNAM records; a name one served is withdrawn from every cache.",
    )
    with_settings(reject)
    reject.add_argument("ids", nargs="+", metavar="ID", help="record ids")
    reject.add_argument("--reason", required=True, metavar="TEXT", help="shown to the tenant")


async def _approval(settings: Settings, args: argparse.Namespace) -> int:
    """``cnamd approve [ID...]`` and ``cnamd reject ID... --reason``; errors exit 2."""
    from cnamd.store import cnam_records

    try:
        async with _store(settings) as conn:
            if args.command == "approve" and not args.ids:
                found, _ = await cnam_records.list_records(
                    conn, None, approval=("pending",), value=None, limit=10000, offset=0
                )
                for r in found:
                    created = r.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
                    print(f"{r.id}\t{r.tenant}\t{created}\t{r.numbers}\t{r.value}")
                return 0
            for record_id in args.ids:
                if args.command == "approve":
                    done = await cnam_records.approve(conn, record_id)
                else:
                    done = await cnam_records.reject(conn, record_id, args.reason)
                print(f"{done.approval} {done.id} {done.value!r} ({done.tenant})")
    except CnamdError as exc:
        print(f"cnamd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
