"""Who is asking: API-key credentials in the three forms clients send them.

``Authorization: Bearer KEYID.SECRET``, ``X-Auth-Token: KEYID.SECRET``
(Wazo's clients) and HTTP Basic with user ``KEYID`` and password ``SECRET``
(Flowroute's ``accessKey:secretKey``).

Failed logins are metered per source address, in a table every worker shares
(``sharedlimits.py``). A source over its budget gets 429 for credentials that
fail, and its guesses never reach the database: the management API first
checks them against the in-memory key table (as lookups do). Credentials that
are valid still work from that address, and trusted-network lookups without
credentials are never refused for failures: an attacker behind the same
address (NAT, a shared PBX host) cannot lock out the legitimate clients.
"""

from __future__ import annotations

import binascii
import math
import time

from aiohttp import BasicAuth, web

from cnamd import metrics
from cnamd.access import Principal
from cnamd.errors import TooManyRequests, Unauthorized
from cnamd.http.db import idempotent
from cnamd.http.keys import AUTH_LIMITER, DIRECTORY, PRINCIPAL, TRUSTED, VERIFIED, main_app
from cnamd.store import apikeys

__all__ = [
    "credentials",
    "is_credential_text",
    "known_in_memory",
    "live_key",
    "login_failed",
    "lookup_principal",
    "over_budget",
    "principal",
]

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


def _over_budget(request: web.Request, now: float) -> bool:
    """Has the source spent its failed-login budget?"""
    return main_app(request)[AUTH_LIMITER].available(request.remote or "", now) < 1.0


def _too_many(request: web.Request) -> TooManyRequests:
    """The 429 for failing credentials from a source over its budget."""
    metrics.RATELIMITED.labels("http").inc()
    return TooManyRequests(
        "too many failed logins from this address; try again later",
        retry_after=math.ceil(1.0 / main_app(request)[AUTH_LIMITER].rate),
        field=_FIELD,
    )


def _failed(request: web.Request, now: float, over: bool) -> TooManyRequests | None:
    """Spend one of the source's failed-login tokens; the 429 to raise instead of the
    401 when it had none left."""
    if over or not main_app(request)[AUTH_LIMITER].allow(request.remote or "", now):
        return _too_many(request)
    return None


def lookup_principal(request: web.Request) -> Principal | None:
    """Who asks for a lookup, checked in memory (lookups never touch the database).

    Credentials come as for the management API or as OpenCNAM's
    ``account_sid``/``auth_token`` query parameters. Without any, a source in
    ``http.trusted_networks`` asks as the operator would (None); any other
    source is refused.
    """
    now = time.monotonic()
    try:
        found = credentials(request)
        sid, token = request.query.get("account_sid"), request.query.get("auth_token")
        if found is None and sid and token:
            found = (sid, token)
        if found is None:
            if request.remote in main_app(request)[TRUSTED]:
                return None
            raise Unauthorized(
                "lookups need an API key, or a source in http.trusted_networks", field=_FIELD
            )
        who = live_key(main_app(request), *found)
        if who is None:
            raise Unauthorized("unknown, revoked or expired API key", field=_FIELD)
    except Unauthorized as exc:
        raise _failed(request, now, _over_budget(request, now)) or exc from None
    return who


def live_key(app: web.Application, key_id: str, secret: str) -> Principal | None:
    """The principal of a live key with this secret, from the in-memory key table
    (its checks remembered until the table changes: http/verified.py)."""
    contexts = app[DIRECTORY].contexts
    if contexts is None:
        return None
    return app[VERIFIED].principal(contexts, key_id, secret, time.time())


async def principal(request: web.Request) -> Principal:
    """The principal behind the request's key: 401 without valid credentials, 429
    instead when the source is over its failed-login budget. Memoized per request."""
    if PRINCIPAL in request:
        return request[PRINCIPAL]
    now = time.monotonic()
    over = _over_budget(request, now)
    try:
        found = credentials(request)
        if found is None:
            raise Unauthorized("credentials required: an API key", field=_FIELD)
        if over and not known_in_memory(request, *found):
            raise Unauthorized("unknown, revoked or expired API key", field=_FIELD)
        # a read and an idempotent touch: a lost connection is retried once
        who = await idempotent(request, apikeys.authenticate, *found)
        if who is None:
            raise Unauthorized("unknown, revoked or expired API key", field=_FIELD)
    except Unauthorized as exc:
        raise _failed(request, now, over) or exc from None
    request[PRINCIPAL] = who
    return who


def known_in_memory(request: web.Request, key_id: str, secret: str) -> bool:
    """Does the in-memory key table (loaded with the cache) hold this live key? What a
    source over its failed-login budget must pass before the database is asked."""
    return live_key(main_app(request), key_id, secret) is not None


def over_budget(request: web.Request) -> bool:
    """For other login forms: has the source spent its failed-login budget?"""
    return _over_budget(request, time.monotonic())


def login_failed(request: web.Request, over: bool) -> TooManyRequests | None:
    """For other login forms: count a failure; the 429 to raise when over the budget."""
    return _failed(request, time.monotonic(), over)
