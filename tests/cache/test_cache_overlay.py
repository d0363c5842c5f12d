"""Live changes over the static base: put, delete, counts, compaction."""

from __future__ import annotations

from cnamd.cache.trie import CacheBuilder, NameCache
from cnamd.model import GLOBAL_ONLY, CacheEntry, LookupContext, LookupResult, Scope

NUMBER = "+492216698712"
TENANT = LookupContext(tenant_id=7)


def base() -> NameCache:
    builder = CacheBuilder()
    builder.add(Scope.GLOBAL, 0, "+49", "Germany")
    builder.add(Scope.GLOBAL, 0, "+4922166987", "ACME Cologne")
    builder.add(Scope.ENTERPRISE, 7, NUMBER, "Tenant name")
    return builder.build()


def counts(user: int = 0, group: int = 0, tenant: int = 0, directory: int = 0) -> dict[Scope, int]:
    return {
        Scope.USER: user,
        Scope.USERGROUP: group,
        Scope.ENTERPRISE: tenant,
        Scope.GLOBAL: directory,
    }


def test_put_adds_a_name_the_base_lacks() -> None:
    cache = base()
    cache.put(Scope.GLOBAL, 0, "+492216698", "Cologne block")
    assert cache.lookup("+4922166981", GLOBAL_ONLY) == LookupResult(
        "Cologne block", "+492216698", Scope.GLOBAL
    )
    assert cache.counts() == counts(tenant=1, directory=3)
    assert cache.overlay_size == 1


def test_put_replaces_a_base_name() -> None:
    cache = base()
    cache.put(Scope.GLOBAL, 0, "+49", "Deutschland")
    assert cache.get(Scope.GLOBAL, 0, "+49") == "Deutschland"
    assert cache.lookup("+4930", GLOBAL_ONLY) == LookupResult("Deutschland", "+49", Scope.GLOBAL)
    assert len(cache) == 3


def test_put_of_the_base_name_leaves_no_overlay_record() -> None:
    cache = base()
    cache.put(Scope.GLOBAL, 0, "+49", "Deutschland")
    cache.put(Scope.GLOBAL, 0, "+49", "Germany")
    assert cache.overlay_size == 0
    assert cache.get(Scope.GLOBAL, 0, "+49") == "Germany"


def test_delete_of_a_base_entry_hides_it() -> None:
    cache = base()
    assert cache.delete(Scope.GLOBAL, 0, "+4922166987") is True
    assert cache.lookup(NUMBER, GLOBAL_ONLY) == LookupResult("Germany", "+49", Scope.GLOBAL)
    assert cache.get(Scope.GLOBAL, 0, "+4922166987") is None
    assert cache.counts() == counts(tenant=1, directory=1)


def test_delete_of_a_private_entry_lets_global_answer() -> None:
    cache = base()
    assert cache.delete(Scope.ENTERPRISE, 7, NUMBER) is True
    assert cache.lookup(NUMBER, TENANT) == LookupResult("ACME Cologne", "+4922166987", Scope.GLOBAL)


def test_delete_of_a_missing_key_reports_false_and_changes_nothing() -> None:
    cache = base()
    assert cache.delete(Scope.GLOBAL, 0, "+1") is False
    assert cache.delete(Scope.USER, 1, NUMBER) is False
    assert cache.delete(Scope.GLOBAL, 0, "not a key") is False
    assert cache.overlay_size == 0
    assert len(cache) == 3


def test_second_delete_reports_false() -> None:
    cache = base()
    assert cache.delete(Scope.GLOBAL, 0, "+49") is True
    assert cache.delete(Scope.GLOBAL, 0, "+49") is False
    assert cache.counts() == counts(tenant=1, directory=1)


def test_put_over_a_deleted_key_revives_it() -> None:
    cache = base()
    cache.delete(Scope.GLOBAL, 0, "+4922166987")
    cache.put(Scope.GLOBAL, 0, "+4922166987", "ACME again")
    assert cache.lookup(NUMBER, GLOBAL_ONLY) == LookupResult(
        "ACME again", "+4922166987", Scope.GLOBAL
    )
    assert cache.counts() == counts(tenant=1, directory=2)


def test_delete_of_an_overlay_only_entry_forgets_it() -> None:
    cache = base()
    cache.put(Scope.USER, 5, "+4922", "Mine")
    assert cache.delete(Scope.USER, 5, "+4922") is True
    assert cache.overlay_size == 0
    assert cache.counts() == counts(tenant=1, directory=2)
    assert cache.lookup(NUMBER, LookupContext(user_id=5)) == LookupResult(
        "ACME Cologne", "+4922166987", Scope.GLOBAL
    )


def test_overlay_prefix_longer_than_the_base_match_wins() -> None:
    cache = base()
    cache.put(Scope.GLOBAL, 0, "+49221669871", "Longer")
    assert cache.lookup(NUMBER, GLOBAL_ONLY) == LookupResult("Longer", "+49221669871", Scope.GLOBAL)


def test_base_prefix_longer_than_an_overlay_put_wins() -> None:
    cache = base()
    cache.put(Scope.GLOBAL, 0, "+492", "Shorter")
    assert cache.lookup(NUMBER, GLOBAL_ONLY) == LookupResult(
        "ACME Cologne", "+4922166987", Scope.GLOBAL
    )


def test_entries_list_everything_live_once() -> None:
    cache = base()
    cache.delete(Scope.GLOBAL, 0, "+49")
    cache.put(Scope.GLOBAL, 0, "+4922166987", "ACME renamed")
    cache.put(Scope.USER, 5, "+1", "Mine")
    assert sorted(cache.entries(), key=repr) == sorted(
        [
            CacheEntry(Scope.GLOBAL, 0, "+4922166987", "ACME renamed"),
            CacheEntry(Scope.ENTERPRISE, 7, NUMBER, "Tenant name"),
            CacheEntry(Scope.USER, 5, "+1", "Mine"),
        ],
        key=repr,
    )


def test_compaction_preserves_answers_and_empties_the_overlay() -> None:
    cache = base()
    cache.delete(Scope.GLOBAL, 0, "+49")
    cache.put(Scope.GLOBAL, 0, "+4922166987", "ACME renamed")
    cache.put(Scope.USER, 5, "+4922", "Mine")
    compact = cache.compacted()
    assert compact.overlay_size == 0
    assert compact.counts() == cache.counts()
    assert set(compact.entries()) == set(cache.entries())
    for number in (NUMBER, "+4930", "+4922", "+1"):
        for ctx in (GLOBAL_ONLY, TENANT, LookupContext(user_id=5)):
            assert compact.lookup(number, ctx) == cache.lookup(number, ctx)


def test_closed_cache_is_empty() -> None:
    cache = base()
    cache.put(Scope.USER, 5, "+4922", "Mine")
    cache.close()
    assert cache.lookup(NUMBER, TENANT) is None
    assert len(cache) == 0
    cache.close()
