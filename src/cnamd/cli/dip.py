"""``cnamd dip``: one SIP dip, as an SBC sends it (sip/dip_client.py)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from cnamd.cli.command import EXIT_USAGE, run

if TYPE_CHECKING:
    from cnamd.cli.command import Subparsers


def add_parsers(sub: Subparsers) -> None:
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
    dip.set_defaults(handler=lambda args: run(lambda: _dip(args)))


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
