"""make_app(): the aiohttp application, its keys and routes."""

from __future__ import annotations

from aiohttp import web, web_response

from cnamd.cache.directory import Directory
from cnamd.http import (
    approvals,
    atmosphere,
    cnam,
    cnam_csv,
    flowroute,
    health,
    lookup,
    openapi,
    opencnam,
    phone_numbers,
    phones,
    provisioning,
    upstream,
)
from cnamd.http.bodies import MAX_JSON_BYTES
from cnamd.http.errors import error_middleware
from cnamd.http.keys import (
    AUTH_LIMITER,
    DIRECTORY,
    ERROR_SHAPES,
    POOL,
    READINESS,
    SETTINGS,
    TRUSTED,
    VERIFIED,
    Readiness,
)
from cnamd.http.trusted import TrustedNetworks
from cnamd.http.verified import VerifiedKeys
from cnamd.ratelimit import TokenBucket
from cnamd.settings import Settings
from cnamd.sharedlimits import RateLimiter
from cnamd.store.pool import Pool

#: the largest body read whole (JSON, forms); CSV imports stream theirs
MAX_BODY = MAX_JSON_BYTES


def _name_the_server(app: web.Application, software: str) -> None:
    """``Server: software`` on every answer, instead of aiohttp's ``Python/3.x aiohttp/3.x``.

    The hook covers what the app answers; answers aiohttp's parser gives before
    any app sees the request (a malformed request line or header) take the
    module default, which is therefore replaced too.
    """

    async def server_header(_request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = software

    app.on_response_prepare.append(server_header)
    web_response.SERVER_SOFTWARE = software  # type: ignore[attr-defined]  # aiohttp.http's constant


def make_app(
    settings: Settings,
    directory: Directory,
    readiness: Readiness,
    pool: Pool | None = None,
    auth_limiter: RateLimiter | None = None,
) -> web.Application:
    """The HTTP front; every dependency is passed in (one composition root: server.py).

    ``pool`` serves the management API's reads and writes; lookups never use it.
    ``auth_limiter`` meters failed logins per source (server.py passes the one its
    workers share).
    """
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY)
    app[ERROR_SHAPES] = {}
    _name_the_server(app, settings.server.software)
    app[SETTINGS] = settings
    app[DIRECTORY] = directory
    app[READINESS] = readiness
    app[TRUSTED] = TrustedNetworks(settings.http.trusted_networks)
    app[VERIFIED] = VerifiedKeys()
    if auth_limiter is None:  # tests and benches: this process's own
        http = settings.http
        auth_limiter = TokenBucket(http.auth_failure_rate, http.auth_failure_burst)
    app[AUTH_LIMITER] = auth_limiter
    if pool is not None:
        app[POOL] = pool
    health.add_routes(app)
    openapi.add_routes(app)
    lookup.add_routes(app)
    opencnam.add_routes(app)
    phones.add_routes(app)
    cnam.add_routes(app)
    cnam_csv.add_routes(app)
    provisioning.add_routes(app)
    phone_numbers.add_routes(app)
    flowroute.add_routes(app)
    approvals.add_routes(app)
    atmosphere.add_routes(app)
    upstream.add_routes(app)
    return app
