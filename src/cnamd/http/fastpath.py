"""The lookup GETs a PBX or a desk phone sends, answered before aiohttp's router and middleware.

A PBX farm asks ``/v1/lookup/{number}`` and ``/v3/phone/{number}`` (or
``/v2/phone/``) once per inbound call, a desk phone its directory's number
search (``/v1/directory/{yealink,cisco,gigaset}?term=`` or ``hm=``); resolving
a route among a hundred, wrapping middleware and the response hook cost more
than the lookup itself (bench/README.md, "HTTP lookups"). ``FastLookups`` sits
where aiohttp calls the application (``LookupRunner``): a GET of one of those
paths whose every part is plain -- a number of digits (with or without ``+``
on the lookup routes), no percent escapes, only the route's own parameters of
plain characters, each once -- is answered here, by the same functions as the
routes' handlers (http/answers.py, lookup.py, opencnam.py, phonebooks.py) and
counted in the same metrics; a local miss goes on to the held upstream answers
(``_after_upstream``), from memory as ``answers.ask_all`` reads them. Anything
else and anything that is going to be refused (no or bad credentials, a tenant
parameter, a cache still loading) go to the application untouched; a miss an
upstream source must be asked for is ``Waiting``, awaited here or by the
connection front as ``answers.ask_all`` awaits it. The application's answer is
the reference:
tests/http/test_fastpath.py holds this path to it.

What the skipped middleware does is done here as cheaply: the input guard
(``bodies.check_request``) has nothing to refuse in what passes the plain
checks, and the request is counted by route template in
``cnamd_http_requests_total``. The Server header is aiohttp's module
default, which app.py sets to ``server.software``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http import HttpVersion11
from aiohttp.web_server import Server

from cnamd import metrics, phonebooks
from cnamd.access import Principal
from cnamd.errors import CnamdError, InvalidNumber
from cnamd.http import lookup, opencnam
from cnamd.http.answers import (
    Answer,
    Rendered,
    asked_upstream,
    bare_invalid,
    count,
    goes_upstream,
    json_invalid,
    named_by,
    resolved,
    text_answer,
)
from cnamd.http.auth import credentials, live_key
from cnamd.http.front import FrontServer
from cnamd.http.keys import DIRECTORY, PRINCIPAL, SETTINGS, TRUSTED, UPSTREAM
from cnamd.http.raw_answer import RawAnswer
from cnamd.model import LookupContext
from cnamd.phonebooks import Entry
from cnamd.presentation import unavailable
from cnamd.upstream.chain import Found, Upstream

__all__ = ["FastLookups", "LookupRunner"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: path before the number -> (route template, OpenCNAM's formats)
_ROUTES: dict[str, tuple[str, bool]] = {
    "/v1/lookup": ("/v1/lookup/{number}", False),
    "/v3/phone": ("/v3/phone/{number}", True),
    "/v2/phone": ("/v2/phone/{number}", True),
}
_NUMBER = re.compile(r"\+?[0-9]{1,20}").fullmatch
_VALUE = re.compile(r"[A-Za-z0-9_.\-]{1,256}").fullmatch
_PARAMS = frozenset({"format", "account_sid", "auth_token"})
_KEY_PARAMS = frozenset({"account_sid", "auth_token"})
#: desk phones' number searches (http/phones.py): vendor -> the parameters they send
_DIRECTORY_PARAMS = {
    "yealink": _KEY_PARAMS | {"term"},
    "cisco": _KEY_PARAMS | {"term"},
    "gigaset": _KEY_PARAMS | {"hm", "reqid"},
}
_SEARCHES = frozenset(_DIRECTORY_PARAMS)
#: principals whose lookup context is remembered (FastLookups._context)
CONTEXT_MEMO = 4096
_DIRECTORY_ROUTE = "/v1/directory/{vendor}"
_DIGITS = re.compile(r"[0-9]{1,20}").fullmatch
_REQID = re.compile(r"[A-Za-z0-9_-]{1,32}").fullmatch  # http/phones.py's: echoed into XML
XML_TYPE = "text/xml; charset=utf-8"


class _Refer(Exception):
    """A request the application answers (FastLookups._principal)."""


def plain_params(query: str, known: frozenset[str] = _PARAMS) -> dict[str, str] | None:
    """The query's parameters when each is a ``known`` one, sent once, with a value of
    plain characters (nothing to decode); None for anything else."""
    params: dict[str, str] = {}
    if not query:
        return params
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name not in known or name in params or not _VALUE(value):
            return None
        params[name] = value
    return params


def _after_upstream(app: web.Application, answer: Answer, ctx: LookupContext) -> Answer | None:
    """A local miss as ``answers.ask_all`` completes it, when that needs no wait
    (``Upstream.from_memory``); None when a source must be asked: the application
    waits for it."""
    upstream = app.get(UPSTREAM)
    if upstream is None or not goes_upstream(upstream, answer, ctx):
        return answer
    found = upstream.from_memory(answer.number)
    return None if found is None else named_by(answer, found)


class FastLookups:
    """aiohttp's request handler: the plain lookup GETs here, the rest to ``fallback``."""

    __slots__ = ("_app", "_asked", "_contexts", "_fallback")

    def __init__(self, app: web.Application, fallback: Handler) -> None:
        self._app = app
        self._fallback = fallback
        # principal -> its request_context(), for the contexts table it was computed from
        self._asked: dict[Principal | None, tuple[LookupContext, str | None]] = {}
        self._contexts: object = None

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET" and "Expect" not in request.headers:
            response = self.answer(request)
            if isinstance(response, Waiting):
                return await response.finished()
            if response is not None:
                return response
        return await self._fallback(request)

    def answer(self, request: web.Request) -> web.StreamResponse | Waiting | None:
        """The answer to a plain lookup GET; Waiting when it is a local miss an upstream
        source must be asked for; None: the application answers it."""
        started = time.perf_counter()
        path, _, query = request.raw_path.partition("?")
        head, _, raw = path.rpartition("/")
        route = _ROUTES.get(head)
        if route is None:
            if head == "/v1/directory" and raw in _SEARCHES:
                return self._directory(request, raw, query, started)
            return None
        if not _NUMBER(raw):
            return None
        params = plain_params(query)
        if params is None:
            return None
        app = self._app
        directory = app[DIRECTORY]
        if not directory.serving or unavailable(raw) is not None:
            return None
        vendor = route[1]
        headers = request.headers
        fmt, accept = params.get("format"), headers.get("Accept", "")
        try:
            if vendor:
                kind = opencnam.answer_format(fmt, accept)
            else:
                kind = "text" if lookup.wants_text(fmt, accept) else "json"
        except CnamdError:
            return None
        asked = self._context(request, params)
        if asked is None:
            return None
        try:
            answer = resolved(directory, raw, *asked)
        except InvalidNumber as exc:
            # the error shapes' answer to a refused number (lookup.error_shape,
            # opencnam.error_shape): cnamd's JSON error, or in a text format an empty body
            refusal = json_invalid(exc) if kind == "json" else bare_invalid(exc)
            response = _written(request, refusal)
            metrics.HTTP.record(route[0], "GET", response.status, time.perf_counter() - started)
            return response
        if answer.found is None:
            after = _after_upstream(app, answer, asked[0])
            if after is None:  # the sources are asked, as answers.ask_all asks them
                return Waiting(
                    self, request, answer, ctx=asked[0], route=route, kind=kind, started=started
                )
            answer = after
        return self.respond(request, answer, route, kind, started)

    @property
    def upstream(self) -> Upstream:
        """The upstream sources: a ``Waiting`` is made only where they are set."""
        return self._app[UPSTREAM]

    def respond(
        self,
        request: web.Request,
        answer: Answer,
        route: tuple[str, bool],
        kind: str,
        started: float,
    ) -> web.StreamResponse:
        """A lookup's answer counted, rendered in its route's format, and recorded."""
        count(answer, started)
        names = self._app[SETTINGS].names
        template, vendor = route
        if kind != "json":
            rendered = text_answer(answer, names)
        elif vendor:
            rendered = opencnam.json_answer(answer, names.private_name)
        else:
            rendered = lookup.json_answer(answer, names.private_name)
        response = _written(request, rendered)
        metrics.HTTP.record(template, "GET", response.status, time.perf_counter() - started)
        return response

    def _directory(
        self, request: web.Request, vendor: str, query: str, started: float
    ) -> web.StreamResponse | None:
        """A desk phone's number search (``term``, Gigaset's ``hm``) of plain digits, as
        http/phones.py answers it: the scoped local lookup, one entry or none. Name
        searches and exports read the database: the application answers them."""
        params = plain_params(query, _DIRECTORY_PARAMS[vendor])
        if params is None:
            return None
        term = params.get("hm" if vendor == "gigaset" else "term", "")
        app = self._app
        directory = app[DIRECTORY]
        if not _DIGITS(term) or not directory.serving:
            return None
        asked = self._context(request, params)
        if asked is None:
            return None
        try:
            answer = resolved(directory, term, *asked)
        except InvalidNumber:
            entries = []  # a phone can show "not found", not an error
        else:
            count(answer, started)
            entries = [] if answer.found is None else [Entry(answer.found.name, term)]
        if vendor == "yealink":
            body = phonebooks.yealink(entries)
        elif vendor == "cisco":
            prompt = f"{len(entries)} found" if entries else "No name found"
            body = phonebooks.cisco(entries, "Directory", prompt)
        else:
            reqid = params.get("reqid", "")
            body = phonebooks.gigaset(
                entries, searched="hm", reqid=reqid if _REQID(reqid) else None
            )
        response = _written(request, Rendered(200, XML_TYPE, body))
        metrics.HTTP.record(_DIRECTORY_ROUTE, "GET", 200, time.perf_counter() - started)
        return response

    def _context(
        self, request: web.Request, params: dict[str, str]
    ) -> tuple[LookupContext, str | None] | None:
        """Whose names answer and their region, or None: the application answers.

        Memoized per principal: without ``tenant``, ``user`` and ``called`` (which the
        fast path leaves to the application), ``request_context`` depends on the
        principal and the contexts table alone, and the change feed installs a new
        table object for every change (the memo starts over then)."""
        try:
            who = self._principal(request, params)
        except (CnamdError, _Refer):
            return None
        directory = self._app[DIRECTORY]
        if directory.contexts is not self._contexts:
            self._contexts = directory.contexts
            self._asked.clear()
        asked = self._asked.get(who)
        if asked is None:
            try:
                asked = directory.request_context(principal=who)
            except CnamdError:
                return None
            if len(self._asked) >= CONTEXT_MEMO:
                self._asked.clear()
            self._asked[who] = asked
        return asked

    def _principal(self, request: web.Request, params: dict[str, str]) -> Principal | None:
        """Whose lookup this is, as ``auth.lookup_principal`` decides it for a request
        it lets through: None for a trusted source without credentials. _Refer for
        anything it would refuse or that needs the application (no credentials from
        an untrusted source, a key that is not a live one)."""
        found = credentials(request)
        if found is None and "account_sid" in params and "auth_token" in params:
            found = (params["account_sid"], params["auth_token"])
        if found is None:
            if request.remote in self._app[TRUSTED]:
                return None
            raise _Refer
        who = live_key(self._app, *found)
        if who is None:
            raise _Refer
        request[PRINCIPAL] = who  # the access log's key_id, as auth.lookup_principal records it
        return who


class Waiting:
    """A plain lookup whose local miss goes to the upstream sources: ``finished()`` is
    its answer once the chain names the number or ``upstream.http_deadline`` passes,
    as ``answers.ask_all`` gives it. The connection front takes it through ``then()``,
    in order with the requests pipelined behind it, so a PBX's connection stays on the
    front."""

    __slots__ = ("_ctx", "_done", "_fast", "_kind", "_miss", "_route", "_started", "request")

    def __init__(
        self,
        fast: FastLookups,
        request: web.Request,
        miss: Answer,
        *,
        ctx: LookupContext,
        route: tuple[str, bool],
        kind: str,
        started: float,
    ) -> None:
        self._fast = fast
        self.request = request
        self._miss = miss
        self._ctx = ctx
        self._route = route
        self._kind = kind
        self._started = started
        self._done: Callable[[web.StreamResponse | Exception], None] | None = None

    async def finished(self) -> web.StreamResponse:
        """The answer, awaited: aiohttp's path (a connection the front handed over)."""
        fast = self._fast
        answer = await asked_upstream(fast.upstream, self._miss, self._ctx)
        return fast.respond(self.request, answer, self._route, self._kind, self._started)

    def then(self, done: Callable[[web.StreamResponse | Exception], None]) -> None:
        """``finished()`` as a callback, called once with the answer or with the defect
        that kept it from being rendered: the connection front's path. A burst of
        unknown numbers parks hundreds of these; this object and the chain's wait
        (``Chain.later``) are what one holds, where a task and its coroutine frames
        held dozens of objects, each walked by the collector's young passes
        (bench/README.md, "What makes the loop late during the burst")."""
        self._done = done
        self._fast.upstream.later(self._miss.number, "http", self._ctx.tenant_id, self._answered)

    def _answered(self, name: str | None, source: str | None) -> None:
        done = self._done
        assert done is not None
        try:
            answer = named_by(self._miss, Found(name, source))
            response = self._fast.respond(
                self.request, answer, self._route, self._kind, self._started
            )
        except Exception as exc:  # the front hands the request to aiohttp
            done(exc)
            return
        done(response)


def _written(request: web.Request, rendered: Rendered) -> web.StreamResponse:
    """RawAnswer where aiohttp's own answer would be exactly it (HTTP/1.1 keep-alive)."""
    if request.version == HttpVersion11 and request.keep_alive:
        return RawAnswer(rendered)
    return rendered.response()


class LookupRunner(web.AppRunner):
    """``web.AppRunner`` whose connections start on the lookup front (http/front.py),
    and whose server hands every request to ``FastLookups`` first."""

    handler_class = FastLookups

    def __init__(self, app: web.Application, *, max_connections: int = 0, **kwargs: Any) -> None:
        """``max_connections``: the FrontServer's cap (0: none); the rest as AppRunner's."""
        super().__init__(app, **kwargs)
        self.max_connections = max_connections

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        fallback: Any = server.request_handler
        # the same server, made again as a FrontServer from what aiohttp's app gave it
        return FrontServer(
            self.handler_class(self.app, fallback),
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            max_connections=self.max_connections,
            **server._kwargs,
        )
