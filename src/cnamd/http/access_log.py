"""The HTTP access log (setting ``http.access_log``) through aiohttp's access-log hook.

One line per request, in ``log.format`` like every other line, with fields
rather than an Apache string, so a log shipper needs no parser. Secrets never
reach it: the Authorization and X-Auth-Token headers are not read at all,
and credential query parameters (OpenCNAM's ``auth_token``) are replaced by
``REDACTED`` in the logged path. Toggled live by the level of the
``cnamd.access`` logger (aiohttp asks ``enabled`` before formatting).

Batched: a request only appends its fields to a list; the lines are made and
written every FLUSH_SECONDS (or every BATCH_LINES lines), each stream handler
receiving the batch in one write instead of a write (and a flush) per line.
A line is at most FLUSH_SECONDS late; ``flush`` (at shutdown) writes the rest.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
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
#: how long a line may wait for its batch, and the most lines a batch holds
FLUSH_SECONDS = 0.2
BATCH_LINES = 512

_pending: list[dict[str, Any]] = []


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
        _pending.append(
            {
                "remote": request.remote or "-",
                "method": request.method,
                "path": redacted_path(request),
                "status": response.status,
                "bytes": response.body_length,
                "seconds": round(time, 6),
                "key_id": principal.key_id if principal is not None else "-",
                "agent": request.headers.get("User-Agent", "-")[:200],
            }
        )
        if len(_pending) == 1:
            asyncio.get_running_loop().call_later(FLUSH_SECONDS, flush)
        elif len(_pending) >= BATCH_LINES:
            flush()

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def flush() -> None:
    """Write the pending lines: one write per stream handler for the whole batch."""
    if not _pending:
        return
    batch = _pending[:]
    _pending.clear()
    logger = logging.getLogger(LOGGER)
    records = [
        record
        for fields in batch
        if logger.filter(
            record := logger.makeRecord(
                LOGGER, logging.INFO, __file__, 0, "http request", (), None, extra=fields
            )
        )
    ]
    for handler in _handlers(logger):
        chosen = [r for r in records if r.levelno >= handler.level and handler.filter(r)]
        if not chosen:
            continue
        if not isinstance(handler, logging.StreamHandler):
            for record in chosen:
                handler.handle(record)
            continue
        handler.acquire()
        try:
            handler.stream.write("".join(handler.format(r) + handler.terminator for r in chosen))
            handler.flush()
        except Exception:  # as StreamHandler.emit: report it, never raise into the server
            handler.handleError(chosen[0])
        finally:
            handler.release()


def _handlers(logger: logging.Logger) -> list[logging.Handler]:
    """The handlers a record of ``logger`` reaches, as ``Logger.callHandlers`` walks them."""
    found: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        found.extend(current.handlers)
        if not current.propagate:
            break
        current = current.parent
    return found


def set_enabled(on: bool) -> None:
    """Turn the access log on or off (at start-up and on SIGHUP)."""
    logging.getLogger(LOGGER).setLevel(logging.INFO if on else logging.WARNING)
