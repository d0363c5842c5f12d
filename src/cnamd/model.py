"""Value types shared by the store, the cache and the fronts."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Scope(enum.IntEnum):
    """Where a name is held; lower values win (DESIGN.md "Names live in scopes")."""

    USER = 0
    USERGROUP = 1
    ENTERPRISE = 2
    GLOBAL = 3
    #: answers of upstream CNAM sources (issue #17), held apart from the trie
    #: (``cache/upstream.py``): asked only after every other scope missed
    UPSTREAM = 4

    @property
    def label(self) -> str:
        """The lowercase word used in APIs, the database and metrics."""
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class LookupContext:
    """Who is asking: selects the user, usergroup and enterprise scopes to search.

    ``None`` skips that scope; an empty context searches the global directory only.
    """

    tenant_id: int | None = None
    usergroup_id: int | None = None
    user_id: int | None = None


GLOBAL_ONLY = LookupContext()


@dataclass(frozen=True, slots=True)
class LookupResult:
    """A served name: the name, the key that matched and the scope it came from."""

    name: str
    matched: str
    scope: Scope


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One served name as the cache holds it.

    ``owner`` is the user, usergroup or tenant id for those scopes and 0 for
    GLOBAL; ``key`` is ``+`` and 1-15 digits, a full number or a prefix.
    """

    scope: Scope
    owner: int
    key: str
    name: str


class Role(enum.StrEnum):
    """What an API key may do (issue #3 "Identity and access")."""

    #: reaches everything, approves global-directory names
    OPERATOR = "operator"
    #: reaches the enterprises and usergroups it is granted
    PARTNER = "partner"
    #: reaches its own user's phone book only
    USER = "user"


@dataclass(frozen=True, slots=True)
class Grant:
    """A partner key's reach: a whole tenant (``usergroup_id`` None) or one usergroup of it."""

    tenant_id: int
    usergroup_id: int | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who an authenticated request acts for: the key, its role and its reach."""

    key_id: str
    role: Role
    tenant_id: int | None = None
    user_id: int | None = None
    grants: frozenset[Grant] = frozenset()

    def reaches_tenant(self, tenant_id: int) -> bool:
        """Whether the enterprise scope of ``tenant_id`` (and all its usergroups) is in reach."""
        return self.role is Role.OPERATOR or Grant(tenant_id) in self.grants

    def reaches_usergroup(self, tenant_id: int, usergroup_id: int) -> bool:
        return self.reaches_tenant(tenant_id) or Grant(tenant_id, usergroup_id) in self.grants

    def sees_tenant(self, tenant_id: int) -> bool:
        """Whether anything of ``tenant_id`` is in reach (so it may be named to this key)."""
        return self.reaches_tenant(tenant_id) or any(g.tenant_id == tenant_id for g in self.grants)


@dataclass(frozen=True, slots=True)
class Owner:
    """The holder of a phone book: one scope of one tenant (or the global directory).

    ``owner_id`` is what the database and the cache key entries by; ``region``
    reads national numbers written in that tenant's dialling habits.
    """

    scope: Scope
    owner_id: int
    tenant_id: int | None
    region: str | None
    usergroup_id: int | None = None
    user_id: int | None = None


@dataclass(frozen=True, slots=True)
class CnamEntry:
    """One name in a phone book: a number, or a prefix standing for a block of numbers."""

    phone: str
    name: str
    prefix: bool = False
