"""/openapi.json: a valid OpenAPI 3.1 document that describes exactly the routes served."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from api_client import AlwaysReady, Api
from openapi_spec_validator import validate

from cnamd.cache.directory import Directory
from cnamd.http.app import make_app
from cnamd.settings import load

DOCUMENT = Path(__file__).parents[2] / "src" / "cnamd" / "http" / "openapi.json"
METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DOCUMENT.read_text())
    return doc


def served_routes() -> set[tuple[str, str]]:
    app = make_app(load(environ={}), Directory(), AlwaysReady())
    found = set()
    for route in app.router.routes():
        info = route.get_info()
        path = info.get("formatter") or info.get("path")
        if route.method != "HEAD" and path is not None:
            found.add((route.method.lower(), path))
    return found


def documented_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_every_served_route_is_documented(document: dict[str, Any]) -> None:
    missing = served_routes() - documented_routes(document)
    assert not missing, f"routes missing from openapi.json: {sorted(missing)}"


def test_every_documented_route_is_served(document: dict[str, Any]) -> None:
    stale = documented_routes(document) - served_routes()
    assert not stale, f"openapi.json describes routes that do not exist: {sorted(stale)}"


def test_every_operation_says_what_it_answers(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                assert operation.get("summary"), (method, path)
                assert operation.get("responses"), (method, path)
                assert operation.get("operationId"), (method, path)


async def test_the_daemon_serves_the_document(api: Api, document: dict[str, Any]) -> None:
    reply = await api.call("GET", "/openapi.json")
    assert reply.status == 200
    assert reply.body == document
