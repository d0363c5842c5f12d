"""The embedded PostgreSQL is stopped by the last process that uses it, dead users aside."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from asyncio.subprocess import PIPE
from pathlib import Path

import psutil
import pytest

from cnamd.store.embedded import EmbeddedPostgres

# What a store command (cnamd apikey, import, ...) does beside a running daemon:
# attach to its embedded server, registering in the server's list of users.
ATTACH = """
import asyncio, sys
from pathlib import Path
from cnamd.store.embedded import EmbeddedPostgres
asyncio.run(EmbeddedPostgres(Path(sys.argv[1])).start())
print("attached", flush=True)
sys.stdin.read()
"""


def postmaster(data: Path) -> psutil.Process:
    return psutil.Process(int((data / "postmaster.pid").read_text().split()[0]))


def users(data: Path) -> list[int]:
    listed: list[int] = json.loads((data / ".handle_pids.json").read_text())
    return listed


def gone(process: psutil.Process) -> bool:
    """Exited (a zombie too: pg_ctl leaves the postmaster to whoever reaps it)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def attach(data: Path) -> asyncio.subprocess.Process:
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ATTACH, str(data), stdin=PIPE, stdout=PIPE
    )
    assert cli.stdout is not None
    assert await asyncio.wait_for(cli.stdout.readline(), 30) == b"attached\n"
    return cli


async def test_shutdown_stops_the_server_though_a_sigkilled_cli_process_is_still_listed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "pgdata"
    daemon = EmbeddedPostgres(data)
    await daemon.start()
    server = postmaster(data)
    cli = await attach(data)
    cli.kill()  # SIGKILL: it never takes itself off the list
    await asyncio.wait_for(cli.wait(), 10)
    assert cli.pid in users(data)
    with caplog.at_level(logging.INFO, logger="cnamd.store.embedded"):
        await daemon.stop()
    assert not (data / "postmaster.pid").exists()
    assert gone(server)
    assert "embedded postgresql stopped" in caplog.messages


async def test_a_live_cli_process_keeps_the_server_and_stops_it_when_it_leaves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "pgdata"
    daemon = EmbeddedPostgres(data)
    await daemon.start()
    server = postmaster(data)
    cli = await attach(data)
    try:
        with caplog.at_level(logging.INFO, logger="cnamd.store.embedded"):
            await daemon.stop()
        assert not gone(server)
        assert "embedded postgresql left running for its other users" in caplog.messages
        assert "embedded postgresql stopped" not in caplog.messages
    finally:
        assert cli.stdin is not None
        cli.stdin.close()  # it exits normally: the last user stops the server
        await asyncio.wait_for(cli.wait(), 30)
    assert not (data / "postmaster.pid").exists()
    assert gone(server)
