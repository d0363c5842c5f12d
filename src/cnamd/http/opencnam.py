"""OpenCNAM's ``GET /v3/phone/{number}``, so PBXs and clients built for it need only a new host.

The number comes with or without ``+``, URL-encoded or not (``/v3/phone/
%2B16502530000``, ``/v3/phone/16502530000``); digits without ``+`` follow
numbers.py's one rule: each valid reading (national, E.164 without ``+``) is
asked and the one holding a name answers.
Credentials: ``account_sid``/``auth_token`` query parameters (an API key's id
and secret), an ``Authorization`` header, or a trusted source network.

``format=json`` (the default) answers ``{"name", "number", "price", "uri"}``
with price 0; a miss is 404 ``{"error": "No CNAM information available for
phone number"}``, OpenCNAM's own words. ``format=pbx`` or ``text`` (or
``Accept: text/pbx``) answers the bare name as text/plain, and everything
else in those formats -- a miss, and any error -- has an *empty* body with its
status: FreePBX's CallerID Lookup and Asterisk's ``CURL()`` put whatever body
they get into the caller's name and never look at the status.
"""

from __future__ import annotations

import time
from json.encoder import encode_basestring_ascii as _quoted
from urllib.parse import quote

from aiohttp import web

from cnamd.errors import CnamdError, InvalidRequest, NotFound
from cnamd.http.answers import JSON_TYPE, Answer, Rendered, ask_all, bare_error, text_response
from cnamd.http.auth import lookup_principal
from cnamd.http.errors import cnamd_error
from cnamd.http.family import Route
from cnamd.http.keys import SETTINGS, main_app
from cnamd.presentation import Unavailable

__all__ = ["MISS", "ROUTES", "answer_format", "error_shape", "json_answer"]

#: OpenCNAM's body for a number it has no name for
MISS = {"error": "No CNAM information available for phone number"}
_FORMATS = ("json", "text", "pbx")
_MISS_BODY = b'{"error": "No CNAM information available for phone number"}'


def _format(request: web.Request) -> str:
    return answer_format(request.query.get("format"), request.headers.get("Accept", ""))


def answer_format(fmt: str | None, accept: str) -> str:
    """json, text or pbx, from ``?format`` and the Accept header; InvalidRequest
    for any other format."""
    if fmt is not None:
        if fmt not in _FORMATS:
            raise InvalidRequest(f"format must be one of {', '.join(_FORMATS)}", field="format")
        return fmt
    if "text/pbx" in accept:
        return "pbx"
    if "text/plain" in accept and "application/json" not in accept:
        return "text"
    return "json"


async def phone(request: web.Request) -> web.Response:
    started = time.perf_counter()
    fmt = _format(request)
    who = lookup_principal(request)
    answer = await ask_all(request, request.match_info.get("number", ""), who, started)
    if fmt == "json":
        return json_answer(answer, main_app(request)[SETTINGS].names.private_name).response()
    return text_response(request, answer)


def error_shape(request: web.Request, exc: CnamdError) -> web.Response:
    """An empty body in the text formats; in JSON a 404 (an unknown ``tenant`` or
    ``user``) is OpenCNAM's ``{"error"}`` like a miss, the rest cnamd's error body."""
    try:
        fmt = _format(request)
    except CnamdError:
        fmt = "json"
    if fmt != "json":
        return bare_error(exc)
    if isinstance(exc, NotFound):
        return web.json_response({"error": exc.reason}, status=404)
    return cnamd_error(request, exc)


def json_answer(answer: Answer, private_name: str) -> Rendered:
    """OpenCNAM's JSON, from a template: the bytes ``web.json_response`` would give."""
    if answer.unavailable is Unavailable.PRIVATE:
        name = private_name
    elif answer.found is not None:
        name = answer.found.name
    else:
        return Rendered(404, JSON_TYPE, _MISS_BODY)
    number = answer.number
    uri = "/v3/phone/" + quote(number, safe="")
    body = (
        f'{{"name": {_quoted(name)}, "number": {_quoted(number)}, "price": 0,'
        f' "uri": {_quoted(uri)}}}'
    )
    return Rendered(200, JSON_TYPE, body.encode())


ROUTES: tuple[Route, ...] = (
    ("GET", "/v3/phone/{number}", phone),
    # FreePBX asks /v3/phone/ when CALLERID(num) is empty: an unknown caller
    ("GET", "/v3/phone/", phone),
    # the v2 path: KAZOO's default URL and older FreePBX/Issabel OpenCNAM sources
    ("GET", "/v2/phone/{number}", phone),
)
