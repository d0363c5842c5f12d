"""API families: each one aiohttp sub-application per URL prefix it owns, with its error shape.

A family is the routes of one API (a vendor's, or one of cnamd's own) and
how its errors look to that API's clients. ``mount`` puts each family on the
main application (http/app.py) as a sub-application per prefix, and the
sub-application carries the family's error shape (``ERROR_SHAPE``): the one
error middleware (http/errors.py) renders every CnamdError of a matched
route, the input guard's included, with the shape of the application that
owns the route.

Routes are written with their full public paths, as openapi.json has them,
and go to the sub-application of the prefix they start with. A family whose
routes share no prefix (OpenCNAM's /v3/phone and /v2/phone) has one
sub-application per prefix, all with its shape. No prefix may lie inside
another (``mount`` refuses it: Flowroute is mounted at /v2/cnams and
/v2/numbers, not /v2, which holds OpenCNAM's /v2/phone), so which family
owns a path never depends on the order in which aiohttp tries its
resources. A family without prefixes (the operations routes /healthz,
/readyz, /metrics and /openapi.json share none, and aiohttp refuses an
empty prefix) puts its routes on the main application, whose shape is
cnamd's own, the one unmatched paths get too.

Handlers reach what the main application holds (settings, the directory,
the pool...) as ``main_app(request)[KEY]``, wherever they are mounted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web

from cnamd.http.errors import Handler, cnamd_error
from cnamd.http.keys import ERROR_SHAPE, ErrorShape

__all__ = ["Family", "Route", "mount"]

#: ``(method, full path, handler)``; a GET answers HEAD too, as ``add_get``
Route = tuple[str, str, Handler]


def _within(prefix: str, path: str) -> bool:
    """Is ``path`` the prefix itself or below it (whole path segments)?"""
    return path == prefix or path.startswith(prefix + "/")


@dataclass(frozen=True, slots=True)
class Family:
    """One API family: its name, the URL prefixes it owns, its routes, its error shape.

    ``prefixes`` empty: the routes go on the main application, with cnamd's shape.
    """

    name: str
    prefixes: tuple[str, ...]
    routes: tuple[Route, ...]
    shape: ErrorShape = cnamd_error

    def __post_init__(self) -> None:
        if not self.prefixes:
            if self.shape is not cnamd_error:
                raise ValueError(f"{self.name}: a family without a prefix has cnamd's shape")
            return
        for prefix in self.prefixes:
            if not prefix.startswith("/") or prefix.endswith("/"):
                raise ValueError(f"{self.name}: prefix {prefix!r} must start, not end, with /")
        for _method, path, _handler in self.routes:
            if not any(_within(prefix, path) for prefix in self.prefixes):
                raise ValueError(f"{self.name}: {path} is under none of {self.prefixes}")


def _add(app: web.Application, routes: Iterable[Route]) -> None:
    for method, path, handler in routes:
        if method == "GET":
            app.router.add_get(path, handler)
        else:
            app.router.add_route(method, path, handler)


def _overlapping(families: tuple[Family, ...]) -> list[tuple[str, str]]:
    """Pairs of prefixes where one lies inside (or is) another."""
    prefixes = [prefix for family in families for prefix in family.prefixes]
    return [
        (outer, inner)
        for i, outer in enumerate(prefixes)
        for j, inner in enumerate(prefixes)
        if i != j and _within(outer, inner)
    ]


def mount(app: web.Application, families: Iterable[Family]) -> None:
    """Add each family to ``app``: a sub-application per prefix, or ``app`` itself."""
    families = tuple(families)
    overlaps = _overlapping(families)
    if overlaps:
        raise ValueError(f"API families' prefixes overlap: {overlaps}")
    for family in families:
        if not family.prefixes:
            _add(app, family.routes)
            continue
        for prefix in family.prefixes:
            sub = web.Application()
            sub[ERROR_SHAPE] = family.shape
            _add(
                sub,
                (
                    (method, path[len(prefix) :], handler)
                    for method, path, handler in family.routes
                    if _within(prefix, path)
                ),
            )
            app.add_subapp(prefix, sub)
