"""Log injection: control characters a request brings (NUL, CR, LF, ESC, C1, DEL)
are escaped in every log line, so a path can neither forge a line nor drive the
terminal of the operator reading the log."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from cnamd.http.access_log import LOGGER, AccessLog
from cnamd.logs import JsonFormatter, KeyValueFormatter

HOSTILE = "/v1/lookup/\x00+1\r\nts=forged level=error\x1b[31m\x85\x9b\x7f"
CONTROLS = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]}


def record(**fields: object) -> logging.LogRecord:
    rec = logging.LogRecord("cnamd.access", logging.INFO, "f", 1, "http request", None, None)
    rec.__dict__.update(fields)
    return rec


@pytest.mark.parametrize("formatter", [KeyValueFormatter(), JsonFormatter()])
def test_control_characters_in_a_field_are_escaped(formatter: logging.Formatter) -> None:
    line = formatter.format(record(path=HOSTILE, agent="curl\x1b]0;pwned\x07"))
    assert not CONTROLS & set(line), repr(line)
    assert "\\u0000" in line and "\\r\\n" in line and "\\u001b" in line


def test_a_field_without_spaces_is_still_quoted_when_it_holds_a_control() -> None:
    line = KeyValueFormatter().format(record(path="/a\rb"))
    assert 'path="/a\\rb"' in line


def test_the_escaped_value_reads_back_as_sent() -> None:
    line = JsonFormatter().format(record(path=HOSTILE))
    assert json.loads(line)["path"] == HOSTILE


def test_a_plain_value_stays_bare() -> None:
    line = KeyValueFormatter().format(record(path="/v1/lookup/+492216698712", caller="Müller"))
    assert "path=/v1/lookup/+492216698712" in line and "caller=Müller" in line


@pytest.fixture
async def access_logged() -> AsyncIterator[tuple[int, io.StringIO]]:
    """A real server whose access log (cnamd's AccessLog) is written in key=value lines."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(KeyValueFormatter())
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    runner = web.AppRunner(web.Application(), access_log=logger, access_log_class=AccessLog)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port, out
    finally:
        await runner.cleanup()
        logger.removeHandler(handler)
        logger.setLevel(old_level)


async def test_a_hostile_request_path_is_one_escaped_access_log_line(
    access_logged: tuple[int, io.StringIO],
) -> None:
    port, out = access_logged
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    target = b"/v1/lookup/%00%0dlevel:forged%1b[31m%c2%85"
    writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 404")
    await reader.read()
    writer.close()
    await writer.wait_closed()
    for _ in range(100):  # the access log is written after the answer
        if out.getvalue():
            break
        await asyncio.sleep(0.01)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert not CONTROLS & set(lines[0]), repr(lines[0])
    assert "\\u0000\\rlevel:forged\\u001b[31m\\u0085" in lines[0]
