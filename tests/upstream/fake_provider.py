"""A real HTTP CNAM provider that misbehaves on purpose, on loopback, in its own thread.

The number asked decides the behaviour (so one server serves a whole test
module): see ``BEHAVIOUR``, and ``FAMILIES`` for many numbers of one behaviour.
Every request is recorded (path and headers), so tests count what was paid for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from cnamd.cache.upstream import UpstreamAnswers
from cnamd.settings import load
from cnamd.upstream.chain import Chain

#: number -> what the provider does when asked for it
BEHAVIOUR: dict[str, str] = {
    "+15550002000": "500",
    "+15550003000": "html",
    "+15550004000": "truncated",
    "+15550005000": "reset",
    "+15550006000": "late",  # answers after LATE seconds
    "+15550006001": "later",  # after LATER seconds: past the HTTP lookups' deadline too
    "+15550006002": "later",
    "+15550007000": "404",
    "+15550008000": "long",
    "+15550008001": "foreign",
    "+15550009000": "cookie",  # a name, and a session cookie for whoever asks next
}
LATE = 1.5
LATER = 3.5  # past upstream.http_deadline (2 s by default)
SLOW = 0.2  # every name takes this long: concurrent misses overlap
FAST = "+1333"  # ... but these, answered at once (many paid requests in a short test)
#: families of numbers for tests that need many of each behaviour: +1556, then a digit
#: that says the behaviour (FAMILIES), then any digits
FAMILY = "+1556"
FAMILIES = {
    "0": "name",  # at once
    "1": "404",
    "2": "500",
    "3": "reset",
    "4": "late",  # a name, ``FakeProvider.late`` seconds after it is asked
    "5": "hang",  # never answers (until the provider closes)
}


def unguarded_source(
    port: int, *, timeout: float, countries: tuple[str, ...] = (FAMILY,)
) -> dict[str, object]:
    """The daemon's source for this provider on ``port`` (``{"data": {"caller_name"}}``),
    for ``countries``, with room for every request at once and a breaker that never opens:
    what such a test looks at is the wait for upstream, not the source's guard."""
    return {
        "name": "fake",
        "kind": "http-json",
        "url": f"http://127.0.0.1:{port}/cnam/{{e164}}",
        "name_pointer": "/data/caller_name/caller_name",
        "countries": list(countries),
        "timeout": timeout,
        "max_concurrency": 1000,
        "breaker_errors": 1000,
    }


@contextlib.asynccontextmanager
async def asking(source: dict[str, object]) -> AsyncIterator[Chain]:
    """An upstream chain in this process whose one source is ``source``, started; closed
    after (no database: the answers are held in memory only)."""
    settings = load(environ={}, overrides=["upstream.sources=" + json.dumps([source])])
    chain = Chain(settings.upstream, UpstreamAnswers(), None, max_length=64)
    chain.begin()
    try:
        yield chain
    finally:
        await chain.close()


class FakeProvider:
    """``GET /cnam/{number}`` (http-json shape ``{"data": {"caller_name": ...}}``) and
    ``GET /v3/phone/{number}`` (OpenCNAM's shape)."""

    def __init__(self, port: int, late: float = LATE) -> None:
        self.port = port
        self.late = late  # how late the FAMILIES' late answers come
        self.asked: Counter[str] = Counter()
        self.headers: list[dict[str, str]] = []
        #: number -> the Authorization header and the query of the last request for it
        self.auth: dict[str, str] = {}
        self.query: dict[str, dict[str, str]] = {}
        self.failing = False  # /flaky answers 500 while set
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._started.wait(10), "fake provider did not start"

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/cnam/{number}", self._cnam)
        app.router.add_get("/flaky/{number}", self._flaky)
        app.router.add_get("/v3/phone/{number}", self._opencnam)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._stop = asyncio.Event()
        self._started.set()
        await self._stop.wait()
        await runner.cleanup()

    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        number = request.match_info.get("number", request.path)
        self.asked[number] += 1
        self.headers.append(dict(request.headers))
        self.auth[number] = request.headers.get("Authorization", "")
        self.query[number] = dict(request.query)
        return await handler(request)

    async def _cnam(self, request: web.Request) -> web.StreamResponse:
        number = request.match_info["number"]
        if number.startswith(FAMILY) and len(number) > len(FAMILY):
            return await self._family(request, number)
        what = BEHAVIOUR.get(number, "name")
        if what == "500":
            return web.Response(status=500, text="internal error")
        if what == "html":
            return web.Response(text="<html><body>Login</body></html>", content_type="text/html")
        if what == "truncated":
            return web.Response(
                text='{"data": {"caller_name": {"caller_na', content_type="application/json"
            )
        if what == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if what == "404":
            return web.json_response({"errors": [{"detail": "not found"}]}, status=404)
        if what == "late":
            await asyncio.sleep(LATE)
            return _named("Late Name")
        if what == "later":
            await asyncio.sleep(LATER)
            return _named("Later " + number[-4:])
        if what == "long":
            return _named("  SMITH   JOHN ANTHONY LONGNAME  ")
        if what == "foreign":
            return _named("Jos\u00e9 M\u00fcller")
        if what == "cookie":
            answer = _named("Cookie Monster")
            answer.set_cookie("provider_session", "tenant-a-secret", path="/")
            return answer
        if not number.startswith(FAST):
            await asyncio.sleep(SLOW)
        return _named("Fake " + number[-4:])

    async def _family(self, request: web.Request, number: str) -> web.StreamResponse:
        """A number of one of FAMILIES: answered as its family does."""
        what = FAMILIES.get(number[len(FAMILY)], "name")
        if what == "404":
            return web.json_response({"errors": [{"detail": "not found"}]}, status=404)
        if what == "500":
            return web.Response(status=500, text="internal error")
        if what == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if what in ("late", "hang"):
            assert self._stop is not None
            with contextlib.suppress(TimeoutError):  # the provider closing ends a hang
                async with asyncio.timeout(self.late if what == "late" else None):
                    await self._stop.wait()
            if what == "hang":
                return web.Response(status=503, text="closing")
            return _named("Late " + number[-4:])
        return _named("Fake " + number[-4:])

    async def _opencnam(self, request: web.Request) -> web.Response:
        """OpenCNAM's shape: ``{"name": ...}``."""
        return web.json_response({"name": "Open " + request.match_info["number"][-4:]})

    async def _flaky(self, request: web.Request) -> web.Response:
        if self.failing:
            return web.Response(status=503, text="down")
        return _named("Flaky " + request.match_info["number"][-4:])

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()


def _named(name: str) -> web.Response:
    return web.json_response({"data": {"caller_name": {"caller_name": name}}})
