"""Who is asking: API-key credentials in the three forms clients send them.

``Authorization: Bearer KEYID.SECRET``, ``X-Auth-Token: KEYID.SECRET``
(Wazo's clients) and HTTP Basic with user ``KEYID`` and password ``SECRET``
(Flowroute's ``accessKey:secretKey``). A source that keeps failing is
refused with 429 before its guesses reach the database.
"""

from __future__ import annotations

import binascii
import math
import time

from aiohttp import BasicAuth, web

from cnamd import metrics
from cnamd.errors import TooManyRequests, Unauthorized
from cnamd.http.db import connection
from cnamd.http.keys import AUTH_LIMITER, PRINCIPAL
from cnamd.model import Principal
from cnamd.store import apikeys

__all__ = ["credentials", "principal"]

_FIELD = "authorization"


def credentials(request: web.Request) -> tuple[str, str] | None:
    """``(key_id, secret)`` from the request, None when it carries none at all.

    Credentials that are present but malformed are Unauthorized, naming why.
    """
    token = request.headers.get("X-Auth-Token")
    header = request.headers.get("Authorization")
    if token is None and header is not None:
        scheme, _, rest = header.strip().partition(" ")
        if scheme.lower() == "bearer":
            token = rest
        elif scheme.lower() == "basic":
            try:
                basic = BasicAuth.decode(header)
            except (ValueError, binascii.Error) as exc:
                raise Unauthorized(f"bad Basic credentials: {exc}", field=_FIELD) from exc
            if not basic.login or not basic.password:
                raise Unauthorized("Basic credentials need the key id and the secret", field=_FIELD)
            return basic.login, basic.password
        else:
            raise Unauthorized(
                f"unsupported Authorization scheme {scheme[:20]!r}; use Bearer or Basic",
                field=_FIELD,
            )
    if token is None:
        return None
    parts = apikeys.split_token(token)
    if parts is None:
        raise Unauthorized("an API token has the form KEYID.SECRET", field=_FIELD)
    return parts


async def principal(request: web.Request) -> Principal:
    """The principal behind the request's key: 401 without valid credentials,
    429 for a source over its failed-login budget. Memoized per request."""
    if PRINCIPAL in request:
        return request[PRINCIPAL]
    limiter = request.app[AUTH_LIMITER]
    source = request.remote or ""
    now = time.monotonic()
    if limiter.available(source, now) < 1.0:
        metrics.RATELIMITED.labels("http").inc()
        raise TooManyRequests(
            "too many failed logins from this address; try again later",
            retry_after=math.ceil(1.0 / limiter.rate),
            field=_FIELD,
        )
    try:
        found = credentials(request)
        if found is None:
            raise Unauthorized("credentials required: an API key", field=_FIELD)
        async with connection(request) as conn:
            who = await apikeys.authenticate(conn, *found)
        if who is None:
            raise Unauthorized("unknown, revoked or expired API key", field=_FIELD)
    except Unauthorized:
        limiter.allow(source, now)
        raise
    request[PRINCIPAL] = who
    return who
