"""The README's promise, end to end: a new user creates an API key, adds a name with
an HTTP POST (as curl would), and hears it back in a SIP dip (``cnamd dip``)."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from test_daemon import Daemon, run_cli, wait_ready


def test_key_then_curl_then_dip(daemon: Daemon) -> None:
    wait_ready(daemon.base, daemon.proc)
    data_dir = str(daemon.data_dir)
    created = run_cli(
        "apikey", "create", "--role", "partner", "--enterprise", "demo",
        "--embedded-dir", data_dir,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.count(".") == 1

    request = urllib.request.Request(
        f"{daemon.base}/api/partner/enterprise/demo/cnam/+492216698799",
        data=json.dumps({"name": "Readme Test"}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert (resp.status, json.loads(resp.read())) == (200, {})

    server = f"127.0.0.1:{daemon.sip_port}"
    deadline = time.monotonic() + 5
    while True:  # the name reaches the cache through the change feed: milliseconds
        heard = run_cli("dip", "+492216698799", "--to", "+492216698700", "--server", server)
        if heard.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert heard.returncode == 0, heard.stdout + heard.stderr
    assert heard.stdout.strip() == "302 Moved Temporarily: Readme Test"

    miss = run_cli("dip", "+15555550100", "--server", server)
    assert (miss.returncode, miss.stdout.strip()) == (1, "404 Not Found")


def test_dip_without_a_server_exits_2(tmp_path: Path) -> None:
    from test_daemon import free_port

    silent = run_cli("dip", "+492216698712", "--server", f"127.0.0.1:{free_port()}", "--tcp")
    assert silent.returncode == 2
    assert silent.stderr.count("\n") == 1 and "cnamd:" in silent.stderr
