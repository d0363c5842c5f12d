"""The caller-name question every HTTP front asks: who asks, which number, what the cache says.

``/v1/lookup``, OpenCNAM's ``/v3/phone`` and the phones' per-call searches
differ only in how they read the number and render the answer; asking lives
here once, so they authenticate, scope, normalize and count alike. Answered
from the cache, never the database (DESIGN.md "The cache").
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

from aiohttp import web

from cnamd import metrics
from cnamd.errors import CnamdError, InvalidNumber, TooManyRequests, Unauthorized
from cnamd.http.errors import CHALLENGE, status_of
from cnamd.http.keys import DIRECTORY, SETTINGS
from cnamd.model import LookupContext, LookupResult, Principal, Scope
from cnamd.numbers import parse_number
from cnamd.presentation import Unavailable, unavailable

__all__ = ["Answer", "BareDigits", "ask", "bare_error", "context", "text_response"]

# Pre-bound children (STYLE habit 8), tallied and flushed once a second.
_HIT = {scope: metrics.Tally(metrics.LOOKUPS.labels("http", "hit", scope.label)) for scope in Scope}
_MISS = metrics.Tally(metrics.LOOKUPS.labels("http", "miss", "none"))
_INVALID = metrics.Tally(metrics.LOOKUPS.labels("http", "invalid", "none"))
_ANONYMOUS = metrics.Tally(metrics.LOOKUPS.labels("http", "anonymous", "none"))
_DURATION = metrics.TallyHistogram(metrics.LOOKUP_DURATION.labels("http"), metrics.LOOKUP_BUCKETS)


class BareDigits(enum.Enum):
    """How a number of digits without ``+`` is read."""

    #: a national number in the asker's region (cnamd's own API, DESIGN.md)
    NATIONAL = "national"
    #: E.164 without its ``+`` first, then national: OpenCNAM takes both
    #: (``/v3/phone/16502530000``); the first reading that has a name wins
    E164_FIRST = "e164-first"


@dataclass(frozen=True, slots=True)
class Answer:
    """One lookup's outcome.

    ``number`` is the caller's E.164 number, or the word as sent for a
    withheld or unknown caller (``unavailable`` then says which).
    """

    number: str
    found: LookupResult | None
    unavailable: Unavailable | None = None


def ask(
    request: web.Request,
    raw: str,
    principal: Principal | None,
    digits: BareDigits = BareDigits.NATIONAL,
    started: float | None = None,
) -> Answer:
    """Look ``raw`` up for ``principal`` (from ``lookup_principal``), scoped by the
    ``tenant``/``user``/``called`` parameters; InvalidNumber (counted) if it is no
    number at all. ``started`` (perf_counter) is when the request came in."""
    started = time.perf_counter() if started is None else started
    ctx, region = context(request, principal)
    why = unavailable(raw)
    if why is not None:
        (_ANONYMOUS if why is Unavailable.PRIVATE else _MISS).inc()
        return Answer(raw.strip(), None, why)
    try:
        answer = _resolve(request, raw, ctx, region, digits)
    except InvalidNumber:
        _INVALID.inc()
        raise
    _DURATION.observe(time.perf_counter() - started)
    if answer.found is None:
        _MISS.inc()
    else:
        _HIT[answer.found.scope].inc()
    return answer


def context(request: web.Request, principal: Principal | None) -> tuple[LookupContext, str | None]:
    """Whose names answer (and their region), from ``tenant``/``user``/``called``
    within the principal's reach (``Directory.request_context``)."""
    query = request.query
    return request.app[DIRECTORY].request_context(
        tenant=query.get("tenant"),
        user=query.get("user"),
        called=query.get("called"),
        principal=principal,
    )


def _resolve(
    request: web.Request, raw: str, ctx: LookupContext, region: str | None, digits: BareDigits
) -> Answer:
    directory = request.app[DIRECTORY]
    text = raw.strip()
    if digits is BareDigits.E164_FIRST and text.isdigit() and not text.startswith("0"):
        readings = [parse_number("+" + text), parse_number(text, region) if region else None]
        numbers = list(dict.fromkeys(n for n in readings if n is not None))
        for number in numbers:
            found = directory.resolve(number, ctx)
            if found is not None:
                return Answer(number, found)
        if numbers:
            return Answer(numbers[0], None)
    number, found = directory.lookup(raw, ctx, region)
    return Answer(number, found)


def text_response(request: web.Request, answer: Answer) -> web.Response:
    """The plain-text answer (Asterisk ``CURL()``, FreePBX): the bare name,
    ``names.private_name`` for a withheld caller, or a 404 whose body is
    ``names.unknown_name`` -- empty by default, as FreePBX shows any body."""
    names = request.app[SETTINGS].names
    if answer.unavailable is Unavailable.PRIVATE:
        return web.Response(text=names.private_name, content_type="text/plain")
    if answer.found is None:
        return web.Response(status=404, text=names.unknown_name, content_type="text/plain")
    return web.Response(text=answer.found.name, content_type="text/plain")


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
