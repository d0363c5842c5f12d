"""The Server header names no versions: ``cnamd`` on HTTP and SIP, unless an
operator opts in with ``server.expose_version``."""

from __future__ import annotations

import asyncio

import pytest
from api_client import Api

from cnamd import __version__
from cnamd.server import dip_settings
from cnamd.settings import load


async def raw_status_and_server(api: Api, request: bytes) -> tuple[int, str]:
    host, port = api.base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    finally:
        writer.close()
        await writer.wait_closed()
    server = next(h.split(":", 1)[1].strip() for h in head if h.lower().startswith("server:"))
    return int(head[0].split()[1]), server


async def test_an_http_answer_says_cnamd_without_versions(api: Api) -> None:
    for path in ("/healthz", "/v1/lookup/+492216698712", "/no/such/route", "/v2/cnams"):
        reply = await api.call("GET", path)
        assert reply.headers["Server"] == "cnamd", path


async def test_an_answer_of_aiohttps_own_parser_says_cnamd_too(api: Api) -> None:
    bad = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Auth-Token: k\x00.s\r\n\r\n"
    assert await raw_status_and_server(api, bad) == (400, "cnamd")


def test_the_sip_server_header_says_cnamd_without_versions() -> None:
    assert dip_settings(load(environ={})).server_header == "cnamd"


class TestExposeVersion:
    @pytest.fixture
    def api_settings(self) -> list[str]:
        return ["server.expose_version=true"]

    async def test_the_setting_adds_cnamds_version(self, api: Api) -> None:
        reply = await api.call("GET", "/healthz")
        assert reply.headers["Server"] == f"cnamd/{__version__}"
        sip = dip_settings(load(environ={}, overrides=["server.expose_version=true"]))
        assert sip.server_header == f"cnamd/{__version__}"
