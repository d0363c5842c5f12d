"""Who holds a phone book: path names and scope specs -> Owner, within a key's reach.

What a key may not reach is reported as NotFound, exactly like what does not
exist, so that one tenant cannot learn another's enterprise or usergroup
names by probing (issue #3: 404, not 403).
"""

from __future__ import annotations

import asyncpg

from cnamd.access import Duty, Principal, Target, Verb, reaches, require
from cnamd.errors import InvalidRequest, NotFound
from cnamd.model import Owner, Role, Scope

__all__ = [
    "enterprise_owner",
    "global_owner",
    "owner_from_spec",
    "user_owner",
    "usergroup_owner",
]

GLOBAL = Owner(Scope.GLOBAL, 0, None, None)


def global_owner(principal: Principal | None = None) -> Owner:
    """The global directory; only operators write it directly."""
    if principal is not None:
        require(principal, Duty.KEEP_GLOBAL)
    return GLOBAL


async def user_owner(conn: asyncpg.Connection, principal: Principal) -> Owner:
    """The phone book of a user key's own user (``/api/user/cnam``)."""
    require(principal, Duty.OWN_PHONE_BOOK)
    row = await conn.fetchrow(
        "SELECT u.id, u.tenant_id, u.usergroup_id, t.region FROM users u"
        " JOIN tenants t ON t.id = u.tenant_id WHERE u.id = $1",
        principal.user_id,
    )
    if row is None:  # deleted since the key was read: the key dies with it
        raise NotFound("this key's user no longer exists", field="user")
    return Owner(
        Scope.USER, row["id"], row["tenant_id"], row["region"], row["usergroup_id"], row["id"]
    )


async def enterprise_owner(conn: asyncpg.Connection, principal: Principal, slug: str) -> Owner:
    """The phone book of enterprise (tenant) ``slug``, if the key reaches all of it."""
    require(principal, Duty.PARTNER_API)
    row = await conn.fetchrow("SELECT id, region FROM tenants WHERE slug = $1", slug)
    # reading and writing a phone book take the same reach (Verb.WRITE's)
    if row is None or not reaches(principal, Verb.WRITE, Target(Scope.ENTERPRISE, row["id"])):
        raise NotFound(f"no enterprise {slug!r}", field="enterprise", status="wrong-enterprise")
    return Owner(Scope.ENTERPRISE, row["id"], row["id"], row["region"])


async def usergroup_owner(conn: asyncpg.Connection, principal: Principal, ref: str) -> Owner:
    """The phone book of usergroup ``ref``: ``GROUP``, or ``ENTERPRISE:GROUP`` when
    the key reaches groups of that name in several enterprises."""
    require(principal, Duty.PARTNER_API)
    tenant_slug, _, slug = ref.rpartition(":")
    rows = await conn.fetch(
        "SELECT g.id, g.tenant_id, t.slug AS tenant_slug, t.region FROM usergroups g"
        " JOIN tenants t ON t.id = g.tenant_id"
        " WHERE g.slug = $1 AND ($2 = '' OR t.slug = $2) ORDER BY t.slug",
        slug,
        tenant_slug,
    )
    reachable = [
        r
        for r in rows
        if reaches(principal, Verb.WRITE, Target(Scope.USERGROUP, r["tenant_id"], r["id"]))
    ]
    if not reachable:
        raise NotFound(f"no usergroup {ref!r}", field="usergroup", status="wrong-usergroup")
    if len(reachable) > 1:
        where = ", ".join(f"{r['tenant_slug']}:{slug}" for r in reachable)
        raise InvalidRequest(
            f"usergroup {ref!r} is in several enterprises; name one of {where}",
            field="usergroup",
        )
    row = reachable[0]
    return Owner(Scope.USERGROUP, row["id"], row["tenant_id"], row["region"], row["id"])


async def owner_from_spec(conn: asyncpg.Connection, spec: str) -> Owner:
    """The owner a command line names: ``global``, ``enterprise:E``,
    ``usergroup:E:G`` or ``user:E:U`` (the operator's tools reach everything)."""
    kind, _, rest = spec.partition(":")
    operator = Principal("cli", Role.OPERATOR)
    if kind == "global" and not rest:
        return GLOBAL
    if kind == "enterprise" and rest:
        return await enterprise_owner(conn, operator, rest)
    if kind == "usergroup" and rest.count(":") == 1:
        return await usergroup_owner(conn, operator, rest)
    if kind == "user" and rest.count(":") == 1:
        tenant_slug, user_slug = rest.split(":")
        row = await conn.fetchrow(
            "SELECT u.id, u.tenant_id, u.usergroup_id, t.region FROM users u"
            " JOIN tenants t ON t.id = u.tenant_id WHERE t.slug = $1 AND u.slug = $2",
            tenant_slug,
            user_slug,
        )
        if row is None:
            raise NotFound(f"no user {rest!r}", field="scope")
        return Owner(
            Scope.USER, row["id"], row["tenant_id"], row["region"], row["usergroup_id"], row["id"]
        )
    raise InvalidRequest(
        f"{spec!r} is not a scope; use global, enterprise:E, usergroup:E:G or user:E:U",
        field="scope",
    )
