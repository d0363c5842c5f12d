"""IntelePeer Atmosphere-compatible CNAM orders (seed 002).

``POST /_rest/v4/authenticate`` trades an API key id and secret for a token
valid 24 hours, sent bare as the seed shows (``Authorization: <token>``) or
as ``Bearer <token>`` (a ``KEYID.SECRET`` token works there too).
``POST``/``DELETE /_rest/v3/my/did/cnam`` queue an order and answer
``{"OrderID": n}`` at once; a background worker (order_worker.py) works it
off in batches. ``GET /_rest/v3/my/orders/{orderID}`` is cnamd's own path for
the order's progress: the vendor publishes the order shape but not where to
read it. Errors keep the vendor's ``{"code", "error"}`` body with the
seed's exact sentences.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from cnamd import errors
from cnamd.access import Principal
from cnamd.http.auth import (
    is_credential_text,
    known_in_memory,
    login_failed,
    over_budget,
    principal,
)
from cnamd.http.bodies import read_json
from cnamd.http.db import connection
from cnamd.http.errors import status_of
from cnamd.http.family import Route
from cnamd.http.keys import PRINCIPAL, SETTINGS, main_app
from cnamd.http.tenant_header import TENANT_HEADER, select_tenant
from cnamd.store import cnam_orders
from cnamd.store.phone_numbers import require_manager

__all__ = ["ROUTES", "error_shape"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ACCEPTED = {"application/json", "application/*", "*/*"}


def _error(code: int, message: str) -> web.Response:
    return web.json_response({"code": code, "error": message}, status=code)


def error_shape(_request: web.Request, exc: errors.CnamdError) -> web.Response:
    """CnamdError as the seed's ``{"code", "error"}``: 401 in its two words, 400 as 422."""
    if isinstance(exc, errors.Unauthorized):
        expired = exc.status == "session-expired"
        return _error(401, "Session Expired" if expired else "Unauthorized")
    code = status_of(exc)
    response = _error(422 if code == 400 else code, exc.reason)
    if isinstance(exc, errors.TooManyRequests):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def _json_only(handler: Handler) -> Handler:
    """406 for an Accept that takes no JSON, as the seed answers it."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        accept = request.headers.get("Accept", "").strip()
        if accept:
            kinds = {part.split(";")[0].strip().lower() for part in accept.split(",")}
            if not kinds & _ACCEPTED:
                return _error(406, "Not Acceptable")
        return await handler(request)

    return wrapped


async def _who(request: web.Request) -> Principal:
    """A session token from /_rest/v4/authenticate, or any API-key credential
    (which is also where a token that is not text is refused and counted).

    Seed 002 sends the token bare (``Authorization: <token>``); ``Bearer
    <token>`` works too. A bare ``KEYID.SECRET`` is read as its Bearer form.
    """
    header = request.headers.get("Authorization", "").strip()
    scheme, space, rest = header.partition(" ")
    if space and scheme.lower() == "bearer":
        token = rest.strip()
    elif header and not space and scheme.lower() not in ("bearer", "basic"):
        token = header
        if "." in token:
            bearer = request.clone(headers={**request.headers, "Authorization": f"Bearer {token}"})
            who = await principal(bearer)
            request[PRINCIPAL] = who
            return who
    else:
        return await principal(request)
    if not token or "." in token or not is_credential_text(token):
        return await principal(request)
    async with connection(request) as conn:
        who = await cnam_orders.session_principal(conn, token)
    request[PRINCIPAL] = who
    return who


async def _json(request: web.Request) -> Any:
    return await read_json(request, unreadable="The request body must be JSON.")


@_json_only
async def authenticate(request: web.Request) -> web.Response:
    """``{"username": KEYID, "password": SECRET}`` -> ``{"token"}`` valid 24 hours."""
    over = over_budget(request)
    body = await read_json(
        request, unreadable="The request body must be JSON.", check_strings=False
    )
    for name in ("username", "password"):
        if not isinstance(body, dict) or body.get(name) in (None, ""):
            raise errors.InvalidRequest(f"The '{name}' parameter is required.", field=name)
        if not isinstance(body[name], str):
            raise errors.InvalidRequest(
                f"The '{name}' parameter must be formatted as a(n) string.", field=name
            )
    username, password = body["username"], body["password"]
    token = None
    # over its failed-login budget, a source's guesses do not reach the database
    if (
        is_credential_text(username)
        and is_credential_text(password)
        and (not over or known_in_memory(request, username, password))
    ):
        async with connection(request) as conn:
            token = await cnam_orders.create_session(conn, username, password)
    if token is None:
        failed = errors.Unauthorized("unknown key or wrong secret", field="username")
        raise login_failed(request, over) or failed
    return web.json_response({"token": token})


async def _order(request: web.Request, *, adding: bool) -> web.Response:
    who = await _who(request)
    require_manager(who)
    settings = main_app(request)[SETTINGS]
    spec = cnam_orders.check_order(
        await _json(request),
        adding=adding,
        max_length=settings.names.max_length,
        max_numbers=settings.orders.max_numbers,
    )
    async with connection(request) as conn:
        tenant = await select_tenant(conn, who, request.headers.get(TENANT_HEADER))
        order_id = await cnam_orders.create_order(conn, tenant, spec, settings.orders.batch_size)
    return web.json_response({"OrderID": order_id})


@_json_only
async def add_cnam(request: web.Request) -> web.Response:
    """``POST /_rest/v3/my/did/cnam``: put ``cnam`` on the numbers (an order)."""
    return await _order(request, adding=True)


@_json_only
async def remove_cnam(request: web.Request) -> web.Response:
    """``DELETE /_rest/v3/my/did/cnam``: remove the CNAM service from the numbers (an order)."""
    return await _order(request, adding=False)


@_json_only
async def get_order(request: web.Request) -> web.Response:
    who = await _who(request)
    async with connection(request) as conn:
        tenant = await select_tenant(conn, who, request.headers.get(TENANT_HEADER))
        order = await cnam_orders.get_order(conn, tenant, request.match_info["order_id"])
    return web.json_response(order.to_json())


ROUTES: tuple[Route, ...] = (
    ("POST", "/_rest/v4/authenticate", authenticate),
    ("POST", "/_rest/v3/my/did/cnam", add_cnam),
    ("DELETE", "/_rest/v3/my/did/cnam", remove_cnam),
    ("GET", "/_rest/v3/my/orders/{order_id}", get_order),
)
