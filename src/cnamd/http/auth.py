"""Who is asking: API-key credentials in the three forms clients send them.

``Authorization: Bearer KEYID.SECRET``, ``X-Auth-Token: KEYID.SECRET``
(Wazo's clients) and HTTP Basic with user ``KEYID`` and password ``SECRET``
(Flowroute's ``accessKey:secretKey``). A source that keeps failing is
refused with 429 before its guesses reach the database.
"""

from __future__ import annotations

import binascii
import ipaddress
import math
import time

from aiohttp import BasicAuth, web

from cnamd import metrics
from cnamd.errors import TooManyRequests, Unauthorized
from cnamd.http.db import connection
from cnamd.http.keys import AUTH_LIMITER, DIRECTORY, PRINCIPAL, TRUSTED
from cnamd.model import Principal
from cnamd.store import apikeys

__all__ = ["credentials", "is_credential_text", "lookup_principal", "principal"]

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
            return _text(basic.login), _text(basic.password)
        else:
            raise Unauthorized(
                f"unsupported Authorization scheme {scheme[:20]!r}; use Bearer or Basic",
                field=_FIELD,
            )
    if token is None:
        return None
    parts = apikeys.split_token(_text(token))
    if parts is None:
        raise Unauthorized("an API token has the form KEYID.SECRET", field=_FIELD)
    return parts


def is_credential_text(value: str) -> bool:
    """Whether ``value`` can be a key id, secret or token: printable ASCII, as every
    one cnamd issues is (a NUL or a stray byte would otherwise reach PostgreSQL)."""
    return value.isascii() and value.isprintable()


def _text(value: str) -> str:
    if not is_credential_text(value):
        raise Unauthorized(
            "credentials must be printable ASCII (an API key id and secret)", field=_FIELD
        )
    return value


def _refuse_flooding(request: web.Request, now: float) -> None:
    """429 for a source that has spent its failed-login budget."""
    limiter = request.app[AUTH_LIMITER]
    if limiter.available(request.remote or "", now) < 1.0:
        metrics.RATELIMITED.labels("http").inc()
        raise TooManyRequests(
            "too many failed logins from this address; try again later",
            retry_after=math.ceil(1.0 / limiter.rate),
            field=_FIELD,
        )


def lookup_principal(request: web.Request) -> Principal | None:
    """Who asks for a lookup, checked in memory (lookups never touch the database).

    Credentials come as for the management API or as OpenCNAM's
    ``account_sid``/``auth_token`` query parameters. Without any, a source in
    ``http.trusted_networks`` asks as the operator would (None); any other
    source is refused.
    """
    now = time.monotonic()
    _refuse_flooding(request, now)
    try:
        found = credentials(request)
        sid, token = request.query.get("account_sid"), request.query.get("auth_token")
        if found is None and sid and token:
            found = (sid, token)
        if found is None:
            if _trusted(request):
                return None
            raise Unauthorized(
                "lookups need an API key, or a source in http.trusted_networks", field=_FIELD
            )
        contexts = request.app[DIRECTORY].contexts
        who = None if contexts is None else contexts.authenticate(*found, time.time())
        if who is None:
            raise Unauthorized("unknown, revoked or expired API key", field=_FIELD)
    except Unauthorized:
        request.app[AUTH_LIMITER].allow(request.remote or "", now)
        raise
    return who


def _trusted(request: web.Request) -> bool:
    try:
        addr = ipaddress.ip_address(request.remote or "")
    except ValueError:
        return False
    return any(addr in net for net in request.app[TRUSTED])


async def principal(request: web.Request) -> Principal:
    """The principal behind the request's key: 401 without valid credentials,
    429 for a source over its failed-login budget. Memoized per request."""
    if PRINCIPAL in request:
        return request[PRINCIPAL]
    now = time.monotonic()
    _refuse_flooding(request, now)
    try:
        found = credentials(request)
        if found is None:
            raise Unauthorized("credentials required: an API key", field=_FIELD)
        async with connection(request) as conn:
            who = await apikeys.authenticate(conn, *found)
        if who is None:
            raise Unauthorized("unknown, revoked or expired API key", field=_FIELD)
    except Unauthorized:
        request.app[AUTH_LIMITER].allow(request.remote or "", now)
        raise
    request[PRINCIPAL] = who
    return who
