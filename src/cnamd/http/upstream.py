"""``/api/operator/upstream``: the upstream scope's stored answers (issue #17), for
operators only: list them, purge one or all, pin one (kept until purged, with a
name given or the one stored), and import a provider's CSV into the scope.
Every change reaches every cache through the change log."""

from __future__ import annotations

from aiohttp import web

from cnamd.access import Duty, require
from cnamd.errors import InvalidRequest, NotFound
from cnamd.http.auth import principal
from cnamd.http.bodies import MAX_JSON_BYTES, BodyTooLarge, json_object
from cnamd.http.db import connection
from cnamd.http.family import Route
from cnamd.http.keys import SETTINGS, main_app
from cnamd.numbers import normalize_number
from cnamd.store import upstream as store
from cnamd.upstream.account import Account, parse
from cnamd.upstream.imports import check_source, read_csv
from cnamd.upstream.source import clean_name

__all__ = ["ROUTES"]

BASE = "/api/operator/upstream/answers"
_PIN_FIELDS = frozenset({"name"})
_POLICY_FIELDS = frozenset({"upstream", "accounts"})
_DAY = 86400.0


async def _operator(request: web.Request) -> None:
    require(await principal(request), Duty.MANAGE_UPSTREAM)


def _number(request: web.Request) -> str:
    return normalize_number(request.match_info["number"], field="number")


async def list_answers(request: web.Request) -> web.Response:
    await _operator(request)
    prefix = request.query.get("prefix", "")
    if prefix and not (prefix[:1] == "+" and prefix[1:].isdigit() and len(prefix) <= 16):
        raise InvalidRequest("prefix must be '+' and up to 15 digits", field="prefix")
    limit_text = request.query.get("limit", "100")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 10000:
        raise InvalidRequest("limit must be an integer from 1 to 10000", field="limit")
    async with connection(request) as conn:
        found = await store.listing(conn, prefix, int(limit_text))
    return web.json_response({"answers": [a.as_json() for a in found]})


async def purge_one(request: web.Request) -> web.Response:
    await _operator(request)
    number = _number(request)
    async with connection(request) as conn:
        if not await store.purge(conn, number):
            raise NotFound(f"no upstream answer for {number}", field="number")
    return web.Response(status=204)


async def purge_all(request: web.Request) -> web.Response:
    await _operator(request)
    if request.query.get("all") != "true":
        raise InvalidRequest("purging every upstream answer needs all=true", field="all")
    async with connection(request) as conn:
        deleted = await store.purge(conn, None)
    return web.json_response({"deleted": deleted})


async def pin(request: web.Request) -> web.Response:
    await _operator(request)
    number = _number(request)
    body = await json_object(request) if request.can_read_body else {}
    for key in body:
        if key not in _PIN_FIELDS:
            raise InvalidRequest(f"unknown field; allowed: {', '.join(_PIN_FIELDS)}", field=key)
    name = None
    if body.get("name") is not None:
        raw = body["name"]
        name = clean_name(raw, main_app(request)[SETTINGS].names.max_length)
        if name is None:
            raise InvalidRequest("name does not follow the name rule", field="name")
    async with connection(request) as conn:
        pinned = await store.pin(conn, number, name, "operator")
    if pinned is None:
        raise NotFound(f"no upstream answer for {number}; pin it with a name", field="number")
    return web.json_response(pinned.as_json())


async def import_csv(request: web.Request) -> web.Response:
    await _operator(request)
    source = check_source(request.query.get("source", "import"))
    days_text = request.query.get("ttl_days", "30")
    try:
        days = float(days_text)
    except ValueError:
        days = -1.0
    if not 0 < days <= 3650:
        raise InvalidRequest("ttl_days must be a number of days from 0 to 3650", field="ttl_days")
    if (request.content_length or 0) > MAX_JSON_BYTES:
        raise BodyTooLarge(f"the CSV passes {MAX_JSON_BYTES} bytes; use cnamd upstream import")
    try:
        text = (await request.read()).decode("utf-8")
    except web.HTTPRequestEntityTooLarge as exc:
        raise BodyTooLarge(f"the CSV passes {MAX_JSON_BYTES} bytes", field="body") from exc
    except UnicodeDecodeError as exc:
        raise InvalidRequest("the CSV is not UTF-8", field="body") from exc
    read = read_csv(
        text.splitlines(),
        source=source,
        ttl=days * _DAY,
        max_length=main_app(request)[SETTINGS].names.max_length,
    )
    async with connection(request) as conn:
        imported = await store.save_all(conn, read.answers)
    rejected = [{"line": line, "reason": reason} for line, reason in read.rejected[:100]]
    return web.json_response(
        {"imported": imported, "rejected": len(read.rejected), "rejections": rejected}
    )


def _shown(policy: str, accounts: dict[str, list[str]]) -> dict[str, object]:
    """A tenant's policy as answered: its accounts' credential fields, never their values."""
    return {"upstream": policy, "accounts": {s: {"set": f} for s, f in accounts.items()}}


async def tenant_policies(request: web.Request) -> web.Response:
    await _operator(request)
    async with connection(request) as conn:
        found = await store.policies(conn)
    return web.json_response({"tenants": [{"tenant": t} | _shown(p, a) for t, p, a in found]})


def _accounts(request: web.Request, raw: object) -> dict[str, Account]:
    """``accounts``: source name -> credentials, each source a configured one."""
    if not isinstance(raw, dict):
        raise InvalidRequest(
            "accounts must be an object: source name -> credentials", field="accounts"
        )
    sources = {s.name: s for s in main_app(request)[SETTINGS].upstream.sources}
    accounts = {}
    for name, given in raw.items():
        source = sources.get(name)
        if source is None:
            known = ", ".join(sources) or "none configured"
            raise InvalidRequest(
                f"no upstream source {name[:64]!r}; known: {known}", field=f"accounts.{name[:64]}"
            )
        accounts[name] = parse(source, given, f"accounts.{name}")
    return accounts


async def set_tenant_policy(request: web.Request) -> web.Response:
    """The tenant's whole policy. ``{"upstream": "off"}``: its lookups never reach the
    upstream scope; ``"on"`` (the default): the configured sources, as for everyone,
    with ``accounts`` (source name -> credentials) used in place of the deployment's."""
    await _operator(request)
    body = await json_object(request)
    for key in body:
        if key not in _POLICY_FIELDS:
            raise InvalidRequest("unknown field; allowed: upstream, accounts", field=key)
    policy = body.get("upstream", "on")
    if policy not in ("on", "off"):
        raise InvalidRequest("upstream must be 'on' or 'off'", field="upstream")
    accounts = _accounts(request, body.get("accounts", {}))
    slug = request.match_info["tenant"]
    async with connection(request) as conn:
        stored = {name: account.as_json() for name, account in accounts.items()}
        if not await store.set_policy(conn, slug, policy, stored):
            raise NotFound(f"no tenant {slug[:64]!r}", field="tenant")
    shown = {name: account.set_fields() for name, account in accounts.items()}
    return web.json_response({"tenant": slug} | _shown(policy, shown))


ROUTES: tuple[Route, ...] = (
    ("GET", "/api/operator/upstream/tenants", tenant_policies),
    ("PUT", "/api/operator/upstream/tenants/{tenant}", set_tenant_policy),
    ("GET", BASE, list_answers),
    ("DELETE", BASE, purge_all),
    ("POST", f"{BASE}/import", import_csv),
    ("DELETE", f"{BASE}/{{number}}", purge_one),
    ("PUT", f"{BASE}/{{number}}/pin", pin),
)
