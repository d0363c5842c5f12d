"""``GET /v1/lookup/{number}``: a caller name from the cache, as JSON or plain text.

Plain text (``Accept: text/plain`` or ``?format=text``) is the bare name, for
Asterisk ``CURL()`` and FreePBX; a miss there is a 404 whose body is
``names.unknown_name`` -- empty by default, because FreePBX puts any body it
gets into the caller name -- and an error keeps its status with an empty
body. A withheld caller (``anonymous``, see cnamd/presentation.py) is
answered ``names.private_name``; JSON says which with ENUM's ``unavailable``
code (``p`` or ``u``).
"""

from __future__ import annotations

import time

from aiohttp import web

from cnamd.errors import CnamdError, InvalidRequest
from cnamd.http.answers import Answer, ask_all, bare_error, text_response
from cnamd.http.auth import lookup_principal
from cnamd.http.errors import add_shaped_routes, cnamd_error
from cnamd.http.keys import SETTINGS
from cnamd.presentation import Unavailable

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
    text = _wants_text(request)
    who = lookup_principal(request)
    raw = request.match_info.get("number") or request.query.get("number")
    if not raw:
        raise InvalidRequest("the number is missing", field="number")
    answer = await ask_all(request, raw, who, started)
    return text_response(request, answer) if text else _json(request, answer)


def _shape(request: web.Request, exc: CnamdError) -> web.Response:
    """Errors as cnamd's JSON, or with an empty body when plain text was asked for."""
    try:
        text = _wants_text(request)
    except CnamdError:
        text = False
    return bare_error(exc) if text else cnamd_error(request, exc)


def _json(request: web.Request, answer: Answer) -> web.Response:
    found = answer.found
    if answer.unavailable is Unavailable.PRIVATE:
        name = request.app[SETTINGS].names.private_name
        return web.json_response({"number": answer.number, "name": name, "unavailable": "p"})
    if found is None:
        return web.json_response(
            {
                "status": "not-found",
                "field": "number",
                "number": answer.number,
                "message": f"no name for {answer.number}",
                "unavailable": "u",
            },
            status=404,
        )
    return web.json_response(
        {
            "number": answer.number,
            "name": found.name,
            "scope": found.scope.label,
            "matched": found.matched,
            **({"source": answer.source} if answer.source else {}),
        }
    )


def add_routes(app: web.Application) -> None:
    add_shaped_routes(
        app, [("GET", "/v1/lookup/{number}", lookup), ("GET", "/v1/lookup", lookup)], _shape
    )
