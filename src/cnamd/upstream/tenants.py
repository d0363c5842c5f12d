"""The tenants' upstream policies as every process holds them: who turned upstream off,
and who asks some source with an account of its own. Read whole whenever the
change log says who asks changed (a ``contexts`` row), as the context map is."""

from __future__ import annotations

from dataclasses import dataclass

from cnamd.cache.upstream import UpstreamAnswers
from cnamd.store import upstream as store
from cnamd.store.upstream import Connection
from cnamd.upstream.account import Account


@dataclass(frozen=True, slots=True)
class TenantPolicies:
    """Tenants whose policy is 'off', and tenant id -> source -> its own account."""

    off: frozenset[int]
    accounts: dict[int, dict[str, Account]]

    def install(self, held: UpstreamAnswers) -> None:
        """Make these the policies lookups see (no await: atomic to them)."""
        held.off_tenants = self.off
        held.accounts = self.accounts


async def load(conn: Connection) -> TenantPolicies:
    """Every tenant's policy, as stored now."""
    off = await store.tenants_off(conn)
    accounts: dict[int, dict[str, Account]] = {}
    for tenant_id, source, stored in await store.tenant_accounts(conn):
        accounts.setdefault(tenant_id, {})[source] = Account.from_json(stored)
    return TenantPolicies(off, accounts)
