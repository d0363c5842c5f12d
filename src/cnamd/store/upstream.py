"""SQL of table ``upstream_answers`` (migration 6): upstream CNAM answers kept for the
whole deployment. Each write logs itself to the change log (trigger), so every
cache holds the result; the chain writes in batches, one transaction each."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

Connection = Any  # asyncpg.Connection or a pool's proxy


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer to store: ``name`` None is a negative answer; ``ttl`` seconds."""

    number: str
    name: str | None
    source: str
    ttl: float


@dataclass(frozen=True, slots=True)
class Stored:
    """One stored answer as the operator API shows it."""

    number: str
    name: str | None
    source: str
    fetched_at: dt.datetime
    expires_at: dt.datetime | None
    pinned: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "name": self.name,
            "source": self.source,
            "fetched_at": self.fetched_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "pinned": self.pinned,
        }


_SAVE = """
INSERT INTO upstream_answers AS u (number, name, source, expires_at)
SELECT a.number, a.name, a.source, now() + make_interval(secs => a.ttl)
  FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[]) AS a(number, name, source, ttl)
ON CONFLICT (number) DO UPDATE
   SET name = excluded.name, source = excluded.source, fetched_at = now(),
       expires_at = excluded.expires_at
 WHERE NOT u.pinned
"""


async def save(conn: Connection, answers: list[Answer]) -> None:
    """Store a batch in one statement (one transaction); a pinned answer is kept."""
    last: dict[str, Answer] = {a.number: a for a in answers}  # one row per number
    batch = list(last.values())
    await conn.execute(
        _SAVE,
        [a.number for a in batch],
        [a.name for a in batch],
        [a.source for a in batch],
        [a.ttl for a in batch],
    )


async def load_live(conn: Connection) -> list[tuple[str, str | None, str, float | None]]:
    """Every live answer as (number, name, source, expires epoch or None if pinned)."""
    rows = await conn.fetch(
        "SELECT number, name, source, extract(epoch FROM expires_at)::float8 AS expires"
        " FROM upstream_answers WHERE pinned OR expires_at > now()"
    )
    return [(r["number"], r["name"], r["source"], r["expires"]) for r in rows]


async def tenants_off(conn: Connection) -> frozenset[int]:
    """The tenants whose upstream policy is 'off'."""
    rows = await conn.fetch("SELECT tenant_id FROM upstream_tenant_policy WHERE policy = 'off'")
    return frozenset(r["tenant_id"] for r in rows)


async def tenant_accounts(conn: Connection) -> list[tuple[int, str, dict[str, Any]]]:
    """(tenant id, source, stored credentials) of every tenant's own account."""
    rows = await conn.fetch("SELECT tenant_id, source, credentials FROM upstream_tenant_accounts")
    return [(r["tenant_id"], r["source"], json.loads(r["credentials"])) for r in rows]


async def set_policy(
    conn: Connection, slug: str, policy: str, accounts: dict[str, dict[str, Any]]
) -> bool:
    """A tenant's whole policy, in one transaction: 'off' or 'on' (the default: the
    configured sources) and its own accounts (source -> stored credentials; the
    accounts not named are removed). False when there is no such tenant."""
    async with conn.transaction():
        tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE slug = $1", slug)
        if tenant_id is None:
            return False
        if policy == "off":
            await conn.execute(
                "INSERT INTO upstream_tenant_policy (tenant_id, policy) VALUES ($1, 'off')"
                " ON CONFLICT (tenant_id) DO NOTHING",
                tenant_id,
            )
        else:
            await conn.execute("DELETE FROM upstream_tenant_policy WHERE tenant_id = $1", tenant_id)
        await conn.execute("DELETE FROM upstream_tenant_accounts WHERE tenant_id = $1", tenant_id)
        if accounts:
            await conn.executemany(
                "INSERT INTO upstream_tenant_accounts (tenant_id, source, credentials)"
                " VALUES ($1, $2, $3::jsonb)",
                [(tenant_id, source, json.dumps(c)) for source, c in sorted(accounts.items())],
            )
    return True


async def policies(conn: Connection) -> list[tuple[str, str, dict[str, list[str]]]]:
    """(tenant slug, policy, source -> credential fields set) of every tenant with a policy
    or an account of its own: the fields' names only, never their values."""
    rows = await conn.fetch(
        """SELECT t.slug, coalesce(p.policy, 'on') AS policy,
                  coalesce(jsonb_object_agg(a.source, ARRAY(SELECT jsonb_object_keys(a.credentials)
                                                             ORDER BY 1))
                           FILTER (WHERE a.source IS NOT NULL), '{}') AS accounts
             FROM tenants t
             LEFT JOIN upstream_tenant_policy p ON p.tenant_id = t.id
             LEFT JOIN upstream_tenant_accounts a ON a.tenant_id = t.id
            WHERE p.tenant_id IS NOT NULL OR a.tenant_id IS NOT NULL
            GROUP BY t.slug, p.policy
            ORDER BY t.slug"""
    )
    return [(r["slug"], r["policy"], json.loads(r["accounts"])) for r in rows]


async def sweep(conn: Connection, limit: int = 10000) -> int:
    """Delete up to ``limit`` expired answers (not pinned); how many went."""
    status = await conn.execute(
        "DELETE FROM upstream_answers WHERE number IN (SELECT number FROM upstream_answers"
        " WHERE NOT pinned AND expires_at <= now() LIMIT $1)",
        limit,
    )
    return int(status.split()[-1])


_COLUMNS = "number, name, source, fetched_at, expires_at, pinned"


async def listing(conn: Connection, prefix: str = "", limit: int = 100) -> list[Stored]:
    """Stored answers whose number starts with ``prefix``, in number order."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM upstream_answers WHERE number LIKE $1 || '%'"
        " ORDER BY number LIMIT $2",
        prefix,
        limit,
    )
    return [Stored(*r) for r in rows]


async def purge(conn: Connection, number: str | None) -> int:
    """Delete one number's answer (or, with None, every one); how many went."""
    if number is None:
        status = await conn.execute("DELETE FROM upstream_answers")
    else:
        status = await conn.execute("DELETE FROM upstream_answers WHERE number = $1", number)
    return int(status.split()[-1])


async def pin(conn: Connection, number: str, name: str | None, source: str) -> Stored | None:
    """Hold ``number``'s answer until purged. With ``name``: that name, from ``source``;
    without: the answer already stored (None when there is none)."""
    if name is None:
        row = await conn.fetchrow(
            "UPDATE upstream_answers SET pinned = true, expires_at = NULL WHERE number = $1"
            f" RETURNING {_COLUMNS}",
            number,
        )
    else:
        row = await conn.fetchrow(
            f"""INSERT INTO upstream_answers (number, name, source, expires_at, pinned)
                VALUES ($1, $2, $3, NULL, true)
                ON CONFLICT (number) DO UPDATE
                   SET pinned = true, expires_at = NULL, name = $2, source = $3,
                       fetched_at = now()
                RETURNING {_COLUMNS}""",
            number,
            name,
            source,
        )
    return None if row is None else Stored(*row)


async def save_all(conn: Connection, answers: list[Answer], batch: int = 10000) -> int:
    """Store many answers (an import) in one transaction, ``batch`` per statement."""
    async with conn.transaction():
        for at in range(0, len(answers), batch):
            await save(conn, answers[at : at + batch])
    return len({a.number for a in answers})


async def reserve(
    conn: Connection, source: str, day: dt.date, want: int, budget: int
) -> tuple[int, int]:
    """Reserve up to ``want`` of ``source``'s paid requests of ``day`` (a UTC date) without
    passing ``budget``, in one transaction (the row locked, so concurrent reservations
    queue): (how many were granted, how many the deployment has reserved that day)."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO upstream_budget (source, day, spent) VALUES ($1, $2, 0)"
            " ON CONFLICT (source, day) DO NOTHING",
            source,
            day,
        )
        spent: int = await conn.fetchval(
            "SELECT spent FROM upstream_budget WHERE source = $1 AND day = $2 FOR UPDATE",
            source,
            day,
        )
        granted = max(0, min(want, budget - spent))
        if granted:
            await conn.execute(
                "UPDATE upstream_budget SET spent = spent + $3 WHERE source = $1 AND day = $2",
                source,
                day,
                granted,
            )
    return granted, spent + granted


async def give_back(conn: Connection, source: str, day: dt.date, unused: int) -> None:
    """Return requests reserved and not spent (a process stopping) to ``day``'s budget."""
    await conn.execute(
        "UPDATE upstream_budget SET spent = greatest(0, spent - $3) WHERE source = $1 AND day = $2",
        source,
        day,
        unused,
    )


async def sweep_budgets(conn: Connection, keep_days: int = 31) -> int:
    """Delete the budget rows of days more than ``keep_days`` ago; how many went."""
    status = await conn.execute(
        "DELETE FROM upstream_budget WHERE day < current_date - $1::int", keep_days
    )
    return int(status.split()[-1])
