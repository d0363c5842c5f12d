"""``cnamd apikey | tenant``: keys and tenants without SQL (store/apikeys.py, store/tenants.py)."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cnamd.cli.command import EXIT_USAGE, configured, store, with_settings
from cnamd.errors import CnamdError
from cnamd.settings import Settings

if TYPE_CHECKING:
    import asyncpg

    from cnamd.cli.command import Subparsers
    from cnamd.model import Role
    from cnamd.store.apikeys import KeyInfo


def add_parsers(sub: Subparsers) -> None:
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
    for parser in (apikey, tenant):
        parser.set_defaults(handler=configured(_admin))


async def _admin(settings: Settings, args: argparse.Namespace) -> int:
    """``cnamd apikey ...`` and ``cnamd tenant ...``; any CnamdError is one line and exit 2."""
    try:
        async with store(settings) as conn:
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
    from cnamd.access import Principal
    from cnamd.model import Role
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
