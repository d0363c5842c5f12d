"""The access rules in full: role x scope x verb x own/foreign (cnamd/access.py)."""

from __future__ import annotations

import pytest

from cnamd.access import (
    Decision,
    Duty,
    Grant,
    Principal,
    Target,
    Verb,
    may,
    reach,
    readable_tenants,
    require,
    seen_tenants,
    sees_tenant,
)
from cnamd.errors import Forbidden
from cnamd.model import Role, Scope

PRINCIPALS: dict[str, Principal | None] = {
    "operator": Principal("op", Role.OPERATOR),
    # tenant 1 whole, and usergroup 20 of tenant 2
    "partner": Principal("pa", Role.PARTNER, grants=frozenset({Grant(1), Grant(2, 20)})),
    # user 100 of tenant 1 (in usergroup 10)
    "user": Principal("us", Role.USER, tenant_id=1, user_id=100),
    "trusted": None,  # a trusted source address, no key
}

TARGETS = {
    "global": Target(Scope.GLOBAL),
    "upstream": Target(Scope.UPSTREAM),
    "enterprise 1": Target(Scope.ENTERPRISE, 1),
    "enterprise 2": Target(Scope.ENTERPRISE, 2),
    "enterprise 3": Target(Scope.ENTERPRISE, 3),
    "usergroup 1:10": Target(Scope.USERGROUP, 1, 10),
    "usergroup 2:20": Target(Scope.USERGROUP, 2, 20),
    "usergroup 2:21": Target(Scope.USERGROUP, 2, 21),
    "usergroup 3:30": Target(Scope.USERGROUP, 3, 30),
    "user 1:10:100": Target(Scope.USER, 1, 10, 100),
    "user 1:10:101": Target(Scope.USER, 1, 10, 101),
    "user 2:20:200": Target(Scope.USER, 2, 20, 200),
    "user 2:-:201": Target(Scope.USER, 2, None, 201),
    "user 3:30:300": Target(Scope.USER, 3, 30, 300),
}

# target          verb      operator  partner    user       trusted
TABLE = """
global           look-up   allow     allow      allow      allow
global           read      allow     forbidden  forbidden  allow
global           write     allow     forbidden  forbidden  allow
upstream         look-up   allow     allow      allow      allow
upstream         read      allow     forbidden  forbidden  allow
upstream         write     allow     forbidden  forbidden  allow
enterprise 1     look-up   allow     allow      allow      allow
enterprise 1     read      allow     allow      allow      allow
enterprise 1     write     allow     allow      forbidden  allow
enterprise 2     look-up   allow     hidden     hidden     allow
enterprise 2     read      allow     hidden     hidden     allow
enterprise 2     write     allow     hidden     hidden     allow
enterprise 3     look-up   allow     hidden     hidden     allow
enterprise 3     read      allow     hidden     hidden     allow
enterprise 3     write     allow     hidden     hidden     allow
usergroup 1:10   look-up   allow     allow      hidden     allow
usergroup 1:10   read      allow     allow      hidden     allow
usergroup 1:10   write     allow     allow      hidden     allow
usergroup 2:20   look-up   allow     allow      hidden     allow
usergroup 2:20   read      allow     allow      hidden     allow
usergroup 2:20   write     allow     allow      hidden     allow
usergroup 2:21   look-up   allow     hidden     hidden     allow
usergroup 2:21   read      allow     hidden     hidden     allow
usergroup 2:21   write     allow     hidden     hidden     allow
usergroup 3:30   look-up   allow     hidden     hidden     allow
usergroup 3:30   read      allow     hidden     hidden     allow
usergroup 3:30   write     allow     hidden     hidden     allow
user 1:10:100    look-up   allow     allow      allow      allow
user 1:10:100    read      allow     allow      allow      allow
user 1:10:100    write     allow     allow      allow      allow
user 1:10:101    look-up   allow     allow      hidden     allow
user 1:10:101    read      allow     allow      hidden     allow
user 1:10:101    write     allow     allow      hidden     allow
user 2:20:200    look-up   allow     allow      hidden     allow
user 2:20:200    read      allow     allow      hidden     allow
user 2:20:200    write     allow     allow      hidden     allow
user 2:-:201     look-up   allow     hidden     hidden     allow
user 2:-:201     read      allow     hidden     hidden     allow
user 2:-:201     write     allow     hidden     hidden     allow
user 3:30:300    look-up   allow     hidden     hidden     allow
user 3:30:300    read      allow     hidden     hidden     allow
user 3:30:300    write     allow     hidden     hidden     allow
"""

VERBS = {"look-up": Verb.LOOK_UP, "read": Verb.READ, "write": Verb.WRITE}
COLUMNS = ("operator", "partner", "user", "trusted")


def _rows() -> list[tuple[str, str, str, Decision]]:
    rows = []
    for line in TABLE.strip().splitlines():
        *target_words, verb, a, b, c, d = line.split()
        target = " ".join(target_words)
        for who, word in zip(COLUMNS, (a, b, c, d), strict=True):
            rows.append((who, target, verb, Decision(word)))
    return rows


ROWS = _rows()


def test_the_table_covers_every_principal_target_and_verb() -> None:
    assert {(w, t, v) for w, t, v, _ in ROWS} == {
        (w, t, v) for w in COLUMNS for t in TARGETS for v in VERBS
    }


@pytest.mark.parametrize(("who", "target", "verb", "expected"), ROWS)
def test_reach(who: str, target: str, verb: str, expected: Decision) -> None:
    assert reach(PRINCIPALS[who], VERBS[verb], TARGETS[target]) is expected


# duty                    operator  partner  user-with-user  user-without
DUTIES = {
    Duty.KEEP_GLOBAL: (True, False, False, False),
    Duty.OWN_PHONE_BOOK: (False, False, True, False),
    Duty.PARTNER_API: (True, True, False, False),
    Duty.PROVISION: (True, True, False, False),
    Duty.MANAGE_TENANTS: (True, False, False, False),
    Duty.MANAGE_KEYS: (True, False, False, False),
    Duty.APPROVE: (True, False, False, False),
    Duty.MANAGE_UPSTREAM: (True, False, False, False),
    Duty.MANAGE_PHONE_NUMBERS: (True, True, False, False),
}
KEYS = (
    Principal("op", Role.OPERATOR),
    Principal("pa", Role.PARTNER, grants=frozenset({Grant(1)})),
    Principal("us", Role.USER, tenant_id=1, user_id=100),
    Principal("ux", Role.USER, tenant_id=1),
)


def test_every_duty_is_in_the_table() -> None:
    assert set(DUTIES) == set(Duty)


@pytest.mark.parametrize(("duty", "allowed"), DUTIES.items(), ids=[d.name for d in DUTIES])
def test_duty(duty: Duty, allowed: tuple[bool, ...]) -> None:
    assert tuple(may(key, duty) for key in KEYS) == allowed
    for key, ok in zip(KEYS, allowed, strict=True):
        if ok:
            require(key, duty)
        else:
            with pytest.raises(Forbidden) as refused:
                require(key, duty)
            assert refused.value.reason == duty.refusal


def test_which_tenants_a_key_sees_and_reads() -> None:
    operator, partner, user, trusted = PRINCIPALS.values()
    assert partner is not None and user is not None and operator is not None
    # a partner sees a tenant where it holds any grant, reads those it holds whole
    assert seen_tenants(partner) == [1, 2]
    assert readable_tenants(partner) == [1]
    assert [t for t in (1, 2, 3) if sees_tenant(partner, t)] == [1, 2]
    # a user key sees and reads its own tenant only
    assert seen_tenants(user) == readable_tenants(user) == [1]
    assert [t for t in (1, 2, 3) if sees_tenant(user, t)] == [1]
    # operators and trusted sources: everything
    assert seen_tenants(operator) is None and readable_tenants(operator) is None
    assert sees_tenant(trusted, 3) and sees_tenant(operator, 3)
