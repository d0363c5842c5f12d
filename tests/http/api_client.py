"""The management API client the HTTP tests share (tests/http is on pytest's pythonpath)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
from multidict import CIMultiDictProxy

from cnamd.cache.directory import Directory
from cnamd.model import Role
from cnamd.store import apikeys


class AlwaysReady:
    """The server's readiness role for an app without a daemon around it."""

    def readiness(self) -> tuple[int, dict[str, Any]]:
        return 200, {"status": "ready"}

    def metrics_extra(self) -> bytes:
        return b""


@dataclass
class Reply:
    status: int
    body: Any
    headers: CIMultiDictProxy[str]


@dataclass
class Api:
    session: aiohttp.ClientSession
    base: str
    pool: asyncpg.Pool
    directory: Directory

    async def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> Reply:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.base + path, headers=headers, **kw) as resp:
            if resp.content_type == "application/json":
                body: Any = await resp.json()
            else:
                body = await resp.text()
            return Reply(resp.status, body, resp.headers)

    async def key(self, role: Role, **kw: Any) -> str:
        async with self.pool.acquire() as conn:
            _, token = await apikeys.create_key(conn, role, **kw)
        return token

    async def until_served(self, number: str, name: str | None, **ctx: str) -> None:
        """Wait (bounded) until an HTTP lookup of ``number`` answers ``name`` (None: a miss)."""
        query = "&".join(f"{k}={v}" for k, v in ctx.items())
        for _ in range(200):
            reply = await self.call("GET", f"/v1/lookup/{number}?{query}")
            got = reply.body.get("name") if reply.status == 200 else None
            if got == name:
                return
            await asyncio.sleep(0.025)
        raise AssertionError(f"{number} never served {name!r} (last: {reply.status} {reply.body})")
