"""``GET /openapi.json``: the API's OpenAPI 3.1 document, kept in the repo beside this file.

The document is written by hand, not generated: it carries the contracts'
wording (seed 000's status words, what a miss looks like to FreePBX) that no
handler signature holds. tests/http/test_openapi.py fails when a route is
missing from it, or when it describes a route that does not exist.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from cnamd.http.family import Route

DOCUMENT = resources.files("cnamd.http").joinpath("openapi.json")


async def openapi(_request: web.Request) -> web.Response:
    return web.Response(body=DOCUMENT.read_bytes(), content_type="application/json")


ROUTES: tuple[Route, ...] = (("GET", "/openapi.json", openapi),)
