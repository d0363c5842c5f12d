"""HTTP lookups over a real socket, answered from a cache loaded from PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from api_client import AlwaysReady, demo_feed

from cnamd.cache.directory import Directory
from cnamd.http.app import make_app
from cnamd.settings import Settings, load


@pytest.fixture
async def client(
    db_url: str, tmp_path: Path, demo_snapshot: Path
) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    settings = load(environ={}, overrides=[f"cache.snapshot_path={tmp_path / 's'}"])
    directory = Directory()
    feed = await demo_feed(db_url, directory, settings, demo_snapshot)
    server = TestServer(make_app(settings, directory, AlwaysReady()), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield session, f"http://127.0.0.1:{server.port}"
    await server.close()
    await feed.stop()


Client = tuple[aiohttp.ClientSession, str]


async def get(client: Client, path: str, **kw: Any) -> tuple[int, str, dict[str, Any] | None]:
    session, base = client
    async with session.get(base + path, **kw) as resp:
        text = await resp.text()
        body = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, text, body


async def test_enterprise_name_as_json(client: Client) -> None:
    status, _, body = await get(client, "/v1/lookup/+492216698712?tenant=demo")
    assert status == 200
    assert body == {
        "number": "+492216698712",
        "name": "John Doe",
        "scope": "enterprise",
        "matched": "+492216698712",
    }


async def test_user_scope_beats_enterprise_scope(client: Client) -> None:
    _, _, body = await get(client, "/v1/lookup/+492216698713?tenant=demo&user=alice")
    assert body is not None and (body["name"], body["scope"]) == ("Jane (mobile)", "user")
    _, _, body = await get(client, "/v1/lookup/+492216698713?tenant=demo")
    assert body is not None and (body["name"], body["scope"]) == ("Jane Doe", "enterprise")


async def test_usergroup_scope_applies_to_its_members(client: Client) -> None:
    _, _, body = await get(client, "/v1/lookup/+4930901820?tenant=demo&user=alice")
    assert body is not None and body["scope"] == "usergroup"


async def test_prefix_block_answers_numbers_inside_it(client: Client) -> None:
    _, _, body = await get(client, "/v1/lookup/+492216698799?tenant=demo")
    assert body is not None
    assert (body["name"], body["matched"]) == ("ACME Cologne", "+4922166987")


async def test_national_number_uses_the_tenants_region(client: Client) -> None:
    status, text, _ = await get(client, "/v1/lookup?number=0221%206698712&tenant=demo&format=text")
    assert (status, text) == (200, "John Doe")


async def test_called_number_owner_gives_the_context(client: Client) -> None:
    _, _, body = await get(client, "/v1/lookup/+492216698712?called=%2B492216698700")
    assert body is not None and body["name"] == "John Doe"


async def test_plain_text_by_accept_header(client: Client) -> None:
    status, text, _ = await get(
        client, "/v1/lookup/+492216698712?tenant=demo", headers={"Accept": "text/plain"}
    )
    assert (status, text) == (200, "John Doe")


async def test_text_miss_is_404_with_empty_body(client: Client) -> None:
    status, text, _ = await get(client, "/v1/lookup/+15555550100?format=text")
    assert (status, text) == (404, "")


async def test_text_errors_keep_their_status_with_an_empty_body(client: Client) -> None:
    """FreePBX would show an error's JSON as the caller's name."""
    status, text, _ = await get(client, "/v1/lookup/not-a-number?format=text")
    assert (status, text) == (400, "")
    status, text, _ = await get(client, "/v1/lookup/+492216698712?format=text&tenant=nosuch")
    assert (status, text) == (404, "")


async def test_json_miss_is_404_with_error(client: Client) -> None:
    status, _, body = await get(client, "/v1/lookup/+15555550100")
    assert status == 404
    assert body is not None and body["status"] == "not-found" and body["field"] == "number"


async def test_tenant_names_are_invisible_without_context(client: Client) -> None:
    status, _, _ = await get(client, "/v1/lookup/+492216698712")
    assert status == 404


@pytest.mark.parametrize(
    "path,field",
    [
        ("/v1/lookup/abc", "number"),
        ("/v1/lookup", "number"),
        ("/v1/lookup/+492216698712?format=xml", "format"),
        ("/v1/lookup/+492216698712?user=alice", "tenant"),
        ("/v1/lookup/0221%206698712", "number"),
    ],
)
async def test_bad_input_is_400_naming_the_field(client: Client, path: str, field: str) -> None:
    status, _, body = await get(client, path)
    assert status == 400
    assert body is not None and body["field"] == field and body["message"]


async def test_unknown_tenant_is_404_naming_the_field(client: Client) -> None:
    status, _, body = await get(client, "/v1/lookup/+492216698712?tenant=nosuch")
    assert status == 404 and body is not None and body["field"] == "tenant"


async def test_unknown_route_is_json_404(client: Client) -> None:
    status, _, body = await get(client, "/v2/nothing")
    assert status == 404 and body is not None and body["status"] == "not-found"


async def test_metrics_use_route_templates(client: Client) -> None:
    await get(client, "/v1/lookup/+492216698712?tenant=demo")
    _, text, _ = await get(client, "/metrics")
    assert 'route="/v1/lookup/{number}"' in text
    assert "+492216698712" not in text
    assert "cnamd_lookups_total" in text


async def test_health_endpoints(client: Client) -> None:
    assert (await get(client, "/healthz"))[0] == 200
    assert (await get(client, "/readyz"))[0] == 200


def test_settings_default_trusts_loopback_only() -> None:
    assert Settings().http.trusted_networks == ("127.0.0.0/8", "::1/128")


async def test_untrusted_source_is_refused_with_401(tmp_path: Path) -> None:
    settings = load(environ={}, overrides=["http.trusted_networks=192.0.2.0/24"])
    server = TestServer(make_app(settings, Directory(), AlwaysReady()), host="127.0.0.1")
    await server.start_server()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{server.port}/v1/lookup/+492216698712") as resp,
        ):
            body = await resp.json()
        assert resp.status == 401
        assert body["status"] == "unauthorized" and "trusted" in body["message"]
    finally:
        await server.close()
