"""make_app(): the aiohttp application, its keys and routes."""

from __future__ import annotations

from aiohttp import web

from cnamd.cache.directory import Directory
from cnamd.http import health, lookup
from cnamd.http.errors import error_middleware
from cnamd.http.keys import DIRECTORY, READINESS, SETTINGS, Readiness
from cnamd.settings import Settings

MAX_BODY = 1024 * 1024


def make_app(settings: Settings, directory: Directory, readiness: Readiness) -> web.Application:
    """The HTTP front; every dependency is passed in (one composition root: server.py)."""
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY)
    app[SETTINGS] = settings
    app[DIRECTORY] = directory
    app[READINESS] = readiness
    health.add_routes(app)
    lookup.add_routes(app)
    return app
