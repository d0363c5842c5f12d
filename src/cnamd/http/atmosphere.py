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
from cnamd.http.auth import known_in_memory, login_failed, over_budget, principal
from cnamd.http.db import connection
from cnamd.http.errors import STATUS_OF
from cnamd.http.keys import PRINCIPAL, SETTINGS
from cnamd.model import Principal
from cnamd.store import cnam_orders
from cnamd.store.phone_numbers import TENANT_HEADER, require_manager, select_tenant

__all__ = ["add_routes"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ACCEPTED = {"application/json", "application/*", "*/*"}


def _error(code: int, message: str) -> web.Response:
    return web.json_response({"code": code, "error": message}, status=code)


def _vendor_errors(handler: Handler) -> Handler:
    """406 for a non-JSON Accept; CnamdError as ``{"code", "error"}``."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        accept = request.headers.get("Accept", "").strip()
        if accept:
            kinds = {part.split(";")[0].strip().lower() for part in accept.split(",")}
            if not kinds & _ACCEPTED:
                return _error(406, "Not Acceptable")
        try:
            return await handler(request)
        except errors.CnamdError as exc:
            code = next(code for kind, code in STATUS_OF if isinstance(exc, kind))
            if isinstance(exc, errors.Unauthorized):
                expired = exc.status == "session-expired"
                return _error(401, "Session Expired" if expired else "Unauthorized")
            response = _error(422 if code == 400 else code, exc.reason)
            if isinstance(exc, errors.TooManyRequests):
                response.headers["Retry-After"] = str(exc.retry_after)
            return response

    return wrapped


async def _who(request: web.Request) -> Principal:
    """A session token from /_rest/v4/authenticate, or any API-key credential.

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
    if not token or "." in token:
        return await principal(request)
    async with connection(request) as conn:
        who = await cnam_orders.session_principal(conn, token)
    request[PRINCIPAL] = who
    return who


async def _json(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError as exc:
        raise errors.InvalidRequest("The request body must be JSON.", field="body") from exc


@_vendor_errors
async def authenticate(request: web.Request) -> web.Response:
    """``{"username": KEYID, "password": SECRET}`` -> ``{"token"}`` valid 24 hours."""
    over = over_budget(request)
    body = await _json(request)
    for name in ("username", "password"):
        if not isinstance(body, dict) or body.get(name) in (None, ""):
            raise errors.InvalidRequest(f"The '{name}' parameter is required.", field=name)
        if not isinstance(body[name], str):
            raise errors.InvalidRequest(
                f"The '{name}' parameter must be formatted as a(n) string.", field=name
            )
    # over its failed-login budget, a source's guesses do not reach the database
    if over and not known_in_memory(request, body["username"], body["password"]):
        token = None
    else:
        async with connection(request) as conn:
            token = await cnam_orders.create_session(conn, body["username"], body["password"])
    if token is None:
        failed = errors.Unauthorized("unknown key or wrong secret", field="username")
        raise login_failed(request, over) or failed
    return web.json_response({"token": token})


async def _order(request: web.Request, *, adding: bool) -> web.Response:
    who = await _who(request)
    require_manager(who)
    settings = request.app[SETTINGS]
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


@_vendor_errors
async def add_cnam(request: web.Request) -> web.Response:
    """``POST /_rest/v3/my/did/cnam``: put ``cnam`` on the numbers (an order)."""
    return await _order(request, adding=True)


@_vendor_errors
async def remove_cnam(request: web.Request) -> web.Response:
    """``DELETE /_rest/v3/my/did/cnam``: remove the CNAM service from the numbers (an order)."""
    return await _order(request, adding=False)


@_vendor_errors
async def get_order(request: web.Request) -> web.Response:
    who = await _who(request)
    async with connection(request) as conn:
        tenant = await select_tenant(conn, who, request.headers.get(TENANT_HEADER))
        order = await cnam_orders.get_order(conn, tenant, request.match_info["order_id"])
    return web.json_response(order.to_json())


def add_routes(app: web.Application) -> None:
    app.router.add_post("/_rest/v4/authenticate", authenticate)
    app.router.add_post("/_rest/v3/my/did/cnam", add_cnam)
    app.router.add_delete("/_rest/v3/my/did/cnam", remove_cnam)
    app.router.add_get("/_rest/v3/my/orders/{order_id}", get_order)
