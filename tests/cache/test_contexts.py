"""Who is asking: tenants, users, called numbers and SIP source networks -> scopes."""

from __future__ import annotations

import json

from cnamd.cache.contexts import Contexts
from cnamd.model import GLOBAL_ONLY, ContextRows, LookupContext

ROWS = ContextRows(
    tenants=[(1, "acme", "DE"), (2, "globex", "US")],
    usergroups=[(10, 1, "sales")],
    users=[(100, 1, 10, "alice"), (101, 1, None, "bob")],
    numbers=[("+492216698700", 1, None), ("+492216698701", 1, 100), ("12125550100", 2, None)],
    networks=[("10.0.0.0/8", 1), ("10.1.2.0/24", 2), ("2001:db8::/32", 2)],
)


def contexts() -> Contexts:
    return Contexts(ROWS, allowed_networks=["192.0.2.0/24"])


def test_user_context_carries_group_and_tenant() -> None:
    ctx = contexts()
    acme = ctx.tenant("acme")
    assert acme is not None
    assert ctx.user_context(acme, "alice") == LookupContext(1, 10, 100)
    assert ctx.user_context(acme, "bob") == LookupContext(1, None, 101)
    assert ctx.user_context(acme, "mallory") is None


def test_called_number_owner_gives_user_or_tenant_scopes() -> None:
    ctx = contexts()
    assert ctx.called_context("+492216698701") == LookupContext(1, 10, 100)
    assert ctx.called_context("+492216698700") == LookupContext(1)
    # a number stored without "+" is found in its E.164 spelling too
    assert ctx.called_context("+12125550100") == LookupContext(2)
    assert ctx.called_context("+4930") is None


def test_most_specific_source_network_wins() -> None:
    ctx = contexts()
    assert ctx.source("10.9.9.9") == (True, LookupContext(1))
    assert ctx.source("10.1.2.3") == (True, LookupContext(2))
    assert ctx.source("2001:db8::1") == (True, LookupContext(2))


def test_ipv4_mapped_ipv6_source_is_read_as_ipv4() -> None:
    assert contexts().source("::ffff:10.1.2.3") == (True, LookupContext(2))


def test_allowed_network_without_tenant_is_global_only() -> None:
    assert contexts().source("192.0.2.7") == (True, GLOBAL_ONLY)


def test_unknown_and_garbage_sources_are_not_admitted() -> None:
    ctx = contexts()
    assert ctx.source("198.51.100.1") == (False, GLOBAL_ONLY)
    assert ctx.source("not-an-ip") == (False, GLOBAL_ONLY)


def test_region_follows_the_tenant() -> None:
    ctx = contexts()
    assert ctx.region_of(LookupContext(2)) == "US"
    assert ctx.region_of(GLOBAL_ONLY) is None


def test_snapshot_form_round_trips() -> None:
    again = Contexts.from_json(json.loads(json.dumps(contexts().to_json())), ["192.0.2.0/24"])
    assert again.called_context("+492216698701") == LookupContext(1, 10, 100)
    assert again.source("10.1.2.3") == (True, LookupContext(2))
