"""A request aiohttp's own parser refuses (a NUL in a header) is a 400 and one warning
line in the daemon's log: bad input is not a server error, so no traceback at error
level (the api-fuzz run sends such probes)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ops_daemon import Daemon


@pytest.mark.timeout(90)
def test_a_nul_in_a_header_is_a_400_and_a_warning_without_traceback(
    db_url: str, tmp_path: Path
) -> None:
    daemon = Daemon(tmp_path, database_url=db_url)
    try:
        daemon.wait_ready(60)
        with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=5) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Probe: a\x00b\r\n\r\n")
            answer = conn.recv(4096)
        assert answer.split(b" ", 2)[1] == b"400", answer
        [line] = daemon.wait_lines("malformed HTTP request refused")
        assert "level=warning" in line and "Traceback" not in line
    finally:
        output = daemon.stop()
    assert "Traceback" not in output and "level=error" not in output, output[-3000:]
