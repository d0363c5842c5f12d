"""Tenants (enterprises), their SIP networks, usergroups and users, within a key's reach.

Slugs are the public names; numeric ids never leave the store. Slugs are
immutable: SBC configurations (``?tenant=``), phone-book paths and key grants
(``E:G``) name them, and a rename would silently break each of those; to
rename, create the new one and delete the old.

What a key cannot see answers NotFound exactly like what does not exist, so
probing cannot tell them apart (issue #3: 404, not 403). A write the key may
not make on something it does see is Forbidden: only operator keys create,
change or delete tenants; usergroups and users are managed by keys that reach
the whole tenant.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import phonenumbers

from cnamd.access import (
    Duty,
    Principal,
    Target,
    Verb,
    reaches,
    reaches_tenant,
    reaches_usergroup,
    require,
    seen_tenants,
    sees_tenant,
)
from cnamd.errors import Conflict, Forbidden, InvalidRequest, NotFound
from cnamd.model import Scope

__all__ = [
    "Tenant",
    "TenantSpec",
    "User",
    "Usergroup",
    "create_tenant",
    "create_user",
    "create_usergroup",
    "delete_tenant",
    "delete_user",
    "delete_usergroup",
    "get_tenant",
    "get_user",
    "get_usergroup",
    "list_tenants",
    "list_usergroups",
    "list_users",
    "replace_tenant",
    "replace_user",
    "tenant_spec",
]

MAX_NAME = 256


def _stamp(at: datetime.datetime) -> str:
    return at.isoformat()


@dataclass(frozen=True, slots=True)
class Tenant:
    """A tenant as the API shows it; ``networks`` are normalized CIDRs of its SIP sources.

    ``uuid`` is what the phone-number API's ``Wazo-Tenant`` header names.
    """

    slug: str
    name: str
    region: str
    networks: tuple[str, ...]
    created_at: datetime.datetime
    uuid: str

    def to_json(self) -> dict[str, object]:
        return {
            "uuid": self.uuid,
            "slug": self.slug,
            "name": self.name,
            "region": self.region,
            "networks": list(self.networks),
            "created_at": _stamp(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class Usergroup:
    tenant: str
    slug: str
    created_at: datetime.datetime

    def to_json(self) -> dict[str, object]:
        return {"tenant": self.tenant, "slug": self.slug, "created_at": _stamp(self.created_at)}


@dataclass(frozen=True, slots=True)
class User:
    """A user of ``tenant``; ``usergroup`` is its group's slug, or None.

    ``uuid`` is how the phone-number API assigns a number to the user (``user_uuid``).
    """

    tenant: str
    slug: str
    usergroup: str | None
    created_at: datetime.datetime
    uuid: str

    def to_json(self) -> dict[str, object]:
        return {
            "uuid": self.uuid,
            "tenant": self.tenant,
            "slug": self.slug,
            "usergroup": self.usergroup,
            "created_at": _stamp(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class TenantSpec:
    """A validated tenant body: what POST creates and PUT replaces."""

    slug: str
    name: str
    region: str
    networks: tuple[str, ...]


# --- validation: pure, shared by the HTTP API and the CLI; mirrors the schema's CHECKs ---


@dataclass(frozen=True, slots=True)
class _SlugRule:
    what: str
    pattern: re.Pattern[str]
    alphabet: str


TENANT_SLUG = _SlugRule("tenant", re.compile(r"[a-z0-9][a-z0-9_-]{0,62}"), "a-z 0-9 _ -, 1-63")
USERGROUP_SLUG = _SlugRule(
    "usergroup", re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}"), "a-z 0-9 _ . -, 1-63"
)
USER_SLUG = _SlugRule("user", re.compile(r"[a-z0-9][a-z0-9_.@-]{0,126}"), "a-z 0-9 _ . @ -, 1-127")


def check_slug(rule: _SlugRule, text: str, *, field: str = "slug") -> str:
    if rule.pattern.fullmatch(text) is None:
        raise InvalidRequest(
            f"{text[:80]!r} is not a {rule.what} slug: use {rule.alphabet} characters,"
            " starting with a letter or digit",
            field=field,
        )
    return text


def check_region(text: str) -> str:
    """An ISO 3166 alpha-2 code that phonenumbers can read national numbers for."""
    region = text.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise InvalidRequest(
            f"{text[:20]!r} is not a region phonenumbers knows; use an ISO 3166 alpha-2 code"
            " such as DE or US",
            field="region",
        )
    return region


def check_networks(texts: Sequence[str]) -> tuple[str, ...]:
    """CIDRs, normalized (host bits cleared) and without repeats, in the order given."""
    networks: dict[str, None] = {}
    for index, text in enumerate(texts):
        try:
            network = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError as exc:
            raise InvalidRequest(
                f"networks[{index}] is not a CIDR network: {exc}", field="networks"
            ) from exc
        networks[str(network)] = None
    return tuple(networks)


def tenant_spec(slug: str, name: str, region: str, networks: Sequence[str]) -> TenantSpec:
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME:
        raise InvalidRequest(f"a tenant's name has 1 to {MAX_NAME} characters", field="name")
    return TenantSpec(
        check_slug(TENANT_SLUG, slug), name, check_region(region), check_networks(networks)
    )


# --- access ---


def _require_operator(who: Principal) -> None:
    require(who, Duty.MANAGE_TENANTS)


async def _seen_tenant(conn: asyncpg.Connection, who: Principal, slug: str) -> int:
    """The id of tenant ``slug``; NotFound if it is missing or the key sees none of it."""
    tenant_id: int | None = await conn.fetchval("SELECT id FROM tenants WHERE slug = $1", slug)
    if tenant_id is None or not sees_tenant(who, tenant_id):
        raise NotFound(f"no tenant {slug!r}", field="tenant")
    return tenant_id


async def _managed_tenant(conn: asyncpg.Connection, who: Principal, slug: str) -> int:
    """The id of a tenant whose usergroups and users the key may change (it reaches all of it)."""
    tenant_id = await _seen_tenant(conn, who, slug)
    if not reaches_tenant(who, tenant_id):
        raise Forbidden(
            f"this key reaches only some usergroups of tenant {slug!r}; managing its usergroups"
            " and users needs a key granted the whole tenant",
            field="tenant",
        )
    return tenant_id


# --- tenants ---

_TENANTS = """
SELECT t.id, t.uuid, t.slug, t.name, t.region, t.created_at,
       coalesce(array_agg(n.network::text ORDER BY n.network)
                    FILTER (WHERE n.network IS NOT NULL), '{}') AS networks
  FROM tenants t
  LEFT JOIN tenant_networks n ON n.tenant_id = t.id
 WHERE ($1::bigint[] IS NULL OR t.id = ANY($1)) AND ($2::text IS NULL OR t.slug = $2)
 GROUP BY t.id
 ORDER BY t.slug
"""


def _tenant(row: asyncpg.Record) -> Tenant:
    return Tenant(
        row["slug"],
        row["name"],
        row["region"],
        tuple(row["networks"]),
        row["created_at"],
        str(row["uuid"]),
    )


async def _read_tenant(conn: asyncpg.Connection, slug: str) -> Tenant:
    row = await conn.fetchrow(_TENANTS, None, slug)
    if row is None:  # deleted by another request meanwhile
        raise NotFound(f"no tenant {slug!r}", field="tenant")
    return _tenant(row)


async def list_tenants(conn: asyncpg.Connection, who: Principal) -> list[Tenant]:
    """The tenants the key sees, by slug."""
    seen = seen_tenants(who)
    return [_tenant(row) for row in await conn.fetch(_TENANTS, seen, None)]


async def get_tenant(conn: asyncpg.Connection, who: Principal, slug: str) -> Tenant:
    await _seen_tenant(conn, who, slug)
    return await _read_tenant(conn, slug)


async def _set_networks(conn: asyncpg.Connection, tenant_id: int, networks: Sequence[str]) -> None:
    """Make the tenant's networks exactly ``networks``, touching only what changes."""
    await conn.execute(
        "DELETE FROM tenant_networks WHERE tenant_id = $1 AND network <> ALL($2::cidr[])",
        tenant_id,
        list(networks),
    )
    await conn.execute(
        "INSERT INTO tenant_networks (tenant_id, network) SELECT $1, unnest($2::cidr[])"
        " ON CONFLICT DO NOTHING",
        tenant_id,
        list(networks),
    )


async def create_tenant(conn: asyncpg.Connection, who: Principal, spec: TenantSpec) -> Tenant:
    _require_operator(who)
    async with conn.transaction():
        tenant_id = await conn.fetchval(
            "INSERT INTO tenants (slug, name, region) VALUES ($1, $2, $3)"
            " ON CONFLICT (slug) DO NOTHING RETURNING id",
            spec.slug,
            spec.name,
            spec.region,
        )
        if tenant_id is None:
            raise Conflict(f"tenant {spec.slug!r} exists already", field="slug")
        await _set_networks(conn, tenant_id, spec.networks)
        return await _read_tenant(conn, spec.slug)


async def replace_tenant(
    conn: asyncpg.Connection, who: Principal, slug: str, spec: TenantSpec
) -> Tenant:
    """Replace the name, region and networks of tenant ``slug`` (``spec.slug`` must be it)."""
    if spec.slug != slug:
        raise InvalidRequest(
            f"slugs are immutable: this is tenant {slug!r}; create {spec.slug!r} instead",
            field="slug",
        )
    async with conn.transaction():
        tenant_id = await _seen_tenant(conn, who, slug)
        _require_operator(who)
        await conn.execute(
            "UPDATE tenants SET name = $2, region = $3 WHERE id = $1",
            tenant_id,
            spec.name,
            spec.region,
        )
        await _set_networks(conn, tenant_id, spec.networks)
        return await _read_tenant(conn, slug)


async def delete_tenant(conn: asyncpg.Connection, who: Principal, slug: str) -> None:
    """Delete tenant ``slug`` with everything it holds: the schema cascades to its
    networks, usergroups, users, names, numbers, user keys and grants."""
    tenant_id = await _seen_tenant(conn, who, slug)
    _require_operator(who)
    if await conn.fetchval("DELETE FROM tenants WHERE id = $1 RETURNING id", tenant_id) is None:
        raise NotFound(f"no tenant {slug!r}", field="tenant")


# --- usergroups ---

_USERGROUPS = (
    "SELECT id, slug, created_at FROM usergroups"
    " WHERE tenant_id = $1 AND ($2::text IS NULL OR slug = $2) ORDER BY slug"
)


async def list_usergroups(conn: asyncpg.Connection, who: Principal, tenant: str) -> list[Usergroup]:
    """The usergroups of ``tenant`` the key reaches."""
    tenant_id = await _seen_tenant(conn, who, tenant)
    rows = await conn.fetch(_USERGROUPS, tenant_id, None)
    return [
        Usergroup(tenant, r["slug"], r["created_at"])
        for r in rows
        if reaches_usergroup(who, tenant_id, r["id"])
    ]


async def get_usergroup(
    conn: asyncpg.Connection, who: Principal, tenant: str, slug: str
) -> Usergroup:
    tenant_id = await _seen_tenant(conn, who, tenant)
    row = await conn.fetchrow(_USERGROUPS, tenant_id, slug)
    if row is None or not reaches_usergroup(who, tenant_id, row["id"]):
        raise NotFound(f"no usergroup {slug!r} in tenant {tenant!r}", field="usergroup")
    return Usergroup(tenant, row["slug"], row["created_at"])


async def create_usergroup(
    conn: asyncpg.Connection, who: Principal, tenant: str, slug: str
) -> Usergroup:
    tenant_id = await _managed_tenant(conn, who, tenant)
    check_slug(USERGROUP_SLUG, slug)
    row = await conn.fetchrow(
        "INSERT INTO usergroups (tenant_id, slug) VALUES ($1, $2)"
        " ON CONFLICT (tenant_id, slug) DO NOTHING RETURNING slug, created_at",
        tenant_id,
        slug,
    )
    if row is None:
        raise Conflict(f"usergroup {slug!r} exists already in tenant {tenant!r}", field="slug")
    return Usergroup(tenant, row["slug"], row["created_at"])


async def delete_usergroup(
    conn: asyncpg.Connection, who: Principal, tenant: str, slug: str
) -> None:
    """Delete a usergroup and its names; its users stay, in no group."""
    tenant_id = await _managed_tenant(conn, who, tenant)
    deleted = await conn.fetchval(
        "DELETE FROM usergroups WHERE tenant_id = $1 AND slug = $2 RETURNING id", tenant_id, slug
    )
    if deleted is None:
        raise NotFound(f"no usergroup {slug!r} in tenant {tenant!r}", field="usergroup")


# --- users ---

_USERS = """
SELECT u.uuid, u.slug, u.usergroup_id, g.slug AS usergroup, u.created_at
  FROM users u
  LEFT JOIN usergroups g ON g.id = u.usergroup_id
 WHERE u.tenant_id = $1 AND ($2::text IS NULL OR u.slug = $2)
 ORDER BY u.slug
"""


def _sees_user(who: Principal, tenant_id: int, row: asyncpg.Record) -> bool:
    """A user is in reach with its whole tenant or with its usergroup."""
    return reaches(who, Verb.READ, Target(Scope.USER, tenant_id, row["usergroup_id"]))


def _user(tenant: str, row: asyncpg.Record) -> User:
    return User(tenant, row["slug"], row["usergroup"], row["created_at"], str(row["uuid"]))


async def list_users(conn: asyncpg.Connection, who: Principal, tenant: str) -> list[User]:
    """The users of ``tenant`` the key reaches."""
    tenant_id = await _seen_tenant(conn, who, tenant)
    rows = await conn.fetch(_USERS, tenant_id, None)
    return [_user(tenant, r) for r in rows if _sees_user(who, tenant_id, r)]


async def _read_user(
    conn: asyncpg.Connection, who: Principal, tenant_id: int, tenant: str, slug: str
) -> User:
    row = await conn.fetchrow(_USERS, tenant_id, slug)
    if row is None or not _sees_user(who, tenant_id, row):
        raise NotFound(f"no user {slug!r} in tenant {tenant!r}", field="user")
    return _user(tenant, row)


async def get_user(conn: asyncpg.Connection, who: Principal, tenant: str, slug: str) -> User:
    tenant_id = await _seen_tenant(conn, who, tenant)
    return await _read_user(conn, who, tenant_id, tenant, slug)


async def _group_id(
    conn: asyncpg.Connection, tenant_id: int, tenant: str, usergroup: str | None
) -> int | None:
    if usergroup is None:
        return None
    group_id: int | None = await conn.fetchval(
        "SELECT id FROM usergroups WHERE tenant_id = $1 AND slug = $2", tenant_id, usergroup
    )
    if group_id is None:
        raise NotFound(f"no usergroup {usergroup!r} in tenant {tenant!r}", field="usergroup")
    return group_id


async def create_user(
    conn: asyncpg.Connection, who: Principal, tenant: str, slug: str, usergroup: str | None
) -> User:
    tenant_id = await _managed_tenant(conn, who, tenant)
    check_slug(USER_SLUG, slug)
    async with conn.transaction():
        group_id = await _group_id(conn, tenant_id, tenant, usergroup)
        inserted = await conn.fetchval(
            "INSERT INTO users (tenant_id, usergroup_id, slug) VALUES ($1, $2, $3)"
            " ON CONFLICT (tenant_id, slug) DO NOTHING RETURNING id",
            tenant_id,
            group_id,
            slug,
        )
        if inserted is None:
            raise Conflict(f"user {slug!r} exists already in tenant {tenant!r}", field="slug")
        return await _read_user(conn, who, tenant_id, tenant, slug)


async def replace_user(
    conn: asyncpg.Connection, who: Principal, tenant: str, slug: str, usergroup: str | None
) -> User:
    """Put user ``slug`` in ``usergroup`` (None: in no group)."""
    tenant_id = await _managed_tenant(conn, who, tenant)
    async with conn.transaction():
        group_id = await _group_id(conn, tenant_id, tenant, usergroup)
        updated = await conn.fetchval(
            "UPDATE users SET usergroup_id = $3 WHERE tenant_id = $1 AND slug = $2 RETURNING id",
            tenant_id,
            slug,
            group_id,
        )
        if updated is None:
            raise NotFound(f"no user {slug!r} in tenant {tenant!r}", field="user")
        return await _read_user(conn, who, tenant_id, tenant, slug)


async def delete_user(conn: asyncpg.Connection, who: Principal, tenant: str, slug: str) -> None:
    """Delete a user with its names and its user keys (the schema cascades)."""
    tenant_id = await _managed_tenant(conn, who, tenant)
    deleted = await conn.fetchval(
        "DELETE FROM users WHERE tenant_id = $1 AND slug = $2 RETURNING id", tenant_id, slug
    )
    if deleted is None:
        raise NotFound(f"no user {slug!r} in tenant {tenant!r}", field="user")
