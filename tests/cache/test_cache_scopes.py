"""The scope chain and longest-prefix rule (DESIGN.md "Names live in scopes")."""

from __future__ import annotations

import pytest

from cnamd.cache.resolver import GLOBAL_NAMESPACE, private_chain
from cnamd.cache.trie import CacheBuilder, NameCache
from cnamd.errors import InvalidNumber
from cnamd.model import GLOBAL_ONLY, LookupContext, LookupResult, Scope

NUMBER = "+492216698712"
ASKER = LookupContext(tenant_id=7, usergroup_id=70, user_id=700)


def build(*entries: tuple[Scope, int, str, str]) -> NameCache:
    builder = CacheBuilder()
    for entry in entries:
        builder.add(*entry)
    return builder.build()


def test_user_scope_beats_usergroup() -> None:
    cache = build(
        (Scope.USERGROUP, 70, NUMBER, "Group name"),
        (Scope.USER, 700, "+49", "User name"),
    )
    assert cache.lookup(NUMBER, ASKER) == LookupResult("User name", "+49", Scope.USER)


def test_usergroup_beats_enterprise() -> None:
    cache = build(
        (Scope.ENTERPRISE, 7, NUMBER, "Tenant name"),
        (Scope.USERGROUP, 70, "+4922", "Group name"),
    )
    assert cache.lookup(NUMBER, ASKER) == LookupResult("Group name", "+4922", Scope.USERGROUP)


def test_enterprise_beats_global() -> None:
    cache = build(
        (Scope.GLOBAL, 0, NUMBER, "Published"),
        (Scope.ENTERPRISE, 7, "+492", "Tenant name"),
    )
    assert cache.lookup(NUMBER, ASKER) == LookupResult("Tenant name", "+492", Scope.ENTERPRISE)


def test_global_answers_when_no_private_scope_matches() -> None:
    cache = build((Scope.GLOBAL, 0, "+4922166987", "ACME Cologne"), (Scope.USER, 700, "+1", "x"))
    assert cache.lookup(NUMBER, ASKER) == LookupResult("ACME Cologne", "+4922166987", Scope.GLOBAL)


def test_longest_prefix_wins_within_scope() -> None:
    cache = build(
        (Scope.GLOBAL, 0, "+49", "Germany"),
        (Scope.GLOBAL, 0, "+4922166987", "ACME Cologne"),
        (Scope.GLOBAL, 0, "+492216", "Cologne"),
    )
    assert cache.lookup(NUMBER, GLOBAL_ONLY) == LookupResult(
        "ACME Cologne", "+4922166987", Scope.GLOBAL
    )
    assert cache.lookup("+4922169", GLOBAL_ONLY) == LookupResult("Cologne", "+492216", Scope.GLOBAL)
    assert cache.lookup("+4930", GLOBAL_ONLY) == LookupResult("Germany", "+49", Scope.GLOBAL)


def test_full_number_is_a_prefix_of_itself() -> None:
    cache = build((Scope.GLOBAL, 0, NUMBER, "John Doe"), (Scope.GLOBAL, 0, "+4922", "Cologne"))
    assert cache.lookup(NUMBER, GLOBAL_ONLY) == LookupResult("John Doe", NUMBER, Scope.GLOBAL)


def test_key_longer_than_the_number_does_not_match() -> None:
    cache = build((Scope.GLOBAL, 0, NUMBER, "John Doe"))
    assert cache.lookup(NUMBER[:-1], GLOBAL_ONLY) is None


def test_other_tenants_entries_are_invisible() -> None:
    cache = build(
        (Scope.ENTERPRISE, 8, NUMBER, "Other tenant"),
        (Scope.USERGROUP, 71, NUMBER, "Other group"),
        (Scope.USER, 701, NUMBER, "Other user"),
        (Scope.ENTERPRISE, 77, NUMBER, "Tenant 77, a prefix-sharing id"),
    )
    assert cache.lookup(NUMBER, ASKER) is None
    assert cache.lookup(NUMBER, LookupContext(tenant_id=8)) == LookupResult(
        "Other tenant", NUMBER, Scope.ENTERPRISE
    )


def test_private_scopes_are_not_searched_without_a_context() -> None:
    cache = build((Scope.USER, 700, NUMBER, "Private"))
    assert cache.lookup(NUMBER, GLOBAL_ONLY) is None


def test_same_id_in_different_scopes_stays_apart() -> None:
    cache = build((Scope.USERGROUP, 7, NUMBER, "Group 7"))
    assert cache.lookup(NUMBER, LookupContext(tenant_id=7, user_id=7)) is None


def test_later_add_of_the_same_key_wins() -> None:
    cache = build((Scope.GLOBAL, 0, NUMBER, "Old"), (Scope.GLOBAL, 0, NUMBER, "New"))
    assert cache.get(Scope.GLOBAL, 0, NUMBER) == "New"
    assert len(cache) == 1


@pytest.mark.parametrize("number", ["", "+", "492216698712", "+49\udc80", "tel:+49", "+٤٩"])
def test_odd_numbers_find_nothing_and_do_not_raise(number: str) -> None:
    cache = build((Scope.GLOBAL, 0, "+49", "Germany"))
    assert cache.lookup(number, ASKER) is None


@pytest.mark.parametrize("key", ["49", "+", "+1234567890123456", "+49a", "+٤٩", "5+49"])
def test_malformed_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidNumber):
        CacheBuilder().add(Scope.GLOBAL, 0, key, "x")


def test_global_entries_have_owner_zero() -> None:
    with pytest.raises(ValueError, match="owner"):
        CacheBuilder().add(Scope.GLOBAL, 3, "+49", "x")


def test_chain_is_user_usergroup_enterprise_then_global() -> None:
    assert private_chain(ASKER) == (
        (Scope.USER, 700),
        (Scope.USERGROUP, 70),
        (Scope.ENTERPRISE, 7),
    )
    assert GLOBAL_NAMESPACE == (Scope.GLOBAL, 0)


def test_chain_marks_scopes_the_asker_lacks() -> None:
    assert private_chain(LookupContext(tenant_id=7)) == (
        (Scope.USER, None),
        (Scope.USERGROUP, None),
        (Scope.ENTERPRISE, 7),
    )


def test_fast_result_equals_a_constructed_one() -> None:
    cache = build((Scope.GLOBAL, 0, "+49", "Germany"))
    found = cache.lookup(NUMBER, GLOBAL_ONLY)
    assert found == LookupResult("Germany", "+49", Scope.GLOBAL)
    assert hash(found) == hash(LookupResult("Germany", "+49", Scope.GLOBAL))
    assert repr(found) == "LookupResult(name='Germany', matched='+49', scope=<Scope.GLOBAL: 3>)"
