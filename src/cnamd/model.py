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
