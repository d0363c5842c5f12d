"""``cnamd apikey`` and ``cnamd tenant`` as an operator runs them: subprocesses on the store."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import asyncpg
import pytest

from cnamd.access import Grant
from cnamd.model import Role
from cnamd.store.apikeys import authenticate, split_token
from cnamd.store.demo import load_demo

CLI = [sys.executable, "-m", "cnamd.cli"]


async def cnamd(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one CLI command against ``db_url`` without blocking the test's loop."""
    command, action, *rest = args
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNAMD_")}
    return await asyncio.to_thread(
        subprocess.run,
        [*CLI, command, action, "--database-url", db_url, *rest],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )


@pytest.fixture
async def demo(conn: asyncpg.Connection) -> asyncpg.Connection:
    await load_demo(conn)
    return conn


async def _create(db_url: str, *flags: str) -> tuple[str, list[str]]:
    """A new key's token (the last line) and the lines before it."""
    done = await cnamd(db_url, "apikey", "create", *flags)
    assert done.returncode == 0, done.stderr
    *lines, token = done.stdout.rstrip("\n").split("\n")
    return token, lines


async def test_create_prints_a_working_token_on_its_last_line(
    db_url: str, demo: asyncpg.Connection
) -> None:
    token, lines = await _create(
        db_url, "--role", "partner", "--enterprise", "demo", "--label", "crm", "--expires-in", "30"
    )
    parts = split_token(token)
    assert parts is not None
    who = await authenticate(demo, *parts)
    tenant = await demo.fetchval("SELECT id FROM tenants WHERE slug = 'demo'")
    assert who is not None
    assert (who.role, who.grants) == (Role.PARTNER, frozenset({Grant(tenant)}))
    assert parts[0] in lines[0] and "grants demo" in lines[0] and "'crm'" in lines[0]
    assert parts[1] not in "\n".join(lines)


@pytest.mark.parametrize(
    ("flags", "role"),
    [
        (["--role", "user", "--user", "demo:alice"], Role.USER),
        (["--role", "user", "--user", "alice"], Role.USER),
        (["--role", "partner", "--usergroup", "demo:sales"], Role.PARTNER),
        (["--role", "operator", "--expires", "2999-01-01T00:00:00+01:00"], Role.OPERATOR),
    ],
)
async def test_each_role_gets_a_live_key(
    db_url: str, demo: asyncpg.Connection, flags: list[str], role: Role
) -> None:
    token, _ = await _create(db_url, *flags)
    parts = split_token(token)
    assert parts is not None
    who = await authenticate(demo, *parts)
    assert who is not None and who.role is role


async def test_list_shows_keys_without_their_secrets(db_url: str, demo: asyncpg.Connection) -> None:
    token, _ = await _create(db_url, "--role", "user", "--user", "alice", "--label", "phone")
    key_id, _, secret = token.partition(".")
    table = await cnamd(db_url, "apikey", "list")
    assert table.returncode == 0
    header, row = table.stdout.splitlines()
    assert header.split()[:3] == ["KEY_ID", "ROLE", "STATE"]
    assert row.split()[:3] == [key_id, "user", "live"]
    assert "demo:alice" in row and row.endswith("phone")
    listed = await cnamd(db_url, "apikey", "list", "--json")
    keys = json.loads(listed.stdout)
    assert [(k["key_id"], k["user"], k["label"]) for k in keys] == [(key_id, "alice", "phone")]
    assert secret not in table.stdout + listed.stdout


async def test_revoke_ends_a_key_and_keeps_it_listed(db_url: str, demo: asyncpg.Connection) -> None:
    token, _ = await _create(db_url, "--role", "operator")
    key_id, _, secret = token.partition(".")
    done = await cnamd(db_url, "apikey", "revoke", key_id)
    assert done.returncode == 0 and done.stdout.startswith(f"revoked {key_id} at ")
    assert await authenticate(demo, key_id, secret) is None
    table = await cnamd(db_url, "apikey", "list")
    assert table.stdout.splitlines()[1].split()[:3] == [key_id, "operator", "revoked"]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["apikey", "create", "--role", "admin"], "role"),
        (["apikey", "create", "--role", "user"], "user"),
        (["apikey", "create", "--role", "user", "--user", "nobody"], "user"),
        (["apikey", "create", "--role", "operator", "--user", "alice"], "user"),
        (["apikey", "create", "--role", "partner"], "enterprises"),
        (["apikey", "create", "--role", "partner", "--enterprise", "nosuch"], "enterprises"),
        (["apikey", "create", "--role", "partner", "--usergroup", "sales"], "usergroups"),
        (["apikey", "create", "--role", "operator", "--expires", "tomorrow"], "expires"),
        (["apikey", "create", "--role", "operator", "--expires", "2999-01-01T00:00"], "expires"),
        (["apikey", "create", "--role", "operator", "--expires-in", "-1"], "expires_at"),
        (["apikey", "revoke", "cknosuch"], "key_id"),
        (["tenant", "create", "acme", "--name", "ACME", "--region", "XX"], "region"),
        (["tenant", "create", "Acme!", "--name", "ACME", "--region", "DE"], "slug"),
        (["tenant", "create", "demo", "--name", "ACME", "--region", "DE"], "slug"),
        (
            ["tenant", "create", "acme", "--name", "ACME", "--region", "DE", "--network", "x"],
            "networks",
        ),
    ],
)
async def test_errors_exit_2_with_one_line_naming_the_field(
    db_url: str, demo: asyncpg.Connection, args: list[str], field: str
) -> None:
    done = await cnamd(db_url, *args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(f"cnamd: {field}: ")
    assert done.stderr.count("\n") == 1
    assert await demo.fetchval("SELECT count(*) FROM api_keys") == 0
    assert await demo.fetchval("SELECT count(*) FROM tenants") == 1


async def test_a_database_without_the_schema_is_refused(empty_db_url: str) -> None:
    done = await cnamd(empty_db_url, "apikey", "list")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "cnamd migrate" in done.stderr


async def test_tenant_create_and_list(db_url: str, demo: asyncpg.Connection) -> None:
    done = await cnamd(
        db_url,
        "tenant",
        "create",
        "acme",
        "--name",
        "ACME Corp",
        "--region",
        "de",
        "--network",
        "10.1.2.3/8",
        "--network",
        "::1",
    )
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout == "created tenant acme: ACME Corp, region DE, networks 10.0.0.0/8, ::1/128\n"
    )
    listed = await cnamd(db_url, "tenant", "list")
    assert listed.stdout.splitlines()[0] == "acme\tDE\tACME Corp\t10.0.0.0/8,::1/128"
    token, _ = await _create(db_url, "--role", "partner", "--enterprise", "acme")
    assert token.count(".") == 1


async def test_list_outputs_end_with_a_newline(db_url: str, demo: asyncpg.Connection) -> None:
    """Each list is whole lines, so a shell prompt or ``| tail -1`` never joins the last one."""
    await _create(db_url, "--role", "operator")
    for command in (["apikey", "list"], ["apikey", "list", "--json"], ["tenant", "list"]):
        done = await cnamd(db_url, *command)
        assert done.returncode == 0, done.stderr
        assert done.stdout.endswith("\n"), (command, done.stdout[-40:])
