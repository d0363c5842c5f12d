"""``cnamd approve | reject``: operators' verdict on CNAM records (store/cnam_records.py)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from cnamd.cli.command import EXIT_USAGE, configured, store, with_settings
from cnamd.errors import CnamdError
from cnamd.settings import Settings

if TYPE_CHECKING:
    from cnamd.cli.command import Subparsers


def add_parsers(sub: Subparsers) -> None:
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
    for parser in (approve, reject):
        parser.set_defaults(handler=configured(_approval))


async def _approval(settings: Settings, args: argparse.Namespace) -> int:
    """``cnamd approve [ID...]`` and ``cnamd reject ID... --reason``; errors exit 2."""
    from cnamd.store import cnam_records

    try:
        async with store(settings) as conn:
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
