"""Typed application keys, declared in one place, and ``main_app``: where a handler finds them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from cnamd.access import Principal
from cnamd.bulk_workers import BulkWorkers
from cnamd.cache.directory import Directory
from cnamd.errors import CnamdError
from cnamd.http.trusted import TrustedNetworks
from cnamd.http.verified import VerifiedKeys
from cnamd.settings import Settings
from cnamd.sharedlimits import RateLimiter
from cnamd.store.pool import Pool
from cnamd.upstream.chain import Upstream


class ErrorShape(Protocol):
    """How one API family renders an error (http/family.py, http/errors.py)."""

    def __call__(self, request: web.Request, exc: CnamdError, /) -> web.StreamResponse: ...


class Readiness(Protocol):
    """What /readyz reports: (HTTP status, JSON body with the reasons)."""

    def readiness(self) -> tuple[int, dict[str, Any]]: ...

    def metrics_extra(self) -> bytes:
        """Exposition lines this process adds to /metrics (the supervisor's view)."""
        ...


SETTINGS = web.AppKey("settings", Settings)
DIRECTORY = web.AppKey("directory", Directory)
READINESS = web.AppKey("readiness", Readiness)
POOL = web.AppKey("pool", Pool)
# held upstream answers and the upstream chain, asked after a local miss (issue #17)
UPSTREAM = web.AppKey("upstream", Upstream)
# http.trusted_networks, parsed once, replaced in place on SIGHUP
TRUSTED = web.AppKey("trusted", TrustedNetworks)
# credentials already checked against the key table in memory (http/verified.py)
VERIFIED = web.AppKey("verified", VerifiedKeys)
# failed logins per source address, shared by the workers (http/auth.py)
AUTH_LIMITER: web.AppKey[RateLimiter] = web.AppKey("auth_limiter")
# the worker processes that parse CSV uploads (http.cnam_csv), started on first use
BULK_WORKERS = web.AppKey("bulk_workers", BulkWorkers)
# returns once this process's cache serves a change id: an upload keeps its import turn
# until then (store/imports.py); absent, an upload does not wait
SERVED: web.AppKey[Callable[[int], Awaitable[None]]] = web.AppKey("served")
# on a family's sub-application: the shape of its errors (cnamd's own when absent)
ERROR_SHAPE = web.AppKey("error_shape", ErrorShape)
# the authenticated principal of one request (a request key, set by http.auth)
PRINCIPAL = web.RequestKey("principal", Principal)


def main_app(request: web.Request) -> web.Application:
    """The main application, whose keys hold what every API family shares, from a
    handler mounted anywhere (in a family's sub-application ``request.app`` is the
    sub-application). The first of the matched route's applications: 0.2 us, where
    ``request.config_dict[KEY]`` builds a ChainMapProxy per access and misses in the
    sub-application first (2 us a key, several keys a lookup)."""
    return request.match_info.apps[0]
