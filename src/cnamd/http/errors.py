"""The one middleware that turns errors into HTTP answers: JSON naming the field.

It sits on the main application, so it wraps every API family's
sub-application too (http/family.py). Before any handler it runs the input
guard (``bodies.check_request``); every CnamdError, the guard's included, is
rendered in the error shape of the family whose application owns the matched
route (its ``ERROR_SHAPE``): cnamd's ``{"status", "message", "field"}``
unless the family is a vendor's with its own. aiohttp's own 404 and 405 (no
route matched) are always cnamd's shape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from cnamd import errors, metrics
from cnamd.http.bodies import BodyTimeout, BodyTooLarge, check_request
from cnamd.http.keys import ERROR_SHAPE, ErrorShape

log = logging.getLogger(__name__)

#: WWW-Authenticate on every 401 (RFC 9110 §11.6.1): the schemes cnamd takes
CHALLENGE = 'Bearer realm="cnamd", Basic realm="cnamd"'

#: Retry-After (seconds) on every 503: a lost connection is replaced at once, and a
#: hung database is found out within database.statement_timeout
UNAVAILABLE_RETRY_AFTER = "1"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATUS_OF: list[tuple[type[errors.CnamdError], int]] = [
    (BodyTooLarge, 413),
    (BodyTimeout, 408),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.Unauthorized, 401),
    (errors.Forbidden, 403),
    (errors.TooManyRequests, 429),
    (errors.StoreUnavailable, 503),
    (errors.CnamdError, 400),
]


def error_body(status: str, message: str, field: str | None = None) -> dict[str, str]:
    body = {"status": status, "message": message}
    if field is not None:
        body["field"] = field
    return body


def status_of(exc: errors.CnamdError) -> int:
    """The HTTP status of ``exc`` (STATUS_OF: the first kind it is)."""
    kind = type(exc)
    code = _STATUS_BY_KIND.get(kind)
    if code is None:  # remembered per class: a refused number is a PBX's most common answer
        code = _STATUS_BY_KIND[kind] = next(c for base, c in STATUS_OF if issubclass(kind, base))
    return code


_STATUS_BY_KIND: dict[type[errors.CnamdError], int] = {}


def json_error(
    http_status: int, status: str, message: str, field: str | None = None
) -> web.Response:
    return web.json_response(error_body(status, message, field), status=http_status)


def _route_of(request: web.Request) -> str:
    """The route template, never the raw path, so metrics have a fixed label set."""
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else "unmatched"


def cnamd_error(_request: web.Request, exc: errors.CnamdError) -> web.Response:
    """cnamd's own error shape, with WWW-Authenticate on a 401 and Retry-After on a 429."""
    response = json_error(status_of(exc), exc.status, exc.reason, exc.field)
    if isinstance(exc, errors.Unauthorized):
        response.headers["WWW-Authenticate"] = CHALLENGE
    elif isinstance(exc, errors.TooManyRequests):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def shape_of(request: web.Request) -> ErrorShape:
    """The error shape of the family whose application owns the matched route;
    cnamd's own when no route matched (aiohttp's 404 or 405) or on the main app."""
    info = request.match_info
    if info.http_exception is not None:
        return cnamd_error
    return info.apps[-1].get(ERROR_SHAPE, cnamd_error)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Guard the input, map CnamdError (in the route's family's shape) and aiohttp's own
    errors to answers; count every request by route."""
    started = time.perf_counter()
    try:
        check_request(request)
        response = await handler(request)
    except errors.CnamdError as exc:
        response = shape_of(request)(request, exc)
        if isinstance(exc, errors.Unauthorized):
            metrics.AUTH_FAILURES.inc()
    except web.HTTPException as exc:
        if exc.empty_body or exc.status < 400:
            raise
        word = exc.reason.lower().replace(" ", "-")
        response = json_error(exc.status, word, exc.text or exc.reason)
        for name in ("Allow",):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
    except Exception:
        log.exception("unhandled error", extra={"path": request.path, "method": request.method})
        response = json_error(500, "internal-error", "internal error; see the server log")
    if response.status == 503 and not response.prepared:
        # whoever rendered it (cnamd's shape or a vendor family's), a 503 says when to retry
        response.headers.setdefault("Retry-After", UNAVAILABLE_RETRY_AFTER)
    metrics.HTTP.record(
        _route_of(request), request.method, response.status, time.perf_counter() - started
    )
    return response
