"""The caller-name question every HTTP front asks: who asks, which number, what the cache says.

``/v1/lookup``, OpenCNAM's ``/v3/phone`` and the phones' per-call searches
differ only in how they read the number and render the answer; asking lives
here once, so they authenticate, scope, normalize and count alike. Answered
from the cache, never the database (DESIGN.md "The cache").
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from aiohttp import web

from cnamd import metrics
from cnamd.access import Principal
from cnamd.cache.directory import Directory
from cnamd.errors import (
    CnamdError,
    InvalidNumber,
    StoreUnavailable,
    TooManyRequests,
    Unauthorized,
)
from cnamd.http.errors import CHALLENGE, error_body, status_of
from cnamd.http.keys import DIRECTORY, SETTINGS, UPSTREAM, main_app
from cnamd.model import LookupContext, LookupResult, Scope
from cnamd.numbers import number_readings
from cnamd.presentation import Unavailable, unavailable
from cnamd.settings import NameSettings
from cnamd.upstream.chain import Found, Upstream

__all__ = [
    "JSON_TYPE",
    "TEXT_TYPE",
    "Answer",
    "Rendered",
    "ask",
    "ask_all",
    "bare_error",
    "context",
    "count",
    "readings",
    "resolve",
    "resolved",
    "text_answer",
    "text_response",
]

#: the Content-Type of the JSON and plain-text answers, as aiohttp writes them
JSON_TYPE = "application/json; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"
#: numbers whose readings are remembered at most (per process); past it, it starts over
READINGS_MEMO = 16384

# Pre-bound children (STYLE habit 8), tallied and flushed once a second.
_HIT = {scope: metrics.Tally(metrics.LOOKUPS.labels("http", "hit", scope.label)) for scope in Scope}
_MISS = metrics.Tally(metrics.LOOKUPS.labels("http", "miss", "none"))
_INVALID = metrics.Tally(metrics.LOOKUPS.labels("http", "invalid", "none"))
_ANONYMOUS = metrics.Tally(metrics.LOOKUPS.labels("http", "anonymous", "none"))
_DURATION = metrics.TallyHistogram(metrics.LOOKUP_DURATION.labels("http"), metrics.LOOKUP_BUCKETS)


@dataclass(frozen=True, slots=True)
class Rendered:
    """An answer's status, Content-Type and body, before any response object: the
    handlers make a ``web.Response`` of it, the fast path writes it as it is."""

    status: int
    content_type: str
    body: bytes

    def response(self) -> web.Response:
        return web.Response(
            body=self.body, status=self.status, headers={"Content-Type": self.content_type}
        )


@dataclass(frozen=True, slots=True)
class Answer:
    """One lookup's outcome.

    ``number`` is the caller's E.164 number, or the word as sent for a
    withheld or unknown caller (``unavailable`` then says which).
    """

    number: str
    found: LookupResult | None
    unavailable: Unavailable | None = None
    source: str | None = None  # the upstream source that named it (scope upstream)


def ask(
    request: web.Request,
    raw: str,
    principal: Principal | None,
    started: float | None = None,
) -> Answer:
    """Look ``raw`` up for ``principal`` (from ``lookup_principal``), scoped by the
    ``tenant``/``user``/``called`` parameters; InvalidNumber (counted) if it is no
    number at all. ``started`` (perf_counter) is when the request came in.
    Local scopes only: ``ask_all`` goes on to the upstream scope."""
    started = time.perf_counter() if started is None else started
    answer, _ctx = _local(request, raw, principal)
    if answer.unavailable is None:
        count(answer, started)
    return answer


async def ask_all(
    request: web.Request,
    raw: str,
    principal: Principal | None,
    started: float | None = None,
) -> Answer:
    """``ask``, then on a miss the upstream scope: a held answer, else the upstream
    sources within ``upstream.http_deadline`` (issue #17)."""
    started = time.perf_counter() if started is None else started
    answer, ctx = _local(request, raw, principal)
    upstream = main_app(request).get(UPSTREAM)
    if upstream is not None and goes_upstream(upstream, answer, ctx):
        answer = await asked_upstream(upstream, answer, ctx)
    if answer.unavailable is None:
        count(answer, started)
    return answer


def goes_upstream(upstream: Upstream, answer: Answer, ctx: LookupContext) -> bool:
    """Whether a lookup's local answer goes on to the upstream scope: a miss of a
    number, asked in a context whose tenant has not turned upstream off."""
    local_miss = answer.found is None and answer.unavailable is None
    return local_miss and upstream.held.serves(ctx.tenant_id)


async def asked_upstream(upstream: Upstream, miss: Answer, ctx: LookupContext) -> Answer:
    """A local miss completed by the upstream sources, within ``upstream.http_deadline``
    (the step ``ask_all`` and the fast path's ``Waiting`` both take)."""
    return named_by(miss, await upstream.answer(miss.number, "http", ctx.tenant_id))


def named_by(answer: Answer, found: Found) -> Answer:
    """A local miss completed by the upstream scope's answer (a negative one keeps it a miss)."""
    if found.name is None:
        return answer
    result = LookupResult(found.name, answer.number, Scope.UPSTREAM)
    return Answer(answer.number, result, None, found.source)


def _local(
    request: web.Request, raw: str, principal: Principal | None
) -> tuple[Answer, LookupContext]:
    """The local scopes' answer and the context it was asked in; a withheld caller and
    an invalid number counted here."""
    directory = main_app(request)[DIRECTORY]
    if not directory.serving:
        raise StoreUnavailable(
            "names are loading or catching up with the database; retry shortly", field="cache"
        )
    ctx, region = context(request, principal)
    why = unavailable(raw)
    if why is not None:
        (_ANONYMOUS if why is Unavailable.PRIVATE else _MISS).inc()
        return Answer(raw.strip(), None, why), ctx
    return resolved(directory, raw, ctx, region), ctx


def resolved(directory: Directory, raw: str, ctx: LookupContext, region: str | None) -> Answer:
    """``resolve``, an invalid number counted (a hit or a miss is counted by ``count``)."""
    try:
        return resolve(directory, raw, ctx, region)
    except InvalidNumber:
        _INVALID.inc()
        raise


def count(answer: Answer, started: float) -> None:
    """Count a lookup as a hit (by scope) or a miss, with its duration since ``started``."""
    _DURATION.observe(time.perf_counter() - started)
    if answer.found is None:
        _MISS.inc()
    else:
        _HIT[answer.found.scope].inc()


def context(request: web.Request, principal: Principal | None) -> tuple[LookupContext, str | None]:
    """Whose names answer (and their region), from ``tenant``/``user``/``called``
    within the principal's reach (``Directory.request_context``)."""
    query = request.query
    return main_app(request)[DIRECTORY].request_context(
        tenant=query.get("tenant"),
        user=query.get("user"),
        called=query.get("called"),
        principal=principal,
    )


# (raw, region) -> its readings; and -> (reason, status) of its refusal. Exact tuples of
# strings only: the collector stops tracking those at its first pass, so a memo full of
# refusals does not pile up in the oldest generation and set off full collections
# (an object per refusal did: 35 ms passes during the bare-digit benchmark, its p99).
_READINGS: dict[tuple[str, str | None], tuple[str, ...]] = {}
_REFUSALS: dict[tuple[str, str | None], tuple[str, str]] = {}


def readings(raw: str, region: str | None) -> tuple[str, ...]:
    """``number_readings`` memoized, refusals included: a PBX farm asks the same
    callers again and again, and parsing a number (worse, failing to) costs more
    than looking it up. Bounded: past READINGS_MEMO numbers the memo starts over."""
    key = (raw, region)
    known = _READINGS.get(key)
    if known is not None:
        return known
    refused = _REFUSALS.get(key)
    if refused is None:
        if len(_READINGS) + len(_REFUSALS) >= READINGS_MEMO:
            _READINGS.clear()
            _REFUSALS.clear()
        try:
            known = _READINGS[key] = number_readings(raw, region, field="number")
        except InvalidNumber as exc:
            refused = _REFUSALS[key] = (exc.reason, exc.status)
        else:
            return known
    raise InvalidNumber(refused[0], field="number", status=refused[1])


def resolve(directory: Directory, raw: str, ctx: LookupContext, region: str | None) -> Answer:
    """Ask each reading of ``raw`` (numbers.py's rule for digits without ``+``); the one
    holding a name answers, and two holding different names are ambiguous."""
    numbers = readings(raw, region)
    if len(numbers) == 1:
        return Answer(numbers[0], directory.resolve(numbers[0], ctx))
    hits = [(n, found) for n in numbers if (found := directory.resolve(n, ctx)) is not None]
    if len({found.name for _, found in hits}) > 1:
        raise InvalidNumber(
            f"{raw.strip()[:40]!r} is ambiguous: {hits[0][0]} and {hits[1][0]} both have a"
            " name; ask with '+' and the country code",
            field="number",
        )
    return Answer(*hits[0]) if hits else Answer(numbers[0], None)


def text_response(request: web.Request, answer: Answer) -> web.Response:
    """The plain-text answer (Asterisk ``CURL()``, FreePBX): the bare name,
    ``names.private_name`` for a withheld caller, or a 404 whose body is
    ``names.unknown_name`` -- empty by default, as FreePBX shows any body."""
    return text_answer(answer, main_app(request)[SETTINGS].names).response()


def text_answer(answer: Answer, names: NameSettings) -> Rendered:
    """``text_response`` from the answer and the names settings alone (the fast path's)."""
    if answer.unavailable is Unavailable.PRIVATE:
        return Rendered(200, TEXT_TYPE, names.private_name.encode())
    if answer.found is None:
        return Rendered(404, TEXT_TYPE, names.unknown_name.encode())
    return Rendered(200, TEXT_TYPE, answer.found.name.encode())


def bare_error(exc: CnamdError) -> web.Response:
    """An error for the text formats: the error middleware's status and headers
    (http/errors.py) with an *empty* body, which FreePBX and ``CURL()`` would
    otherwise show as the caller's name."""
    response = web.Response(status=status_of(exc), text="", content_type="text/plain")
    if isinstance(exc, Unauthorized):
        response.headers["WWW-Authenticate"] = CHALLENGE
    elif isinstance(exc, TooManyRequests):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def json_invalid(exc: InvalidNumber) -> Rendered:
    """cnamd's JSON error of a number refused (errors.cnamd_error), as the fast path
    writes it: the bytes ``web.json_response`` gives for the same dict."""
    body = json.dumps(error_body(exc.status, exc.reason, exc.field))
    return Rendered(status_of(exc), JSON_TYPE, body.encode())


def bare_invalid(exc: InvalidNumber) -> Rendered:
    """bare_error() of a number refused, as the fast path writes it (no extra header)."""
    return Rendered(status_of(exc), TEXT_TYPE, b"")
