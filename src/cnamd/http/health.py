"""Liveness, readiness and the Prometheus exposition."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from cnamd import metrics
from cnamd.http.family import Route
from cnamd.http.keys import POOL, READINESS, main_app
from cnamd.store.pool import publish_pool_metrics


async def healthz(_request: web.Request) -> web.Response:
    """Alive: the event loop answers."""
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: first load done, database reachable (or snapshot allowed), listeners up."""
    status, body = main_app(request)[READINESS].readiness()
    return web.json_response(body, status=status)


async def metrics_handler(request: web.Request) -> web.Response:
    """Every worker's metrics merged (metrics.exposition), this one's brought up to date."""
    pool = main_app(request).get(POOL)
    if pool is not None:
        publish_pool_metrics(pool)
    body = metrics.exposition() + main_app(request)[READINESS].metrics_extra()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


ROUTES: tuple[Route, ...] = (
    ("GET", "/healthz", healthz),
    ("GET", "/readyz", readyz),
    ("GET", "/metrics", metrics_handler),
)
