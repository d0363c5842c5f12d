"""``cnamd import | export``: one owner's phone book as CSV (store/imports.py)."""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cnamd.cli.command import EXIT_USAGE, configured, one_line, store, with_settings
from cnamd.errors import CnamdError
from cnamd.settings import Settings

if TYPE_CHECKING:
    from cnamd.cli.command import Subparsers
    from cnamd.phonebook_csv import Rejected

_SCOPE_HELP = "whose phone book: global, enterprise:E, usergroup:E:G or user:E:U"


def add_parsers(sub: Subparsers) -> None:
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
    imp.set_defaults(handler=configured(_import))

    exp = sub.add_parser(
        "export",
        help="write one owner's names as CSV",
        description="Write the phone book of --scope as CSV (phone,name,prefix), in phone"
        " order, from one snapshot; importing it again changes nothing.",
    )
    with_settings(exp)
    exp.add_argument("file", nargs="?", type=Path, metavar="FILE", help="output (default stdout)")
    exp.add_argument("--scope", required=True, metavar="SPEC", help=_SCOPE_HELP)
    exp.set_defaults(handler=configured(_export))


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

    from cnamd.bulk_workers import exit_with
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
                    jobs, mp_context=context, initializer=exit_with, initargs=(os.getpid(),)
                )
            async with store(settings) as conn:
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
        print(f"cnamd: import {path}: {one_line(exc)}; nothing imported", file=sys.stderr)
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


async def _export(settings: Settings, args: argparse.Namespace) -> int:
    from cnamd.phonebook_csv import HEADER, format_entry
    from cnamd.store.imports import export_entries
    from cnamd.store.owners import owner_from_spec

    path: Path | None = None if args.file in (None, Path("-")) else args.file
    # written aside and renamed at the end: a failed export leaves no half file
    partial = path.with_name(f".{path.name}.partial") if path else None
    count = 0
    try:
        async with store(settings) as conn:
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
        print(f"cnamd: export: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if partial:
            partial.unlink(missing_ok=True)
    print(f"exported={count}", file=sys.stderr)
    return 0
