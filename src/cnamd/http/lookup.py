"""``GET /v1/lookup/{number}``: a caller name from the cache, as JSON or plain text.

Plain text (``Accept: text/plain`` or ``?format=text``) is the bare name, for
Asterisk ``CURL()`` and FreePBX; a miss there is a 404 with an *empty* body,
because FreePBX puts any body it gets into the caller name.
"""

from __future__ import annotations

import time

from aiohttp import web

from cnamd import metrics
from cnamd.errors import InvalidNumber, InvalidRequest
from cnamd.http.auth import lookup_principal
from cnamd.http.keys import DIRECTORY

_FORMATS = ("json", "text")


def _wants_text(request: web.Request) -> bool:
    fmt = request.query.get("format")
    if fmt is not None:
        if fmt not in _FORMATS:
            raise InvalidRequest(f"format must be one of {', '.join(_FORMATS)}", field="format")
        return fmt == "text"
    accept = request.headers.get("Accept", "")
    return "text/plain" in accept and "application/json" not in accept


async def lookup(request: web.Request) -> web.Response:
    started = time.perf_counter()
    who = lookup_principal(request)
    text = _wants_text(request)
    raw = request.match_info.get("number") or request.query.get("number")
    if not raw:
        raise InvalidRequest("the number is missing", field="number")
    directory = request.app[DIRECTORY]
    ctx, region = directory.request_context(
        tenant=request.query.get("tenant"),
        user=request.query.get("user"),
        called=request.query.get("called"),
        principal=who,
    )
    try:
        number, found = directory.lookup(raw, ctx, region)
    except InvalidNumber:
        metrics.LOOKUPS.labels("http", "invalid", "none").inc()
        raise
    metrics.LOOKUP_DURATION.labels("http").observe(time.perf_counter() - started)
    if found is None:
        metrics.LOOKUPS.labels("http", "miss", "none").inc()
        if text:
            return web.Response(status=404, body=b"")
        return web.json_response(
            {
                "status": "not-found",
                "field": "number",
                "number": number,
                "message": f"no name for {number}",
            },
            status=404,
        )
    metrics.LOOKUPS.labels("http", "hit", found.scope.label).inc()
    if text:
        return web.Response(text=found.name, content_type="text/plain")
    return web.json_response(
        {"number": number, "name": found.name, "scope": found.scope.label, "matched": found.matched}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/lookup/{number}", lookup)
    app.router.add_get("/v1/lookup", lookup)
