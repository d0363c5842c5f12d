"""API families (http/family.py): each served from its own sub-application, its errors in
its own shape, aiohttp's 404/405 and unmatched paths in cnamd's, route templates in metrics.

No database: every request here fails before a handler needs one (no
credentials, a NUL in the query, no such route), which is where the error
middleware picks the owning family's shape or cnamd's own.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer, make_mocked_request
from api_client import AlwaysReady
from multidict import CIMultiDictProxy

from cnamd.cache.directory import Directory
from cnamd.http.app import FAMILIES, make_app
from cnamd.http.errors import cnamd_error
from cnamd.http.family import Family, mount
from cnamd.http.keys import ERROR_SHAPE
from cnamd.settings import load


def _app() -> web.Application:
    return make_app(load(environ={}), Directory(), AlwaysReady())


def _sample(template: str) -> str:
    """A concrete path for a route template: each ``{variable}`` as ``x1``."""
    return re.sub(r"\{[^}]+\}", "x1", template)


async def test_every_route_is_reached_in_its_familys_application() -> None:
    app = _app()
    for family in FAMILIES:
        for method, path, handler in family.routes:
            request = make_mocked_request(method, _sample(path), app=app)
            info = await app.router.resolve(request)
            where = (family.name, method, path)
            assert info.http_exception is None, where
            assert info.route.resource is not None, where
            assert info.route.resource.canonical == path, where
            assert info.handler == handler, where
            # the main application's own routes resolve with no sub-application
            assert bool(info.apps) == bool(family.prefixes), where
            shape = info.apps[-1].get(ERROR_SHAPE, cnamd_error) if info.apps else cnamd_error
            assert shape is family.shape, where


async def _nothing(_request: web.Request) -> web.Response:
    return web.Response()


def test_a_prefix_inside_another_familys_is_refused() -> None:
    outer = Family("outer", ("/v2",), (("GET", "/v2/x", _nothing),))
    inner = Family("inner", ("/v2/phone",), (("GET", "/v2/phone/{n}", _nothing),))
    with pytest.raises(ValueError, match="overlap"):
        mount(web.Application(), [outer, inner])


def test_a_route_outside_the_familys_prefixes_is_refused() -> None:
    with pytest.raises(ValueError, match="under none"):
        Family("a", ("/v2/cnams",), (("GET", "/v2/cnamsx", _nothing),))


def test_a_family_on_the_main_application_keeps_cnamds_shape() -> None:
    with pytest.raises(ValueError, match="without a prefix"):
        Family("a", (), (("GET", "/x", _nothing),), shape=lambda _r, _e: web.Response())


@pytest.fixture(scope="module")
async def base() -> AsyncIterator[str]:
    server = TestServer(_app(), host="127.0.0.1")
    await server.start_server()
    yield f"http://127.0.0.1:{server.port}"
    await server.close()


async def _call(
    base: str, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, Any, CIMultiDictProxy[str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, base + path, headers=headers) as resp,
    ):
        text = await resp.text()
        body = json.loads(text) if "json" in resp.content_type else text  # JSON:API's too
        return resp.status, body, resp.headers


async def test_each_vendor_family_answers_its_errors_in_its_shape(base: str) -> None:
    status, body, headers = await _call(base, "GET", "/v2/cnams")
    assert status == 401
    assert body["errors"][0]["status"] == 401  # Flowroute's array
    assert headers["WWW-Authenticate"] == 'Basic realm="cnamd"'
    status, body, _ = await _call(base, "GET", "/_rest/v3/my/orders/1")
    assert (status, body) == (401, {"code": 401, "error": "Unauthorized"})  # Atmosphere
    status, body, _ = await _call(base, "GET", "/api/confd/1.1/phone-numbers")
    assert status == 401
    assert isinstance(body, list) and isinstance(body[0], str)  # wazo-confd's messages
    status, body, _ = await _call(base, "GET", "/api/operator/keys")
    assert status == 401
    assert body["status"] == "unauthorized"  # cnamd's own
    assert body["field"] == "authorization"


async def test_the_input_guard_answers_in_the_shape_of_the_family_that_owns_the_route(
    base: str,
) -> None:
    status, body, _ = await _call(base, "GET", "/v2/cnams?limit=%00")
    assert status == 422
    assert body["errors"][0]["detail"] == {"limit": ["limit holds a NUL character"]}
    status, body, _ = await _call(base, "GET", "/_rest/v3/my/orders/1?x=%00")
    assert (status, body) == (422, {"code": 422, "error": "x holds a NUL character"})


async def test_no_route_matched_is_cnamds_shape_even_under_a_vendors_prefix(base: str) -> None:
    status, body, _ = await _call(base, "GET", "/v2/cnams/1/nothing")
    assert status == 404
    assert body["status"] == "not-found"
    status, body, headers = await _call(base, "PUT", "/v2/cnams")
    assert status == 405
    assert body["status"] == "method-not-allowed"
    assert set(headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}
    status, body, _ = await _call(base, "GET", "/_rest/nothing?x=%00")
    assert status == 400
    assert body["field"] == "x"


async def test_requests_are_counted_by_route_template(base: str) -> None:
    await _call(base, "GET", "/_rest/v3/my/orders/1234")
    await _call(base, "GET", "/api/partner/enterprise/acme/cnam")
    _, exposition, _ = await _call(base, "GET", "/metrics")
    routes = set(re.findall(r'cnamd_http_requests_total\{[^}]*route="([^"]*)"', exposition))
    assert {
        "/_rest/v3/my/orders/{order_id}",
        "/api/partner/enterprise/{enterprise}/cnam",
        "unmatched",
    } <= routes
    assert not {r for r in routes if "1234" in r or "acme" in r}
