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
from json.encoder import encode_basestring_ascii as _quoted

from aiohttp import web

from cnamd.errors import CnamdError, InvalidRequest
from cnamd.http.answers import JSON_TYPE, Answer, Rendered, ask_all, bare_error, text_response
from cnamd.http.auth import lookup_principal
from cnamd.http.errors import cnamd_error
from cnamd.http.family import Route
from cnamd.http.keys import SETTINGS, main_app
from cnamd.presentation import Unavailable

_FORMATS = ("json", "text")


def _wants_text(request: web.Request) -> bool:
    return wants_text(request.query.get("format"), request.headers.get("Accept", ""))


def wants_text(fmt: str | None, accept: str) -> bool:
    """Plain text or JSON, from ``?format`` and the Accept header; InvalidRequest
    for a format that is neither."""
    if fmt is not None:
        if fmt not in _FORMATS:
            raise InvalidRequest(f"format must be one of {', '.join(_FORMATS)}", field="format")
        return fmt == "text"
    return "text/plain" in accept and "application/json" not in accept


async def lookup(request: web.Request) -> web.Response:
    started = time.perf_counter()
    text = _wants_text(request)
    who = lookup_principal(request)
    raw = request.match_info.get("number") or request.query.get("number")
    if not raw:
        raise InvalidRequest("the number is missing", field="number")
    answer = await ask_all(request, raw, who, started)
    if text:
        return text_response(request, answer)
    return json_answer(answer, main_app(request)[SETTINGS].names.private_name).response()


def error_shape(request: web.Request, exc: CnamdError) -> web.Response:
    """Errors as cnamd's JSON, or with an empty body when plain text was asked for."""
    try:
        text = _wants_text(request)
    except CnamdError:
        text = False
    return bare_error(exc) if text else cnamd_error(request, exc)


def json_answer(answer: Answer, private_name: str) -> Rendered:
    """The JSON answer, written from a template: the bytes ``web.json_response``
    would give for the same dict, without building one and walking it."""
    number = _quoted(answer.number)
    found = answer.found
    if answer.unavailable is Unavailable.PRIVATE:
        body = f'{{"number": {number}, "name": {_quoted(private_name)}, "unavailable": "p"}}'
        return Rendered(200, JSON_TYPE, body.encode())
    if found is None:
        message = _quoted(f"no name for {answer.number}")
        body = (
            f'{{"status": "not-found", "field": "number", "number": {number},'
            f' "message": {message}, "unavailable": "u"}}'
        )
        return Rendered(404, JSON_TYPE, body.encode())
    source = f', "source": {_quoted(answer.source)}' if answer.source else ""
    body = (
        f'{{"number": {number}, "name": {_quoted(found.name)},'
        f' "scope": {_quoted(found.scope.label)}, "matched": {_quoted(found.matched)}{source}}}'
    )
    return Rendered(200, JSON_TYPE, body.encode())


ROUTES: tuple[Route, ...] = (("GET", "/v1/lookup/{number}", lookup), ("GET", "/v1/lookup", lookup))
