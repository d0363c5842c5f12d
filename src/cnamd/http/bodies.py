"""Reading request parameters and bodies; every failure names its field.

Whatever reaches PostgreSQL or a JSON parser passes through here first:
``check_request`` refuses a NUL or a byte that is not UTF-8 in any path or
query parameter (and the headers read as parameters) before a handler runs,
and ``read_json`` bounds a JSON body's size and nesting before parsing it
and refuses the same characters in its strings. PostgreSQL's text cannot
hold NUL, and the json module recurses once per nesting level.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from cnamd.errors import CnamdError, InvalidRequest
from cnamd.http.keys import SETTINGS, main_app
from cnamd.http.tenant_header import TENANT_HEADER

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "PARAMETER_HEADERS",
    "BodyTimeout",
    "BodyTooLarge",
    "check_request",
    "check_text",
    "json_object",
    "query_int",
    "read_form",
    "read_json",
    "string_field",
]

#: the largest JSON body read (an Atmosphere order of 10,000 numbers is ~450 KiB)
MAX_JSON_BYTES = 1024 * 1024
#: the deepest nesting of arrays and objects a JSON body may have; cnamd's own
#: bodies nest three levels at most (Flowroute's ``data.attributes.value``)
MAX_JSON_DEPTH = 32
#: headers whose values are parameters that reach the database
PARAMETER_HEADERS = (TENANT_HEADER,)
#: PostgreSQL's bigint, the widest integer column
BIGINT_MAX = 2**63 - 1

_INTEGER = re.compile(r"-?[0-9]{1,30}")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SQUARE = bytes.maketrans(b"{}", b"[]")
_OPENING = ord("[")
_CHUNK = MAX_JSON_DEPTH // 2


class BodyTooLarge(InvalidRequest):
    """A body over the size a route reads (HTTP 413)."""

    status = "body-too-large"


class BodyTimeout(InvalidRequest):
    """A body that stopped arriving (HTTP 408)."""

    status = "body-timeout"


def _arriving(request: web.Request) -> tuple[float, BodyTimeout]:
    """How long a JSON or form body (at most MAX_JSON_BYTES) may take to arrive whole, and
    the refusal past it: a sender that trickles one must not hold a handler for ever."""
    timeout = main_app(request)[SETTINGS].http.body_timeout
    refusal = BodyTimeout(
        f"the body did not arrive within {timeout:g} s (http.body_timeout)", field="body"
    )
    return timeout, refusal


def _problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None when it can."""
    if "\x00" in value:
        return "holds a NUL character"
    try:
        value.encode()
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    return None


def _label(name: str) -> str:
    """A field name fit to echo back: control characters escaped, at most 40 characters."""
    return name.encode("unicode_escape", "backslashreplace").decode("ascii")[:40]


def check_text(value: str, field: str) -> str:
    """``value`` when it is storable text; InvalidRequest naming ``field`` otherwise."""
    why = _problem(value)
    if why is not None:
        raise InvalidRequest(f"{_label(field)} {why}", field=_label(field))
    return value


def check_request(request: web.Request) -> None:
    """400 naming the parameter when a path or query parameter, or a header in
    PARAMETER_HEADERS, holds NUL or is not UTF-8; run before every handler."""
    for name, value in request.match_info.items():
        check_text(value, name)
    for name, value in request.query.items():
        check_text(name, name)
        check_text(value, name)
    for header in PARAMETER_HEADERS:
        sent = request.headers.get(header)
        if sent is not None:
            check_text(sent, header)


def _too_deep(raw: bytes) -> bool:
    """Whether ``raw`` nests arrays and objects deeper than MAX_JSON_DEPTH (or leaves
    that many unclosed), found without recursion: drop the escapes and the strings,
    then follow the depth bracket by bracket -- a chunk at a time while it cannot
    pass the limit within the chunk. A body the parser would reject before its
    deep part may be misjudged here, never one it would recurse into."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return False
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(unescaped.split(b'"')[::2]).translate(_SQUARE, _NOT_BRACKETS)
    depth = 0
    for start in range(0, len(brackets), _CHUNK):
        chunk = brackets[start : start + _CHUNK]
        opening = chunk.count(b"[")
        if depth + opening <= MAX_JSON_DEPTH:
            depth += 2 * opening - len(chunk)
            continue
        for bracket in chunk:
            depth += 1 if bracket == _OPENING else -1
            if depth > MAX_JSON_DEPTH:
                return True
    return False


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string in a parsed JSON value, keys included, with where it is."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            yield where, key
            yield from _strings(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]" if path else f"[{index}]")


async def read_json(
    request: web.Request,
    *,
    field: str = "body",
    unreadable: str | None = None,
    check_strings: bool = True,
) -> Any:
    """The body parsed as JSON, at most MAX_JSON_BYTES and MAX_JSON_DEPTH deep, with
    no NUL or lone surrogate in its strings; InvalidRequest naming the field otherwise.

    ``field`` names the body in errors about the whole of it; ``unreadable``
    replaces the reason given for a body that is empty or not JSON (a vendor's
    own sentence). ``check_strings`` False leaves the strings to the caller
    (credentials, which are refused as failed logins rather than bad input).
    """
    too_large = BodyTooLarge(f"the body passes {MAX_JSON_BYTES} bytes", field=field)
    if (request.content_length or 0) > MAX_JSON_BYTES:
        raise too_large
    timeout, late = _arriving(request)
    try:
        async with asyncio.timeout(timeout):
            raw = await request.read()  # the app's client_max_size is MAX_JSON_BYTES
    except web.HTTPRequestEntityTooLarge as exc:
        raise too_large from exc
    except TimeoutError:
        raise late from None
    if len(raw) > MAX_JSON_BYTES:
        raise too_large
    if not raw.strip():
        reason = unreadable or "the request body is empty; send a JSON object"
        raise InvalidRequest(reason, field=field)
    if _too_deep(raw):
        raise InvalidRequest(
            f"the body nests JSON deeper than {MAX_JSON_DEPTH} levels", field=field
        )
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        reason = unreadable or f"the body is not JSON: {exc}"
        raise InvalidRequest(reason, field=field) from exc
    if check_strings and b"\\u" in raw:  # NUL and surrogates reach a JSON string only as \u escapes
        for where, text in _strings(body, ""):
            check_text(text, where or field)
    return body


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object (``read_json``), or InvalidRequest(field="body")."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidRequest(
            f"the body is a JSON {type(body).__name__}, not an object", field="body"
        )
    return body


async def read_form(
    request: web.Request,
) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """The form fields of a urlencoded or multipart body; a malformed one
    (multipart without a boundary, broken parts) is InvalidRequest naming the body."""
    timeout, late = _arriving(request)
    try:
        async with asyncio.timeout(timeout):
            form = await request.post()
    except web.HTTPRequestEntityTooLarge as exc:
        raise BodyTooLarge("the form is too large", field="body") from exc
    except TimeoutError:
        raise late from None
    except (ValueError, AssertionError, LookupError, RuntimeError) as exc:
        raise InvalidRequest(f"the form could not be read: {exc}", field="body") from exc
    for name, value in form.items():
        check_text(name, name)
        if isinstance(value, str):
            check_text(value, name)
    return form


def string_field(
    body: Mapping[str, Any], name: str, *, error: type[CnamdError] = InvalidRequest
) -> str:
    """``body[name]`` as a string; missing or another type is ``error`` naming ``name``."""
    value = body.get(name)
    if isinstance(value, str):
        return value
    what = "missing" if value is None else f"a JSON {type(value).__name__}, not a string"
    raise error(f"{name} is {what}", field=name)


def query_int(
    request: web.Request, name: str, *, default: int, low: int, high: int = BIGINT_MAX
) -> int:
    """Query parameter ``name`` as an integer in ``low``..``high`` (at most a bigint)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    text = raw.strip()
    value = int(text) if _INTEGER.fullmatch(text) else None
    if value is None or not low <= value <= high:
        raise InvalidRequest(
            f"{name} must be an integer from {low} to {high}, not {raw[:40]!r}", field=name
        )
    return value
