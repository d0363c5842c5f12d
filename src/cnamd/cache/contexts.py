"""Who is asking: maps a request's tenant, user, called number or source address
to the scopes its lookup searches. Pure; rebuilt whole when a context table changes.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cnamd.access import Grant, Principal, hash_secret
from cnamd.model import GLOBAL_ONLY, ContextRows, LookupContext, Role

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_SOURCE_MEMO_LIMIT = 10000


@dataclass(frozen=True, slots=True)
class TenantInfo:
    id: int
    slug: str
    region: str


class Contexts:
    """Lookup maps over tenants, users, phone numbers and SIP source networks."""

    def __init__(self, rows: ContextRows, allowed_networks: Iterable[str] = ()) -> None:
        self.rows = rows
        self.tenants = {t[0]: TenantInfo(*t) for t in rows.tenants}
        self.tenant_by_slug = {t.slug: t for t in self.tenants.values()}
        self.usergroup_by_slug = {(g[1], g[2]): g[0] for g in rows.usergroups}
        self.user_by_slug = {(u[1], u[3]): (u[0], u[2]) for u in rows.users}
        users = {u[0]: (u[1], u[2]) for u in rows.users}
        self.user_by_id = {uid: LookupContext(t, g, uid) for uid, (t, g) in users.items()}
        self.by_number: dict[str, LookupContext] = {}
        for number, tenant_id, user_id in rows.numbers:
            group = users[user_id][1] if user_id in users else None
            ctx = LookupContext(tenant_id, group, user_id if user_id in users else None)
            self.by_number[number] = ctx
            if not number.startswith("+"):
                self.by_number.setdefault("+" + number, ctx)
        # most specific network first, so a tenant's /32 beats a shared /8
        self.networks: list[tuple[IPNetwork, int]] = sorted(
            ((ipaddress.ip_network(cidr, strict=False), tid) for cidr, tid in rows.networks),
            key=lambda item: -item[0].prefixlen,
        )
        self.allowed = [ipaddress.ip_network(n, strict=False) for n in allowed_networks]
        self._source_memo: dict[str, tuple[bool, LookupContext]] = {}
        self.keys: dict[str, tuple[bytes, Principal, float | None]] = {
            key_id: (
                bytes.fromhex(digest),
                Principal(
                    key_id,
                    Role(role),
                    tenant_id,
                    user_id,
                    frozenset(Grant(t, g) for t, g in grants),
                ),
                expires,
            )
            for key_id, digest, role, tenant_id, user_id, expires, grants in rows.keys
        }

    def tenant(self, slug: str) -> TenantInfo | None:
        return self.tenant_by_slug.get(slug)

    def user_context(self, tenant: TenantInfo, user_slug: str) -> LookupContext | None:
        """The user's scopes (user, their group, their tenant), or None if unknown."""
        found = self.user_by_slug.get((tenant.id, user_slug))
        if found is None:
            return None
        return LookupContext(tenant.id, found[1], found[0])

    def called_context(self, called: str) -> LookupContext | None:
        """The owner of the dialled number gives the context (DESIGN.md "Who asks")."""
        return self.by_number.get(called)

    def source(self, ip: str) -> tuple[bool, LookupContext]:
        """(admitted, the source network's tenant context) for an address; memoized, bounded.

        Called once per SIP request: the memo spares the address parse and the
        network scan (and the context allocation) for every repeat source.
        """
        memo = self._source_memo.get(ip)
        if memo is not None:
            return memo
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return (False, GLOBAL_ONLY)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        tenant_id = next((tid for net, tid in self.networks if addr in net), None)
        admitted = tenant_id is not None or any(addr in net for net in self.allowed)
        if len(self._source_memo) >= _SOURCE_MEMO_LIMIT:
            self._source_memo.clear()
        found = (admitted, GLOBAL_ONLY if tenant_id is None else LookupContext(tenant_id))
        self._source_memo[ip] = found
        return found

    def source_context(self, ip: str) -> LookupContext:
        return self.source(ip)[1]

    def region_of(self, ctx: LookupContext) -> str | None:
        info = self.tenants.get(ctx.tenant_id) if ctx.tenant_id is not None else None
        return info.region if info else None

    def authenticate(self, key_id: str, secret: str, now: float) -> Principal | None:
        """The principal of a live key whose secret matches, from memory: lookups
        never touch the database, and a revocation arrives as a context change."""
        key = self.keys.get(key_id)
        if key is None:
            hmac.compare_digest(hash_secret(secret), bytes(32))  # same work as a known key
            return None
        digest, principal, expires = key
        if not hmac.compare_digest(hash_secret(secret), digest):
            return None
        if expires is not None and expires <= now:
            return None
        return principal

    def to_json(self) -> dict[str, Any]:
        """Plain data for the snapshot's metadata, so a warm start knows who asks."""
        return self.rows.to_json()

    @classmethod
    def from_json(cls, data: dict[str, Any], allowed_networks: Iterable[str] = ()) -> Contexts:
        return cls(ContextRows.from_json(data), allowed_networks)
