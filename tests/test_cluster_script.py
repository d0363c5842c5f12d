"""``make cluster`` as documented: a primary, a streaming standby, one daemon on the
primary and two on the standby; a name written through the primary daemon's API is
heard in a SIP dip on all three, and everything stops afterwards."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from test_daemon import env_without_cnamd, free_port, postgres_processes


@pytest.mark.timeout(120)
def test_cluster_smoke_hears_a_write_on_all_three_daemons(repo_root: Path, tmp_path: Path) -> None:
    ports = [free_port() for _ in range(8)]
    done = subprocess.run(
        [
            sys.executable, str(repo_root / "scripts" / "cluster.py"), "--smoke",
            "--dir", str(tmp_path / "cluster"),
            "--pg-ports", f"{ports[0]},{ports[1]}",
            "--http-ports", ",".join(map(str, ports[2:5])),
            "--sip-ports", ",".join(map(str, ports[5:8])),
        ],
        capture_output=True, text=True, timeout=110, env=env_without_cnamd(), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    heard = [line for line in done.stdout.splitlines() if "302 Moved Temporarily" in line]
    assert [line.split(":")[0] for line in heard] == ["primary-0", "standby-1", "standby-2"]
    assert "cluster: stopped" in done.stdout
    assert postgres_processes(tmp_path / "cluster") == []
