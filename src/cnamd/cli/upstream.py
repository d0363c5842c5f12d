"""``cnamd upstream``: the upstream scope's stored answers from the command line
(list, purge, pin, import a provider's CSV), beside a running daemon like the
other store commands; every change reaches the daemons' caches through the
change log."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnamd.cli.command import EXIT_USAGE, configured, store, with_settings
from cnamd.errors import CnamdError
from cnamd.numbers import normalize_number
from cnamd.settings import Settings
from cnamd.store import upstream as answers
from cnamd.upstream.imports import check_source, read_csv
from cnamd.upstream.source import clean_name

if TYPE_CHECKING:
    from cnamd.cli.command import Subparsers

_DAY = 86400.0


def add_parsers(sub: Subparsers) -> None:
    """``cnamd upstream list|purge|pin|import``."""
    group = sub.add_parser(
        "upstream",
        help="list, purge, pin and import upstream answers",
        description="The upstream scope's stored answers; works beside a running daemon.",
    )
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="stored answers, in number order")
    listing.add_argument("--prefix", default="", help="numbers starting with this (+1555)")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    purge = actions.add_parser("purge", help="delete one number's answer, or all of them")
    which = purge.add_mutually_exclusive_group(required=True)
    which.add_argument("number", nargs="?")
    which.add_argument("--all", action="store_true")
    pin = actions.add_parser("pin", help="keep a number's answer until purged")
    pin.add_argument("number")
    pin.add_argument("--name", help="the name to hold (default: the answer stored)")
    imp = actions.add_parser("import", help="a provider's CSV (phone,name) into the scope")
    imp.add_argument("file", type=Path)
    imp.add_argument("--source", default="import", help="the source name the answers carry")
    imp.add_argument("--ttl-days", type=float, default=30.0)
    for parser in (listing, purge, pin, imp):
        with_settings(parser)
    group.set_defaults(handler=configured(_upstream))


async def _upstream(settings: Settings, args: argparse.Namespace) -> int:
    """Carry out one ``cnamd upstream`` command; a CnamdError is one line and exit 2."""
    try:
        async with store(settings) as conn:
            return await _act(conn, args, settings.names.max_length)
    except CnamdError as exc:
        print(f"cnamd: {exc}", file=sys.stderr)
        return EXIT_USAGE


async def _act(conn: Any, args: argparse.Namespace, max_length: int) -> int:
    if args.action == "list":
        for answer in await answers.listing(conn, args.prefix, args.limit):
            if args.json:
                print(json.dumps(answer.as_json()))
            else:
                expires = answer.expires_at.isoformat() if answer.expires_at else "pinned"
                shown = answer.name if answer.name is not None else "(no name)"
                print(f"{answer.number}\t{shown}\t{answer.source}\t{expires}")
        return 0
    if args.action == "purge":
        number = None if args.all else normalize_number(args.number, field="number")
        print(f"deleted={await answers.purge(conn, number)}")
        return 0
    if args.action == "pin":
        number = normalize_number(args.number, field="number")
        name = None
        if args.name is not None:
            name = clean_name(args.name, max_length)
            if name is None:
                print("cnamd: --name does not follow the name rule", file=sys.stderr)
                return EXIT_USAGE
        pinned = await answers.pin(conn, number, name, "operator")
        if pinned is None:
            print(f"cnamd: no upstream answer for {number}; give --name", file=sys.stderr)
            return 1
        print(json.dumps(pinned.as_json()))
        return 0
    source = check_source(args.source)
    if not 0 < args.ttl_days <= 3650:
        print("cnamd: --ttl-days must be from 0 to 3650", file=sys.stderr)
        return EXIT_USAGE
    with args.file.open(encoding="utf-8", newline="") as fh:
        read = read_csv(fh, source=source, ttl=args.ttl_days * _DAY, max_length=max_length)
    imported = await answers.save_all(conn, read.answers)
    for line, reason in read.rejected[:20]:
        print(f"line {line}: {reason}", file=sys.stderr)
    print(f"imported={imported} rejected={len(read.rejected)}")
    return 0
