"""Value types shared by the store, the cache and the fronts."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


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


@dataclass(frozen=True, slots=True)
class Digest:
    """Count and XOR of entry hashes of served entries, as of change ``last_change_id``.

    PostgreSQL computes it in one scan (~0.7 s per million rows); the feed keeps
    its own in step with each applied change (XOR out the old, XOR in the new),
    so a missed, doubled or misapplied change shows as a difference.
    """

    count: int
    hash_xor: int
    last_change_id: int

    def text(self) -> str:
        """``count:xor`` (hex), for comparing what two daemons serve at a glance."""
        return f"{self.count}:{self.hash_xor & 0xFFFFFFFFFFFFFFFF:016x}"


KeyRow = tuple[str, str, str, int | None, int | None, float | None, list[tuple[int, int | None]]]


@dataclass(frozen=True, slots=True)
class ContextRows:
    """Raw rows; ``cache.contexts`` turns them into lookup maps."""

    tenants: list[tuple[int, str, str]]  # id, slug, region
    usergroups: list[tuple[int, int, str]]  # id, tenant_id, slug
    users: list[tuple[int, int, int | None, str]]  # id, tenant_id, usergroup_id, slug
    numbers: list[tuple[str, int, int | None]]  # number, tenant_id, user_id
    networks: list[tuple[str, int]]  # cidr, tenant_id
    # live API keys: key_id, secret hash (hex), role, tenant_id, user_id,
    # expiry (Unix seconds or None), grants [(tenant_id, usergroup_id or None)]
    keys: list[KeyRow] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain data for a snapshot's metadata, so a warm start knows who asks."""
        return {
            "tenants": self.tenants,
            "usergroups": self.usergroups,
            "users": self.users,
            "numbers": self.numbers,
            "networks": self.networks,
            "keys": self.keys,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContextRows:
        def rows(name: str) -> list[Any]:
            return [tuple(r) for r in data.get(name, [])]

        keys = [(*r[:6], [tuple(g) for g in r[6]]) for r in data.get("keys", [])]
        return cls(
            rows("tenants"),
            rows("usergroups"),
            rows("users"),
            rows("numbers"),
            rows("networks"),
            keys,
        )
