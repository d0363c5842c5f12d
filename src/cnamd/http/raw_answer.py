"""A lookup's answer as the bytes aiohttp would write for it, written in one go.

For an HTTP/1.1 keep-alive request only, where aiohttp's own answer would be
exactly this: the status line, Content-Type, Content-Length, Date and Server,
the body. It skips building a response's header multidict, serializing it and
the writer's bookkeeping (bench/README.md, "HTTP lookups"). Both fast paths
write it: ``FastLookups`` (http/fastpath.py) through aiohttp's request
handler, the connection front (http/front.py) straight to the transport.
"""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web, web_response
from aiohttp.helpers import rfc822_formatted_time

from cnamd.http.answers import Rendered

__all__ = ["RawAnswer"]

#: status -> "200 OK", as aiohttp writes the status line
_REASONS = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}


class RawAnswer(web.StreamResponse):
    """``rendered`` as aiohttp's keep-alive HTTP/1.1 answer. aiohttp's request handler
    asks only what is set here: ``prepare``, ``write_eof``, the status, the body's
    length (access log) and ``keep_alive``."""

    def __init__(self, rendered: Rendered) -> None:  # no super(): nothing else is read
        self._status = rendered.status
        self._keep_alive = True
        self._body_length = len(rendered.body)
        self._eof_sent = False
        self._payload_writer = None
        self._rendered = rendered

    def encoded(self) -> bytes:
        """The head and the body, as aiohttp would write them (Date of this second)."""
        rendered = self._rendered
        body = rendered.body
        head = (
            f"HTTP/1.1 {_REASONS[rendered.status]}\r\n"
            f"Content-Type: {rendered.content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Date: {rfc822_formatted_time()}\r\n"
            f"Server: {web_response.SERVER_SOFTWARE}\r\n\r\n"  # type: ignore[attr-defined]
        )
        return head.encode() + body

    async def prepare(self, request: web.BaseRequest) -> None:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        transport.write(self.encoded())
        self._eof_sent = True

    async def write_eof(self, data: bytes = b"") -> None:
        return None
