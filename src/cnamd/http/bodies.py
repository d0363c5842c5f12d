"""Reading request parameters and JSON bodies; every failure names its field."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from cnamd.errors import CnamdError, InvalidRequest


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, or InvalidRequest(field="body") saying what is wrong."""
    raw = await request.read()
    if not raw:
        raise InvalidRequest("the request body is empty; send a JSON object", field="body")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the body is not JSON: {exc}", field="body") from exc
    if not isinstance(body, dict):
        raise InvalidRequest(
            f"the body is a JSON {type(body).__name__}, not an object", field="body"
        )
    return body


def string_field(
    body: dict[str, Any], name: str, *, error: type[CnamdError] = InvalidRequest
) -> str:
    """``body[name]`` as a string; missing or another type is ``error`` naming ``name``."""
    value = body.get(name)
    if isinstance(value, str):
        return value
    what = "missing" if value is None else f"a JSON {type(value).__name__}, not a string"
    raise error(f"{name} is {what}", field=name)


def query_int(request: web.Request, name: str, *, default: int, low: int, high: int) -> int:
    """Query parameter ``name`` as an integer in ``low``..``high``."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise InvalidRequest(
            f"{name} must be an integer from {low} to {high}, not {raw!r}", field=name
        )
    return value
