"""Who may do what: the Principal a front makes once per request, and pure rules.

Every access decision in cnamd is taken here; handlers and stores ask, nothing
else decides. Two kinds of question:

- **reach** (``reach``): may this key look up, read or write this scope of this
  tenant? Role x scope x verb x own/foreign, tested as a table in
  tests/test_access.py. Out of reach is ``HIDDEN``: answered like what does
  not exist (404), so that one tenant cannot probe another's names (issue #3).
  A role that may never do it is ``FORBIDDEN`` (403).
- **duties** (``require``): whole API areas that only some roles may use
  (tenants, keys, approvals, provisioning); refused with a 403 saying which key
  is needed.

``None`` as a principal is a trusted source (an address in ``http.trusted``):
it reaches everything, as the SIP dip's allowed sources do.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from cnamd.errors import Forbidden
from cnamd.model import Role, Scope


@dataclass(frozen=True, slots=True)
class Grant:
    """A partner key's reach: a whole tenant (``usergroup_id`` None) or one usergroup of it."""

    tenant_id: int
    usergroup_id: int | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who an authenticated request acts for: the key, its role and its reach.

    ``tenant_id`` and ``user_id`` are a user key's own; a partner's reach is its
    ``grants``; an operator reaches everything.
    """

    key_id: str
    role: Role
    tenant_id: int | None = None
    user_id: int | None = None
    grants: frozenset[Grant] = frozenset()


class Verb(enum.Enum):
    """What a request does with a scope's names."""

    LOOK_UP = "look up"  # ask for a caller's name in it
    READ = "read"  # list or read its entries and records
    WRITE = "write"  # add, change or delete them


class Decision(enum.Enum):
    ALLOW = "allow"
    HIDDEN = "hidden"  # out of reach: answered as not found
    FORBIDDEN = "forbidden"  # the role may never: 403


@dataclass(frozen=True, slots=True)
class Target:
    """A scope of one tenant: the enterprise, one usergroup, one user, or the global directory."""

    scope: Scope
    tenant_id: int | None = None
    usergroup_id: int | None = None
    user_id: int | None = None


GLOBAL = Target(Scope.GLOBAL)
_OPERATORS_KEEP = (Scope.GLOBAL, Scope.UPSTREAM)


def reaches_tenant(who: Principal | None, tenant_id: int) -> bool:
    """The whole tenant (its enterprise scope, every usergroup and user) is in reach."""
    if who is None or who.role is Role.OPERATOR:
        return True
    return who.role is Role.PARTNER and Grant(tenant_id) in who.grants


def reaches_usergroup(who: Principal | None, tenant_id: int, usergroup_id: int) -> bool:
    """A usergroup is in reach through its tenant or a grant of its own."""
    if reaches_tenant(who, tenant_id):
        return True
    assert who is not None
    return who.role is Role.PARTNER and Grant(tenant_id, usergroup_id) in who.grants


def sees_tenant(who: Principal | None, tenant_id: int) -> bool:
    """Anything of the tenant is in reach, so the tenant may be named to this key."""
    if who is None or who.role is Role.OPERATOR:
        return True
    if who.role is Role.USER:
        return who.tenant_id == tenant_id
    return any(g.tenant_id == tenant_id for g in who.grants)


def seen_tenants(who: Principal) -> list[int] | None:
    """The tenants a key may list, in id order; None: all of them (an operator)."""
    if who.role is Role.OPERATOR:
        return None
    if who.role is Role.USER:
        return [] if who.tenant_id is None else [who.tenant_id]
    return sorted({g.tenant_id for g in who.grants})


def readable_tenants(who: Principal) -> list[int] | None:
    """The tenants whose enterprise scope ``who`` may read, in id order (what ``reach``
    allows for Verb.READ, listed); None: all of them (an operator)."""
    if who.role is Role.OPERATOR:
        return None
    if who.role is Role.USER:
        return [] if who.tenant_id is None else [who.tenant_id]
    return sorted({g.tenant_id for g in who.grants if g.usergroup_id is None})


def reach(who: Principal | None, verb: Verb, target: Target) -> Decision:
    """May ``who`` do ``verb`` on ``target``? The one rule behind every scope check."""
    if who is None or who.role is Role.OPERATOR:
        return Decision.ALLOW
    if target.scope in _OPERATORS_KEEP:
        # every key looks names up in the global directory and the upstream answers;
        # operators alone keep them
        return Decision.ALLOW if verb is Verb.LOOK_UP else Decision.FORBIDDEN
    if who.role is Role.PARTNER:
        return Decision.ALLOW if _partner_reaches(who, target) else Decision.HIDDEN
    return _user_reach(who, verb, target)


def _partner_reaches(who: Principal, target: Target) -> bool:
    tenant = target.tenant_id
    if tenant is None:
        return False
    if reaches_tenant(who, tenant):
        return True
    group = target.usergroup_id
    # a user is reached through the whole tenant or through the user's usergroup
    return (
        target.scope is not Scope.ENTERPRISE
        and group is not None
        and (reaches_usergroup(who, tenant, group))
    )


def _user_reach(who: Principal, verb: Verb, target: Target) -> Decision:
    """A user key: its own user's phone book; its tenant's enterprise scope to look up and read.

    It names no usergroup: its own group is searched through its user's context.
    """
    if target.tenant_id is None or target.tenant_id != who.tenant_id:
        return Decision.HIDDEN
    if target.scope is Scope.USER:
        return Decision.ALLOW if target.user_id == who.user_id else Decision.HIDDEN
    if target.scope is Scope.USERGROUP:
        return Decision.HIDDEN
    return Decision.FORBIDDEN if verb is Verb.WRITE else Decision.ALLOW


def reaches(who: Principal | None, verb: Verb, target: Target) -> bool:
    return reach(who, verb, target) is Decision.ALLOW


class Duty(enum.Enum):
    """An area of the API that only some roles may use, with the refusal a key is given."""

    #: the global directory's entries (``/api/operator/cnam``, ``--scope global``)
    KEEP_GLOBAL = ("operator",), "the global directory is written by operator keys only", "scope"
    #: ``/api/user``: a user key's own phone book
    OWN_PHONE_BOOK = ("user",), "/api/user acts for the user of a user key; this key has none", ""
    #: ``/api/partner``: the phone books of the enterprises and usergroups a key reaches
    PARTNER_API = ("operator", "partner"), "/api/partner needs a partner or operator key", ""
    #: ``/api/operator``: tenants, usergroups and users as a provisioning system sees them
    PROVISION = ("operator", "partner"), "/api/operator needs a partner or operator key", ""
    #: creating, changing and deleting tenants
    MANAGE_TENANTS = ("operator",), "only operator keys create, change or delete tenants", "tenant"
    #: API keys
    MANAGE_KEYS = ("operator",), "API keys are managed with operator keys only", ""
    #: the upstream scope's stored answers (list, purge, pin, import)
    MANAGE_UPSTREAM = (
        ("operator",),
        "the upstream scope is managed with operator keys only",
        "",
    )
    #: the verdict on CNAM records
    APPROVE = ("operator",), "approving CNAM records needs an operator key", "authorization"
    #: changing phone numbers (a user key reads its tenant's)
    MANAGE_PHONE_NUMBERS = (
        ("operator", "partner"),
        "a user key reads its tenant's phone numbers; managing them needs a partner or"
        " operator key",
        "authorization",
    )

    def __init__(self, roles: tuple[str, ...], refusal: str, field: str) -> None:
        self.roles = roles
        self.refusal = refusal
        self.field = field


def may(who: Principal, duty: Duty) -> bool:
    if who.role.value not in duty.roles:
        return False
    return duty is not Duty.OWN_PHONE_BOOK or who.user_id is not None


def require(who: Principal, duty: Duty) -> None:
    """Raise Forbidden (403) naming the key that is needed unless ``who`` may."""
    if not may(who, duty):
        raise Forbidden(duty.refusal, field=duty.field or None)


def hash_secret(secret: str) -> bytes:
    """What is stored of an API key's secret, and compared with what a request presents."""
    return hashlib.sha256(secret.encode()).digest()
