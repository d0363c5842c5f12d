"""make_app(): the main aiohttp application, its keys, and the API families mounted on it."""

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
from cnamd.http.family import Family, mount
from cnamd.http.keys import (
    AUTH_LIMITER,
    DIRECTORY,
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

#: every API family: its name, the URL prefixes it owns, its routes, its error shape
#: (http/family.py); cnamd's own shape where none is given
FAMILIES = (
    # /healthz, /readyz, /metrics, /openapi.json share no prefix: on the main app
    Family("operations", (), health.ROUTES + openapi.ROUTES),
    Family("lookup", ("/v1/lookup",), lookup.ROUTES, lookup.error_shape),
    Family("directories", ("/v1/directory",), phones.ROUTES),
    Family("OpenCNAM", ("/v3/phone", "/v2/phone"), opencnam.ROUTES, opencnam.error_shape),
    Family("phone books", ("/api/user", "/api/partner"), cnam.ROUTES + cnam_csv.ROUTES),
    Family(
        "provisioning",
        ("/api/operator",),
        provisioning.ROUTES + approvals.ROUTES + upstream.ROUTES,
    ),
    Family("Wazo", ("/api/confd",), phone_numbers.ROUTES, phone_numbers.error_shape),
    Family("Flowroute", ("/v2/cnams", "/v2/numbers"), flowroute.ROUTES, flowroute.error_shape),
    Family("Atmosphere", ("/_rest",), atmosphere.ROUTES, atmosphere.error_shape),
)


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
    cnam_csv.add_bulk_workers(app)
    mount(app, FAMILIES)
    return app
