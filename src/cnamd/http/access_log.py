"""The HTTP access log (setting ``http.access_log``) through aiohttp's access-log hook.

One line per request, in ``log.format`` like every other line, with fields
rather than an Apache string, so a log shipper needs no parser. Secrets never
reach it: the Authorization and X-Auth-Token headers are not read at all,
and credential query parameters (OpenCNAM's ``auth_token``) are replaced by
``REDACTED`` in the logged path. Toggled live by the level of the
``cnamd.access`` logger (aiohttp asks ``enabled`` before formatting).
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from cnamd.http.keys import PRINCIPAL

LOGGER = "cnamd.access"

#: query parameters that carry credentials, compared lowercased
SECRET_PARAMS = frozenset(
    {"auth_token", "token", "access_token", "api_key", "apikey", "secret", "password"}
)
REDACTED = "REDACTED"


def redacted_path(request: BaseRequest) -> str:
    """The path and query as sent, with every credential parameter's value replaced."""
    query = request.rel_url.query
    if not query:
        return request.path
    parts = [
        f"{quote(k, safe='')}={REDACTED if k.lower() in SECRET_PARAMS else quote(v, safe='')}"
        for k, v in query.items()
    ]
    return request.path + "?" + "&".join(parts)


class AccessLog(AbstractAccessLogger):
    """aiohttp's ``access_log_class``: one structured, redacted line per request."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        principal = request.get(PRINCIPAL)
        self.logger.info(
            "http request",
            extra={
                "remote": request.remote or "-",
                "method": request.method,
                "path": redacted_path(request),
                "status": response.status,
                "bytes": response.body_length,
                "seconds": round(time, 6),
                "key_id": principal.key_id if principal is not None else "-",
                "agent": request.headers.get("User-Agent", "-")[:200],
            },
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def set_enabled(on: bool) -> None:
    """Turn the access log on or off (at start-up and on SIGHUP)."""
    logging.getLogger(LOGGER).setLevel(logging.INFO if on else logging.WARNING)
