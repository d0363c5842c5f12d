"""``/api/confd/1.1/phone-numbers``: a tenant's phone numbers as seed 003 (wazo-confd) serves them.

Paths, bodies, status codes and headers follow the seed and wazo-confd, so
wazo-confd-client's ``phone_numbers`` command works with only its base URL
changed: ``POST`` answers 201 with ``Location``; ``PUT`` and ``DELETE`` 204;
``POST /ranges`` 201 with ``created``, ``links`` and ``total`` (every number
of the range the tenant holds, so an overlap skips the existing numbers but
counts them, as wazo-confd does); ``PUT /main`` 204 with the new main number's
``Location``; ``GET /main`` (wazo-confd has it too) the main number. Bodies
are read as wazo-confd reads them: fields it does not load (``uuid``,
``tenant_uuid``, ``main``, ``links``, cnamd's ``cnam``, anything unknown) are
ignored, because its client's ``update`` sends back the whole resource; a PUT
changes only the fields it sends. A duplicate number is 400, as there.

A range's answer lists every uuid however large the range (up to
``ranges.max_span`` numbers): a client that created them needs them all, and
100,000 numbers answer in well under 5 s (bench/bench_phone_numbers.py).
Errors are wazo-confd's body, a JSON list of messages (wazo-confd-client
joins it with ". " into the HTTP error's reason), worded as wazo-confd words
them: ``["Input Error - field 'number': ..."]``. Publishing, the ``cnam``
field and tenant selection are described in ``store/phone_numbers.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web

from cnamd import errors
from cnamd.errors import InvalidName, InvalidNumber, InvalidRequest
from cnamd.http.auth import principal
from cnamd.http.bodies import json_object
from cnamd.http.db import connection
from cnamd.http.errors import CHALLENGE, status_of
from cnamd.http.family import Route
from cnamd.http.keys import SETTINGS, main_app
from cnamd.http.tenant_header import TENANT_HEADER, select_tenant
from cnamd.store import phone_numbers
from cnamd.store.phone_numbers import NumberSpec, PublishRules, TenantRef

__all__ = ["BASE", "ROUTES", "error_shape"]

BASE = "/api/confd/1.1/phone-numbers"

_TRUE = frozenset({"true", "1", "yes", "on", "t", "y"})
_FALSE = frozenset({"false", "0", "no", "off", "f", "n"})
_MAX_QUERY_INT = 10**9

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: how wazo-confd (xivo-dao's errors) begins a message, by HTTP status
_KINDS = {
    400: "Input Error",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Resource Not Found",
    409: "Resource Error",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


def wazo_message(code: int, exc: errors.CnamdError) -> str:
    """One wazo-confd-style message: ``Input Error - field 'number': reason``."""
    kind = "Resource Error" if exc.status == "exists" else _KINDS.get(code, "Error")
    where = f"field '{exc.field}': " if exc.field else ""
    return f"{kind} - {where}{exc.reason}"


def error_shape(_request: web.Request, exc: errors.CnamdError) -> web.Response:
    """CnamdError as wazo-confd's body, a list of messages, instead of cnamd's object
    (every error of these routes, the input guard's included: http/errors.py)."""
    code = status_of(exc)
    response = web.json_response([wazo_message(code, exc)], status=code)
    if isinstance(exc, errors.Unauthorized):
        response.headers["WWW-Authenticate"] = CHALLENGE
    elif isinstance(exc, errors.TooManyRequests):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


# --- reading requests ---


def _json_type(value: object) -> str:
    return "null" if value is None else f"a JSON {type(value).__name__}"


def _number_spec(body: dict[str, Any], *, partial: bool) -> NumberSpec:
    """The fields of a POST (``partial`` False: ``number`` required) or PUT body."""
    given: set[str] = set()
    number = caller_id_name = user_uuid = None
    shared: bool | None = None
    if "number" in body or not partial:
        value = body.get("number")
        if not isinstance(value, str):
            what = "missing" if "number" not in body else f"{_json_type(value)}, not a string"
            raise InvalidNumber(f"number is {what}", field="number")
        number = phone_numbers.check_number(value)
        given.add("number")
    if "caller_id_name" in body:
        value = body["caller_id_name"]
        if value is not None and not isinstance(value, str):
            raise InvalidName(
                f"caller_id_name is {_json_type(value)}, not a string or null",
                field="caller_id_name",
            )
        caller_id_name = None if value is None else phone_numbers.check_caller_id_name(value)
        given.add("caller_id_name")
    if "shared" in body:
        value = body["shared"]
        if not isinstance(value, bool):
            raise InvalidRequest(
                f"shared is {_json_type(value)}, not true or false", field="shared"
            )
        shared = value
        given.add("shared")
    if "user_uuid" in body:
        value = body["user_uuid"]
        if value is not None and not isinstance(value, str):
            raise InvalidRequest(
                f"user_uuid is {_json_type(value)}, not a uuid string or null", field="user_uuid"
            )
        user_uuid = value
        given.add("user_uuid")
    return NumberSpec(number, caller_id_name, shared, user_uuid, frozenset(given))


def _string(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if isinstance(value, str):
        return value
    what = "missing" if name not in body else f"{_json_type(value)}, not a string"
    raise InvalidRequest(f"{name} is {what}", field=name)


def _query_bool(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise InvalidRequest(f"{name} must be true or false, not {raw[:40]!r}", field=name)


def _query_int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    text = raw.strip()
    value = int(text) if text.isascii() and text.isdigit() else -1
    if not 0 <= value <= _MAX_QUERY_INT:
        raise InvalidRequest(
            f"{name} must be an integer from 0 to {_MAX_QUERY_INT}, not {raw[:40]!r}", field=name
        )
    return value


def _exact_number(request: web.Request) -> str | None:
    """The ``number`` filter; a leading space is the ``+`` of an unencoded query."""
    raw = request.query.get("number")
    if raw is None:
        return None
    if raw[:1] == " " and raw[1:].isascii() and raw[1:].isdigit():
        return "+" + raw[1:]
    return raw


def _list_query(request: web.Request) -> phone_numbers.ListQuery:
    """wazo-confd's list parameters, its exact filters among them."""
    return phone_numbers.list_query(
        search=request.query.get("search"),
        order=request.query.get("order"),
        direction=request.query.get("direction"),
        limit=_query_int(request, "limit"),
        offset=_query_int(request, "offset") or 0,
        main=_query_bool(request, "main"),
        shared=_query_bool(request, "shared"),
        number=_exact_number(request),
        caller_id_name=request.query.get("caller_id_name"),
    )


def _rules(request: web.Request) -> PublishRules:
    settings = main_app(request)[SETTINGS]
    return PublishRules(settings.names.max_length, settings.directory.require_approval)


def _base(request: web.Request) -> str:
    """Where links point, as wazo-confd's ``url_for(..., _external=True)`` makes them:
    absolute. Computed once per request (yarl's ``origin()`` costs ~5 us a call)."""
    return f"{request.url.origin()}{BASE}/"


def _href(request: web.Request, number_uuid: str) -> str:
    return _base(request) + number_uuid


async def _tenant(request: web.Request, conn: asyncpg.Connection, *, manage: bool) -> TenantRef:
    """The request's tenant; ``manage``: the key must also be allowed to write there."""
    who = await principal(request)
    tenant = await select_tenant(conn, who, request.headers.get(TENANT_HEADER))
    if manage:
        phone_numbers.require_manager(who)
    return tenant


# --- handlers ---


async def list_numbers(request: web.Request) -> web.Response:
    """The tenant's numbers; ``recurse=true`` without ``Wazo-Tenant`` lists every
    tenant the key reaches whole, as wazo-confd lists a tenant and its sub-tenants."""
    who = await principal(request)
    query = _list_query(request)
    recurse = _query_bool(request, "recurse")
    max_length = main_app(request)[SETTINGS].names.max_length
    async with connection(request) as conn:
        tenants: list[int] | None
        if recurse and not request.headers.get(TENANT_HEADER, "").strip():
            tenants = phone_numbers.listed_tenants(who, None)
        else:
            tenants = [(await _tenant(request, conn, manage=False)).id]
        total, found = await phone_numbers.list_numbers(conn, tenants, query, max_length)
    base = _base(request)
    items = [n.to_json(base + n.uuid) for n in found]
    return web.json_response({"total": total, "items": items})


async def create_number(request: web.Request) -> web.Response:
    await principal(request)
    body = await json_object(request)
    async with connection(request) as conn:
        tenant = await _tenant(request, conn, manage=True)
        spec = _number_spec(body, partial=False)
        number = await phone_numbers.create_number(conn, tenant, spec, _rules(request))
    href = _href(request, number.uuid)
    return web.json_response(number.to_json(href), status=201, headers={"Location": href})


async def get_number(request: web.Request) -> web.Response:
    await principal(request)
    max_length = main_app(request)[SETTINGS].names.max_length
    async with connection(request) as conn:
        tenant = await _tenant(request, conn, manage=False)
        number = await phone_numbers.get_number(
            conn, tenant, request.match_info["uuid"], max_length
        )
    return web.json_response(number.to_json(_href(request, number.uuid)))


async def update_number(request: web.Request) -> web.Response:
    await principal(request)
    body = await json_object(request)
    async with connection(request) as conn:
        tenant = await _tenant(request, conn, manage=True)
        spec = _number_spec(body, partial=True)
        await phone_numbers.update_number(
            conn, tenant, request.match_info["uuid"], spec, _rules(request)
        )
    return web.Response(status=204)


async def delete_number(request: web.Request) -> web.Response:
    await principal(request)
    async with connection(request) as conn:
        tenant = await _tenant(request, conn, manage=True)
        await phone_numbers.delete_number(conn, tenant, request.match_info["uuid"])
    return web.Response(status=204)


async def create_range(request: web.Request) -> web.Response:
    await principal(request)
    body = await json_object(request)
    max_span = main_app(request)[SETTINGS].ranges.max_span
    async with connection(request) as conn:
        tenant = await _tenant(request, conn, manage=True)
        span = phone_numbers.number_range(
            _string(body, "start_number"), _string(body, "end_number"), max_span=max_span
        )
        result = await phone_numbers.create_range(conn, tenant, span)
    base = _base(request)
    return web.json_response(
        {
            "created": [{"uuid": u} for u in result.created],
            "links": [{"rel": "phone_numbers", "href": base + u} for u in result.numbers],
            "total": len(result.numbers),
        },
        status=201,
    )


async def get_main(request: web.Request) -> web.Response:
    await principal(request)
    max_length = main_app(request)[SETTINGS].names.max_length
    async with connection(request) as conn:
        tenant = await _tenant(request, conn, manage=False)
        number = await phone_numbers.get_main(conn, tenant, max_length)
    return web.json_response(number.to_json(_href(request, number.uuid)))


async def set_main(request: web.Request) -> web.Response:
    await principal(request)
    body = await json_object(request)
    async with connection(request) as conn:
        tenant = await _tenant(request, conn, manage=True)
        raw = _string(body, "phone_number_uuid")
        wanted = phone_numbers.canonical_uuid(raw)
        if wanted is None:
            raise InvalidRequest(
                f"phone_number_uuid {raw[:64]!r} is not a uuid", field="phone_number_uuid"
            )
        await phone_numbers.set_main(conn, tenant, wanted)
    return web.Response(status=204, headers={"Location": _href(request, wanted)})


# /ranges and /main come before /{uuid}, which would match them too
ROUTES: tuple[Route, ...] = (
    ("GET", BASE, list_numbers),
    ("POST", BASE, create_number),
    ("POST", f"{BASE}/ranges", create_range),
    ("GET", f"{BASE}/main", get_main),
    ("PUT", f"{BASE}/main", set_main),
    ("GET", f"{BASE}/{{uuid}}", get_number),
    ("PUT", f"{BASE}/{{uuid}}", update_number),
    ("DELETE", f"{BASE}/{{uuid}}", delete_number),
)
