"""The access log is written in batches: many requests, few writes, no line lost."""

from __future__ import annotations

import asyncio
import io
import logging

import aiohttp
from aiohttp import web

from cnamd.http import access_log
from cnamd.logs import KeyValueFormatter


class CountingStream(io.StringIO):
    """A stream that counts the writes it receives."""

    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


async def _hello(_request: web.Request) -> web.Response:
    return web.Response(text="hi")


async def test_lines_are_batched_and_all_written() -> None:
    stream = CountingStream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(KeyValueFormatter())
    logger = logging.getLogger(access_log.LOGGER)
    logger.addHandler(handler)
    logger.propagate = False
    access_log.set_enabled(True)
    app = web.Application()
    app.router.add_get("/v3/phone/{n}", _hello)
    runner = web.AppRunner(app, access_log=logger, access_log_class=access_log.AccessLog)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session:
            for i in range(40):
                url = f"http://127.0.0.1:{port}/v3/phone/{i}?auth_token=s3cret"
                async with session.get(url) as resp:
                    assert resp.status == 200
        for _ in range(100):  # a batch waits FLUSH_SECONDS at most
            if stream.getvalue().count("http request") == 40:
                break
            await asyncio.sleep(0.05)
        lines = stream.getvalue().splitlines()
        assert len(lines) == 40 and all("auth_token=REDACTED" in line for line in lines)
        assert "s3cret" not in stream.getvalue()
        assert stream.writes < 10  # one write per batch, not per line
    finally:
        await runner.cleanup()
        access_log.flush()
        logger.removeHandler(handler)
        logger.propagate = True
        access_log.set_enabled(False)
