"""API keys: create, authenticate, list and revoke; only a hash of a secret is stored.

A token is ``KEYID.SECRET``. The secret is 256 random bits, so one SHA-256
round is the right hash: slow KDFs (argon2, bcrypt) defend low-entropy
passwords against guessing, which a 256-bit secret does not need, and would
cost every API request milliseconds of CPU.
"""

from __future__ import annotations

import contextlib
import datetime
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from cnamd.access import Grant, Principal, hash_secret
from cnamd.errors import InvalidRequest, NotFound
from cnamd.model import Role

__all__ = [
    "KeyInfo",
    "authenticate",
    "create_key",
    "get_key",
    "hash_secret",
    "list_keys",
    "revoke_key",
    "split_token",
]

# last_used_at is an audit aid, not a log: one write per key per minute at most
_TOUCH_EVERY = datetime.timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as listed: everything but the secret, with slugs instead of ids."""

    key_id: str
    role: Role
    enterprise: str | None
    user: str | None
    grants: tuple[str, ...]
    label: str
    created_at: datetime.datetime
    expires_at: datetime.datetime | None
    revoked_at: datetime.datetime | None
    last_used_at: datetime.datetime | None

    def to_json(self) -> dict[str, object]:
        def stamp(at: datetime.datetime | None) -> str | None:
            return None if at is None else at.isoformat()

        return {
            "key_id": self.key_id,
            "role": self.role.value,
            "enterprise": self.enterprise,
            "user": self.user,
            "grants": list(self.grants),
            "label": self.label,
            "created_at": stamp(self.created_at),
            "expires_at": stamp(self.expires_at),
            "revoked_at": stamp(self.revoked_at),
            "last_used_at": stamp(self.last_used_at),
        }


def split_token(token: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` from ``KEYID.SECRET``, or None when it has no such shape."""
    key_id, dot, secret = token.strip().partition(".")
    if not dot or not key_id or not secret:
        return None
    return key_id, secret


async def create_key(
    conn: asyncpg.Connection,
    role: Role,
    *,
    user: str | None = None,
    enterprises: Sequence[str] = (),
    usergroups: Sequence[str] = (),
    label: str = "",
    expires_at: datetime.datetime | None = None,
) -> tuple[KeyInfo, str]:
    """A new key and its token, shown once.

    ``user`` (``U`` or ``E:U``) is a user key's user; ``enterprises`` (``E``)
    and ``usergroups`` (``E:G``) are a partner key's grants. An operator key
    takes neither.
    """
    _check_shape(role, user, enterprises, usergroups)
    if expires_at is not None and expires_at <= datetime.datetime.now(datetime.UTC):
        raise InvalidRequest("the expiry is in the past", field="expires_at")
    key_id = "ck" + secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    async with conn.transaction():
        tenant_id = user_id = None
        if user is not None:
            tenant_id, user_id = await _find_user(conn, user)
        await conn.execute(
            "INSERT INTO api_keys (key_id, role, tenant_id, user_id, secret_hash, label,"
            " expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            key_id,
            role.value,
            tenant_id,
            user_id,
            hash_secret(secret),
            label,
            expires_at,
        )
        grants = await _find_grants(conn, enterprises, usergroups)
        await conn.executemany(
            "INSERT INTO api_key_grants (key_id, tenant_id, usergroup_id) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING",
            [(key_id, g.tenant_id, g.usergroup_id) for g in grants],
        )
        info = await get_key(conn, key_id)
    assert info is not None
    return info, f"{key_id}.{secret}"


def _check_shape(
    role: Role, user: str | None, enterprises: Sequence[str], usergroups: Sequence[str]
) -> None:
    if role is Role.USER and user is None:
        raise InvalidRequest("a user key needs its user", field="user")
    if role is not Role.USER and user is not None:
        raise InvalidRequest(f"a {role.value} key has no user", field="user")
    if role is not Role.PARTNER and (enterprises or usergroups):
        raise InvalidRequest(
            f"only partner keys take grants; a {role.value} key reaches "
            + ("everything" if role is Role.OPERATOR else "its own user"),
            field="enterprises",
        )
    if role is Role.PARTNER and not (enterprises or usergroups):
        raise InvalidRequest(
            "a partner key needs at least one enterprise or usergroup", field="enterprises"
        )


async def _find_user(conn: asyncpg.Connection, ref: str) -> tuple[int, int]:
    tenant_slug, _, slug = ref.rpartition(":")
    rows = await conn.fetch(
        "SELECT u.tenant_id, u.id FROM users u JOIN tenants t ON t.id = u.tenant_id"
        " WHERE u.slug = $1 AND ($2 = '' OR t.slug = $2)",
        slug,
        tenant_slug,
    )
    if not rows:
        raise NotFound(f"no user {ref!r}", field="user")
    if len(rows) > 1:
        raise InvalidRequest(
            f"user {ref!r} exists in several enterprises; name it as ENTERPRISE:USER",
            field="user",
        )
    return rows[0]["tenant_id"], rows[0]["id"]


async def _find_grants(
    conn: asyncpg.Connection, enterprises: Sequence[str], usergroups: Sequence[str]
) -> list[Grant]:
    grants = []
    for slug in enterprises:
        tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE slug = $1", slug)
        if tenant_id is None:
            raise NotFound(f"no enterprise {slug!r}", field="enterprises")
        grants.append(Grant(tenant_id))
    for ref in usergroups:
        tenant_slug, colon, slug = ref.partition(":")
        row = await conn.fetchrow(
            "SELECT g.tenant_id, g.id FROM usergroups g JOIN tenants t ON t.id = g.tenant_id"
            " WHERE t.slug = $1 AND g.slug = $2",
            tenant_slug,
            slug,
        )
        if not colon or row is None:
            raise NotFound(
                f"no usergroup {ref!r} (name it as ENTERPRISE:GROUP)", field="usergroups"
            )
        grants.append(Grant(row["tenant_id"], row["id"]))
    return grants


async def authenticate(conn: asyncpg.Connection, key_id: str, secret: str) -> Principal | None:
    """The principal of a live key whose secret matches, else None (no reason: no oracle).

    Safe to run again after a lost connection: it reads, and its one write (the
    ``last_used_at`` touch) is idempotent.
    """
    row = await conn.fetchrow(
        "SELECT role, tenant_id, user_id, secret_hash, last_used_at,"
        " revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) AS live"
        " FROM api_keys WHERE key_id = $1",
        key_id,
    )
    if row is None:
        # spend the same hashing time as for a known key
        hmac.compare_digest(hash_secret(secret), bytes(32))
        return None
    if not hmac.compare_digest(hash_secret(secret), bytes(row["secret_hash"])) or not row["live"]:
        return None
    grants = await conn.fetch(
        "SELECT tenant_id, usergroup_id FROM api_key_grants WHERE key_id = $1", key_id
    )
    now = datetime.datetime.now(datetime.UTC)
    if row["last_used_at"] is None or now - row["last_used_at"] > _TOUCH_EVERY:
        # a hot standby takes no writes: the key still works, its touch waits for the primary
        with contextlib.suppress(asyncpg.ReadOnlySQLTransactionError):
            await conn.execute("UPDATE api_keys SET last_used_at = now() WHERE key_id = $1", key_id)
    return Principal(
        key_id,
        Role(row["role"]),
        row["tenant_id"],
        row["user_id"],
        frozenset(Grant(g["tenant_id"], g["usergroup_id"]) for g in grants),
    )


_LIST = """
SELECT k.key_id, k.role, t.slug AS enterprise, u.slug AS user_slug, k.label, k.created_at,
       k.expires_at, k.revoked_at, k.last_used_at,
       coalesce(array_agg(gt.slug || coalesce(':' || gg.slug, ''))
                    FILTER (WHERE gt.slug IS NOT NULL), '{}') AS grants
  FROM api_keys k
  LEFT JOIN tenants t ON t.id = k.tenant_id
  LEFT JOIN users u ON u.id = k.user_id
  LEFT JOIN api_key_grants g ON g.key_id = k.key_id
  LEFT JOIN tenants gt ON gt.id = g.tenant_id
  LEFT JOIN usergroups gg ON gg.id = g.usergroup_id
 WHERE ($1::text IS NULL OR k.key_id = $1)
 GROUP BY k.key_id, t.slug, u.slug
 ORDER BY k.created_at, k.key_id
"""


def _info(row: asyncpg.Record) -> KeyInfo:
    return KeyInfo(
        row["key_id"],
        Role(row["role"]),
        row["enterprise"],
        row["user_slug"],
        tuple(sorted(row["grants"])),
        row["label"],
        row["created_at"],
        row["expires_at"],
        row["revoked_at"],
        row["last_used_at"],
    )


async def get_key(conn: asyncpg.Connection, key_id: str) -> KeyInfo | None:
    """One key as listed, or None."""
    row = await conn.fetchrow(_LIST, key_id)
    return None if row is None else _info(row)


async def list_keys(conn: asyncpg.Connection) -> list[KeyInfo]:
    return [_info(row) for row in await conn.fetch(_LIST, None)]


async def revoke_key(conn: asyncpg.Connection, key_id: str) -> KeyInfo:
    """Revoke ``key_id`` (idempotent: revoking twice keeps the first time)."""
    await conn.execute(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = $1", key_id
    )
    info = await get_key(conn, key_id)
    if info is None:
        raise NotFound(f"no key {key_id!r}", field="key_id")
    return info
