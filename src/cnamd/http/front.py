"""The HTTP listeners' connection front: plain lookup GETs answered from the connection's bytes.

Even with ``FastLookups`` answering where aiohttp calls the application, a
lookup paid aiohttp's own request handling: its parser, a request object, the
connection's task and its wake-ups, the StreamWriter (bench/README.md, "HTTP
lookups"). A PBX's lookup needs none of it. ``LookupFront`` is the protocol a
connection starts on: in ``data_received`` it answers every complete request
head in the buffer that is a strict, plain lookup GET, by handing it to the
same ``FastLookups.answer`` and writing its pre-formatted answer to the
transport, in order (pipelining); a lookup that goes upstream (``Waits``) is
answered when its answer comes, the requests behind it after it, reading nothing
more meanwhile. At the first request it does not recognize
with certainty -- a request line or header outside the subset below, a body or
framing header, ``Expect``, ``Upgrade``, a ``Connection`` other than
keep-alive, a head too long, anything ``FastLookups`` refers -- it hands the
connection for good to aiohttp's ``RequestHandler``, made as aiohttp's
``Server`` makes it, which parses the rest itself. From then on the front only
passes the transport's calls through.

One difference is by design: where aiohttp's parser refuses a request, it also
drops the requests it parsed before it *in the same read* (it raises for the
whole read), so what it answers depends on how TCP cut the bytes. The front
answers each of its requests as aiohttp does when that request arrives in a read
of its own, then aiohttp refuses the bad one: the same bytes as aiohttp on one
of the ways the stream may arrive.

The head scanner is written by hand on purpose, and narrow: ``GET``, an
origin-form target of plain characters, ``HTTP/1.1``, CRLF line ends, header
lines ``Name: value`` of printable ASCII without folding or padding, each name
once, ``Host`` present. aiohttp's C parser (llhttp) reads every such head the
same way, and it stays the reference for everything else: the front never
frames a request differently from aiohttp (no request smuggling), it only
answers a subset aiohttp would answer identically (tests/http/test_front.py
holds the two to the same bytes).

The front answers for at most a share of each turn of the event loop
(turn_budget.py): requests that arrive together, on many connections or pipelined
on one, are answered over as many turns as they take, with the loop's timers run
between them, and a connection put off is not read from until its turn comes.

What aiohttp's request handling does is done here as cheaply: TCP_NODELAY and
keep-alive on the socket, the keep-alive idle timeout, the access log
(http/access_log.py), no reading while the transport's write buffer is above
its high-water mark, and the connection closed at shutdown. Metrics are
counted by ``FastLookups.answer`` itself.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import Callable
from typing import Any, Protocol, cast

from aiohttp import web
from aiohttp.http import HttpVersion11
from aiohttp.log import access_logger
from aiohttp.tcp_helpers import tcp_keepalive, tcp_nodelay
from aiohttp.web_log import AccessLogger
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from cnamd import turn_budget
from cnamd.http.access_log import AccessLog
from cnamd.http.raw_answer import RawAnswer
from cnamd.metrics import HTTP_CONNECTIONS_REFUSED as REFUSED
from cnamd.metrics import HTTP_FRONT_HANDOVERS as HANDOVERS

__all__ = ["FrontServer", "LookupFront", "scan_head"]

log = logging.getLogger(__name__)

#: the longest head the front reads; a longer one (or a partial one past it) is aiohttp's
MAX_HEAD = 4096
#: the most header lines the front reads
MAX_HEADERS = 32
#: aiohttp's own defaults for what a server may override
_DEFAULTS = inspect.signature(RequestHandler.__init__).parameters
KEEPALIVE_TIMEOUT: float = _DEFAULTS["keepalive_timeout"].default

# The head: the request line -- GET, an origin-form target of characters that need no
# decoding (the fast path refers anything else, percent escapes included), HTTP/1.1 --
# then header lines: a token, a colon, at most one space, a value of printable ASCII that
# neither starts nor ends with a space (no tabs, no obs-fold, no obs-text, no bare CR/LF).
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_VALUE = r"(?:[!-~](?:[ -~]*[!-~])?)?"
_HEAD = re.compile(
    r"GET (/[A-Za-z0-9/+._-]*(?:\?[A-Za-z0-9_.=&-]*)?) HTTP/1\.1"
    rf"((?:\r\n{_TOKEN}: ?{_VALUE})*)"
).fullmatch
_FIELDS = re.compile(rf"\r\n({_TOKEN}): ?({_VALUE})").findall
#: headers that frame a body, ask for an interim answer or change the protocol (lowercase)
_FRAMING = frozenset({"content-length", "transfer-encoding", "expect", "upgrade", "te", "trailer"})


def scan_head(head: bytes) -> tuple[str, CIMultiDictProxy[str]] | None:
    """The target and headers of ``head`` (the bytes before its blank line) when it is in
    the strict subset the front answers; None for anything else (aiohttp's)."""
    if len(head) > MAX_HEAD:
        return None
    try:
        found = _HEAD(head.decode("ascii"))
    except UnicodeDecodeError:
        return None
    if found is None:
        return None
    fields: list[tuple[str, str]] = _FIELDS(found[2])
    names = [name.lower() for name, _ in fields]
    seen = set(names)
    if len(seen) != len(names) or len(names) > MAX_HEADERS or "host" not in seen:
        return None  # a name twice, too many, no Host
    if not _FRAMING.isdisjoint(seen):
        return None
    if "connection" in seen and fields[names.index("connection")][1].lower() != "keep-alive":
        return None
    return found[1], CIMultiDictProxy(CIMultiDict(fields))


def _may_be_ours(partial: bytes) -> bool:
    """Whether the start of a head may still become one the front answers."""
    return len(partial) <= MAX_HEAD and (partial.startswith(b"GET ") or b"GET ".startswith(partial))


class ScannedRequest(dict[Any, Any]):
    """What ``FastLookups.answer`` and the access log read of a request, for a head the
    front scanned (a mapping, as aiohttp's request is, for the principal it records)."""

    __slots__ = ("headers", "raw_path", "remote")
    method = "GET"
    version = HttpVersion11
    keep_alive = True

    def __init__(self, raw_path: str, headers: CIMultiDictProxy[str], remote: str | None) -> None:
        super().__init__()
        self.raw_path = raw_path
        self.headers = headers
        self.remote = remote

    @property
    def path(self) -> str:
        return self.raw_path.partition("?")[0]

    @property
    def rel_url(self) -> URL:
        return URL(self.raw_path, encoded=True)


class Waits(Protocol):
    """``fastpath.Waiting``: a lookup answered once the upstream sources have been asked."""

    def then(self, done: Callable[[web.StreamResponse | Exception], None]) -> None: ...


class Answers(Protocol):
    """``FastLookups`` (http/fastpath.py): a RawAnswer for a plain keep-alive GET, a
    Waits for one that goes upstream, or None."""

    async def __call__(self, request: web.Request) -> web.StreamResponse: ...

    def answer(self, request: web.Request) -> web.StreamResponse | Waits | None: ...


class FrontServer(Server):
    """aiohttp's low-level ``Server`` whose connections start on a ``LookupFront``.

    ``fast`` is its request handler too, for the connections handed to aiohttp.
    ``turn``: how long its connections answer in one turn of the loop, the loop's share.
    """

    def __init__(self, fast: Answers, *, max_connections: int = 0, **kwargs: Any) -> None:
        super().__init__(fast, **kwargs)  # type: ignore[arg-type]  # takes web.Request
        self.fast = fast
        self.fronts: set[LookupFront] = set()
        self.turn = turn_budget.of_running_loop()
        #: open connections, the front's and those handed to aiohttp; 0: no cap
        self.open = 0
        self.max_connections = max_connections
        self.keepalive_timeout = float(kwargs.get("keepalive_timeout", KEEPALIVE_TIMEOUT))
        self.tcp_keepalive = bool(kwargs.get("tcp_keepalive", True))
        logger = kwargs.get("access_log", access_logger)
        kind = kwargs.get("access_log_class", AccessLogger)
        fmt = kwargs.get("access_log_format", AccessLogger.LOG_FORMAT)
        self.access_logger = kind(logger, fmt) if logger else None
        #: cnamd's access log reads what a ScannedRequest has; another class may not
        self.front_logs = kind is AccessLog

    def __call__(self) -> LookupFront:  # type: ignore[override]  # a protocol factory
        return LookupFront(self)

    def handler(self) -> RequestHandler:
        """aiohttp's request handler for a connection, made as ``Server()`` makes it."""
        return super().__call__()

    def pre_shutdown(self) -> None:
        for front in list(self.fronts):
            front.close()
        super().pre_shutdown()

    async def shutdown(self, timeout: float | None = None) -> None:
        for front in list(self.fronts):
            front.close()
        waiting = [w for front in self.fronts if (w := front.answered()) is not None]
        if waiting:  # as aiohttp lets its handlers finish: the upstream lookups in flight
            await asyncio.wait(waiting, timeout=timeout)
        await super().shutdown(timeout)


class LookupFront(asyncio.Protocol):
    """One connection: plain lookup GETs answered here until the first other request,
    then aiohttp's ``RequestHandler`` for good (module docstring)."""

    __slots__ = (
        "_buffer",
        "_close_at",
        "_closing",
        "_counted",
        "_deferred",
        "_drained",
        "_handler",
        "_idle",
        "_loop",
        "_reading_paused",
        "_remote",
        "_server",
        "_transport",
        "_waiting",
        "_writing_paused",
    )

    def __init__(self, server: FrontServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._handler: RequestHandler | None = None
        self._buffer = b""
        self._remote: str | None = None
        self._writing_paused = False
        self._reading_paused = False
        self._close_at = 0.0
        self._idle: asyncio.TimerHandle | None = None
        #: the lookup being answered from upstream; the requests behind it wait their turn
        self._waiting: tuple[ScannedRequest, float, int] | None = None  # its request, start, length
        self._drained: asyncio.Future[None] | None = None  # made when shutdown waits for it
        self._closing = False  # shutdown: close once the waiting lookup is answered
        self._counted = False  # in server.open (not a connection refused at accept)
        self._deferred = False  # put off to a later turn of the loop (_defer)

    def answered(self) -> asyncio.Future[None] | None:
        """Done once the lookup waiting for upstream is answered; None when none waits."""
        if self._waiting is None:
            return None
        if self._drained is None:
            self._drained = self._loop.create_future()
        return self._drained

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = cast(asyncio.Transport, transport)
        server = self._server
        if server.max_connections and server.open >= server.max_connections:
            # over http.max_connections: closed at once, as sip.tcp_max_connections does,
            # so a flood of idle connections cannot use up the worker's file descriptors
            REFUSED.inc()
            tr.abort()
            return
        server.open += 1
        self._counted = True
        self._transport = tr
        tcp_nodelay(tr, True)
        if server.tcp_keepalive:
            tcp_keepalive(tr)
        peer = tr.get_extra_info("peername")  # as aiohttp's BaseRequest.remote reads it
        if peer is not None:
            self._remote = str(peer[0] if isinstance(peer, (list, tuple)) else peer)
        server.fronts.add(self)
        if server.keepalive_timeout > 0:
            self._close_at = self._loop.time() + server.keepalive_timeout
            self._idle = self._loop.call_at(self._close_at, self._on_idle)

    def data_received(self, data: bytes) -> None:
        if self._handler is not None:
            self._handler.data_received(data)
            return
        self._buffer = self._buffer + data if self._buffer else data
        if self._waiting is None and not self._deferred:
            self._serve()

    def eof_received(self) -> bool | None:
        if self._handler is not None:
            return self._handler.eof_received()  # type: ignore[func-returns-value]
        return None  # every complete request is answered: close, as aiohttp does

    def connection_lost(self, exc: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self._server.open -= 1
        if self._handler is not None:
            self._handler.connection_lost(exc)
            return
        self._forget()
        self._transport = None
        self._buffer = b""

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()
            return
        self._writing_paused = True
        if self._transport is not None and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()
            return
        self._writing_paused = False
        if self._waiting is not None or self._deferred:
            return  # reading stays paused until the upstream answer is written, or its turn
        if self._transport is not None and self._reading_paused:
            self._reading_paused = False
            self._transport.resume_reading()
        self._serve()

    def close(self) -> None:
        """Close the connection (shutdown); a lookup waiting for upstream is answered first."""
        if self._handler is None and self._transport is not None:
            if self._waiting is None:
                self._transport.close()
            else:
                self._closing = True

    def _serve(self) -> None:
        """Answer the complete heads in the buffer, in order, in one write; at the first
        one that is not the front's, aiohttp's from there on."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        buffer, pos = self._buffer, 0
        out: list[bytes] = []
        turn = self._server.turn
        while not self._writing_paused and (end := buffer.find(b"\r\n\r\n", pos)) >= 0:
            if turn.spent():
                self._write(out)
                self._buffer = buffer[pos:]
                self._defer()
                return
            scanned = scan_head(buffer[pos:end])
            answer = None if scanned is None else self._answer(scanned)
            if answer is None:
                self._write(out)
                self._hand_over(buffer[pos:])
                return
            if not isinstance(answer, bytes):
                self._write(out)
                self._buffer = buffer[pos:]  # from this request on: the defect's hand-over
                self._wait(answer, end + 4 - pos)
                return
            out.append(answer)
            pos = end + 4
        self._write(out)
        rest = self._buffer = buffer[pos:]
        # a partial head: wait for more if it may be ours, else it is aiohttp's
        if rest and not self._writing_paused and not _may_be_ours(rest):
            self._hand_over(rest)

    def _answer(
        self, scanned: tuple[str, CIMultiDictProxy[str]]
    ) -> bytes | tuple[Waits, ScannedRequest, float] | None:
        """The bytes answering one scanned head; a lookup that waits for upstream, with
        its request and start; or None: aiohttp's from this request on."""
        server = self._server
        logger = server.access_logger
        logged = logger is not None and logger.enabled
        if logged and not server.front_logs:
            return None
        started = self._loop.time()
        request = ScannedRequest(*scanned, self._remote)
        try:
            response = server.fast.answer(cast(web.Request, request))
        except Exception:  # a defect: aiohttp answers it (a 500), the connection goes on
            log.exception("the lookup front failed on a request; aiohttp takes the connection")
            return None
        if response is None:
            return None
        if not isinstance(response, web.StreamResponse):
            return response, request, started
        return self._encoded(request, response, started)

    def _encoded(
        self, request: ScannedRequest, response: web.StreamResponse, started: float
    ) -> bytes:
        """The answer's bytes, logged when the access log is on."""
        if not isinstance(response, RawAnswer):  # FastLookups answers a keep-alive 1.1 GET raw
            raise TypeError(f"the fast path gave {type(response).__name__} for a scanned head")
        logger = self._server.access_logger
        if logger is not None and logger.enabled:
            logger.log(cast(web.Request, request), response, self._loop.time() - started)
        return response.encoded()

    def _wait(self, waiting: tuple[Waits, ScannedRequest, float], length: int) -> None:
        """Answer a lookup that asks upstream when its answer comes (within the HTTP
        deadline), reading nothing more meanwhile: pipelined requests behind it are
        answered after it, in order, as HTTP/1.1 requires."""
        pending, request, started = waiting
        self._waiting = (request, started, length)
        if self._transport is not None and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()
        pending.then(self._waited)

    def _waited(self, response: web.StreamResponse | Exception) -> None:
        """The upstream lookup answered: write it, then go on with the buffer."""
        assert self._waiting is not None
        request, started, length = self._waiting
        self._waiting = None
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)
        transport = self._transport
        if transport is None or transport.is_closing():
            return  # the client left (the upstream answer is still held for the next call)
        try:
            if isinstance(response, Exception):
                raise response
            answer = self._encoded(request, response, started)
        except Exception:  # a defect: aiohttp answers this request again (a 500, as above)
            log.exception("the lookup front failed on a request; aiohttp takes the connection")
            self._hand_over(self._buffer)
            return
        self._buffer = self._buffer[length:]
        self._write([answer])
        if self._closing:
            transport.close()
            return
        if self._reading_paused and not self._writing_paused:
            self._reading_paused = False
            transport.resume_reading()
        self._serve()

    def _defer(self) -> None:
        """Answer the rest in a later turn, after its timers, reading nothing meanwhile:
        the buffer holds no more than what was read before."""
        self._deferred = True
        if self._transport is not None and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()
        self._loop.call_soon(self._resume)

    def _resume(self) -> None:
        """This connection's turn: read again, and answer what the buffer holds."""
        self._deferred = False
        transport = self._transport
        if self._handler is not None or transport is None or transport.is_closing():
            return  # handed to aiohttp, or gone
        if self._reading_paused and not self._writing_paused:
            self._reading_paused = False
            transport.resume_reading()
        self._serve()

    def _write(self, out: list[bytes]) -> None:
        if not out:
            return
        assert self._transport is not None
        self._transport.write(out[0] if len(out) == 1 else b"".join(out))
        self._close_at = self._loop.time() + self._server.keepalive_timeout

    def _hand_over(self, rest: bytes) -> None:
        """aiohttp's RequestHandler from here on, fed what the front has not answered."""
        transport = self._transport
        assert transport is not None
        self._forget()
        self._buffer = b""
        HANDOVERS.inc()
        handler = self._handler = self._server.handler()
        if self._reading_paused:  # aiohttp reads on while its writes wait in drain()
            self._reading_paused = False
            transport.resume_reading()
        handler.connection_made(transport)
        if self._writing_paused:
            handler.pause_writing()
        if rest:
            handler.data_received(rest)

    def _forget(self) -> None:
        self._server.fronts.discard(self)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _on_idle(self) -> None:
        """The keep-alive timeout: close a connection idle since its last answer."""
        self._idle = None
        if self._handler is not None or self._transport is None:
            return
        if self._waiting is not None:  # not idle: an answer is on its way
            self._close_at = self._loop.time() + self._server.keepalive_timeout
        if self._loop.time() < self._close_at:
            self._idle = self._loop.call_at(self._close_at, self._on_idle)
            return
        self._transport.close()
