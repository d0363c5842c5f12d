"""The ``cnamd`` command: one module per command group, each adding its parsers.

- ``serve``, ``migrate`` (and the supervisor's ``worker``): cli/serve.py
- ``import``, ``export``: cli/bulk.py
- ``apikey``, ``tenant``: cli/admin.py
- ``approve``, ``reject``: cli/approval.py
- ``dip``: cli/dip.py
- ``upstream``: cli/upstream.py
- ``version``: here

Exit codes: 0 done, 2 a setting or the database is wrong (one line on stderr
naming the cause), 1 anything unexpected.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from cnamd import __version__
from cnamd.cli import admin, approval, bulk, dip, serve, upstream
from cnamd.cli.command import EXIT_USAGE
from cnamd.errors import CnamdError, ConfigError, StoreUnavailable

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnamd",
        description="Caller-name (CNAM) lookup daemon: answers SIP dips and HTTP lookups "
        "from an in-memory cache kept fresh from PostgreSQL.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve.add_parsers(sub)
    bulk.add_parsers(sub)
    admin.add_parsers(sub)
    dip.add_parsers(sub)
    approval.add_parsers(sub)
    upstream.add_parsers(sub)
    sub.add_parser("version", help="print the version").set_defaults(handler=_version)
    return parser


def _version(_args: argparse.Namespace) -> int:
    print(f"cnamd {__version__}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
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
