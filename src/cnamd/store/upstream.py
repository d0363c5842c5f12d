"""SQL of table ``upstream_answers`` (migration 6): upstream CNAM answers kept for the
whole deployment. Each write logs itself to the change log (trigger), so every
cache holds the result; the chain writes in batches, one transaction each."""

from __future__ import annotations

import datetime as dt
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


async def set_policy(conn: Connection, slug: str, policy: str) -> bool:
    """'off' or 'on' (the default: the configured sources) for one tenant; False when
    there is no such tenant."""
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
    return True


async def policies(conn: Connection) -> list[tuple[str, str]]:
    """(tenant slug, policy) of every tenant with a policy of its own."""
    rows = await conn.fetch(
        "SELECT t.slug, p.policy FROM upstream_tenant_policy p JOIN tenants t ON t.id = p.tenant_id"
        " ORDER BY t.slug"
    )
    return [(r["slug"], r["policy"]) for r in rows]


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
