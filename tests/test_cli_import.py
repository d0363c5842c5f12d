"""``cnamd import`` and ``export`` as an operator runs them: a subprocess, files, exit codes."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

CLI = [sys.executable, "-m", "cnamd.cli"]
Conn = Any


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CNAMD_")}


async def cnamd(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the CLI without blocking the loop the test's connection lives on."""
    return await asyncio.to_thread(
        subprocess.run,
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env(),
        check=False,
    )


async def import_(source: Path, scope: str, db_url: str, *flags: str) -> Any:
    return await cnamd("import", str(source), "--scope", scope, "--database-url", db_url, *flags)


@pytest.fixture
async def acme(conn: Conn) -> None:
    await conn.execute("INSERT INTO tenants (slug, name, region) VALUES ('acme', 'Acme', 'DE')")


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


async def state(conn: Conn) -> tuple[list[tuple[Any, ...]], int]:
    rows = await conn.fetch("SELECT * FROM cnam_entries ORDER BY id")
    last = await conn.fetchval("SELECT coalesce(max(id), 0) FROM change_log")
    return [tuple(r) for r in rows], last


@pytest.mark.usefixtures("acme")
async def test_import_prints_one_summary_line_and_reports_rejected_rows(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    source = write(
        tmp_path / "names.csv",
        "phone,name,prefix",
        "0221 6698712,John Doe,",
        "+492216698713,Bad!Name,",
        "+4922166987,ACME Cologne,true",
    )
    done = await import_(source, "enterprise:acme", db_url, "--jobs", "1")  # a worker process
    assert done.returncode == 0, done.stderr
    report = tmp_path / "names.rejected.csv"
    assert done.stdout == (
        f"inserted=2 updated=0 unchanged=0 superseded=0 rejected=1 deleted=0 report={report}\n"
    )
    header, row = read_csv(report)
    assert header == ["line", "phone", "name", "reason"]
    assert row[:3] == ["3", "+492216698713", "Bad!Name"]
    assert row[3].startswith("name: 'Bad!Name' has '!' (U+0021) at position 4;")
    exported = await cnamd("export", "--scope", "enterprise:acme", "--database-url", db_url)
    assert (exported.returncode, exported.stderr) == (0, "exported=2\n")
    assert exported.stdout == (
        "phone,name,prefix\n+4922166987,ACME Cologne,true\n+492216698712,John Doe,false\n"
    )


@pytest.mark.usefixtures("acme")
async def test_export_then_import_reports_every_row_unchanged(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    source = write(
        tmp_path / "in.csv",
        "phone,name,prefix",
        "+492216698712,John Doe,",
        '+492216698713,"Doe, Jane",',
        "+4922166987,ACME Cologne,1",
    )
    scope = ["--scope", "usergroup:acme:sales", "--database-url", db_url]
    await conn.execute("INSERT INTO usergroups (tenant_id, slug) VALUES (1, 'sales')")
    assert (await cnamd("import", str(source), *scope)).returncode == 0
    out = tmp_path / "out.csv"
    exported = await cnamd("export", str(out), *scope)
    assert (exported.returncode, exported.stderr, exported.stdout) == (0, "exported=3\n", "")
    assert out.read_text().splitlines() == [
        "phone,name,prefix",
        "+4922166987,ACME Cologne,true",
        "+492216698712,John Doe,false",
        '+492216698713,"Doe, Jane",false',
    ]
    again = await cnamd("import", str(out), "--replace", *scope)
    assert again.stdout.startswith("inserted=0 updated=0 unchanged=3 superseded=0 rejected=0")


@pytest.mark.usefixtures("acme")
async def test_replace_refused_is_said_on_stderr(db_url: str, tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "phone,name", "nope,John")
    report = tmp_path / "rejects" / "r.csv"
    report.parent.mkdir()
    done = await import_(source, "enterprise:acme", db_url, "--replace", "--report", str(report))
    assert done.returncode == 0
    assert done.stdout.endswith(f"replace=refused report={report}\n")
    assert "--replace deleted nothing" in done.stderr
    assert read_csv(report)[1][:3] == ["2", "nope", "John"]


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ("enterprise:nope", "cnamd: import {file}: enterprise: no enterprise 'nope'; nothing"),
        ("planet:earth", "cnamd: import {file}: scope: 'planet:earth' is not a scope; use global,"),
    ],
)
async def test_an_unknown_scope_exits_2_with_one_line(
    db_url: str, tmp_path: Path, scope: str, message: str
) -> None:
    source = write(tmp_path / "in.csv", "phone,name", "+492216698712,John")
    done = await import_(source, scope, db_url)
    assert done.returncode == 2
    assert done.stderr.startswith(message.format(file=source))
    assert done.stderr.count("\n") == 1
    assert done.stdout == ""
    assert not (tmp_path / "in.rejected.csv").exists()


async def test_a_missing_file_exits_2_with_one_line(db_url: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing.csv"
    done = await import_(missing, "global", db_url)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"cnamd: import {missing}: {missing}: No such file or directory; nothing imported\n"
    )


async def test_a_file_without_a_header_exits_2(db_url: str, tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "+492216698712,John")
    done = await import_(source, "global", db_url)
    assert done.returncode == 2
    assert "unknown column '+492216698712'" in done.stderr
    assert done.stderr.count("\n") == 1


async def test_an_unreachable_database_exits_2(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "phone,name", "+492216698712,John")
    url = "postgresql://cnamd@127.0.0.1:1/cnamd"
    done = await import_(source, "global", url)
    assert done.returncode == 2
    assert done.stderr.startswith("cnamd: import ") and "cannot connect" in done.stderr
    assert done.stderr.count("\n") == 1
    exported = await cnamd("export", "--scope", "global", "--database-url", url)
    assert exported.returncode == 2 and exported.stderr.startswith("cnamd: export: ")


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("acme")
async def test_a_killed_import_leaves_entries_and_change_log_as_they_were(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    small = write(tmp_path / "small.csv", "phone,name", "+492216698712,John", "+4930901820,Max")
    assert (await import_(small, "enterprise:acme", db_url)).returncode == 0
    before = await state(conn)
    big = tmp_path / "big.csv"
    with big.open("w") as out:
        out.write("phone,name\n+492216698712,Johnny\n")  # would update an entry
        out.writelines(f"+4922199{n:06d},Name {n}\n" for n in range(300_000))
    proc = await asyncio.create_subprocess_exec(
        *CLI, "import", str(big), "--scope", "enterprise:acme", "--database-url", db_url,
        env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        merging = False
        deadline = time.monotonic() + 60
        while not merging and proc.returncode is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            # the first chunk is copied and being merged into cnam_entries
            merging = await conn.fetchval(
                "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state = 'active'"
                " AND query LIKE '%INSERT INTO cnam_entries%')"
            )
        await asyncio.sleep(0.2)
        helpers = psutil.Process(proc.pid).children(recursive=True)  # validation workers
    finally:
        proc.send_signal(signal.SIGKILL)
        killed = await proc.wait()
    assert merging, "the import finished or never started merging"
    assert killed == -signal.SIGKILL
    assert await state(conn) == before
    assert helpers, "a 300k-row file is validated by worker processes"
    _, alive = await asyncio.to_thread(psutil.wait_procs, helpers, timeout=10)
    assert alive == [], "the workers outlive a killed import"
    # and once PostgreSQL has noticed the dead client (within its 1 s check), the
    # transaction is gone, not committed
    for _ in range(250):
        others = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        if not others:
            break
        await asyncio.sleep(0.02)
    assert others == 0
    assert await state(conn) == before
