"""The tenant a request of a tenant-scoped vendor API acts on: the one its
``Wazo-Tenant`` header names, else the key's own.

The header is wazo-confd's (the Wazo family, http/phone_numbers.py); the
Flowroute and Atmosphere families take it too, as the way a key that reaches
several tenants picks one. The header's name, its messages and which tenant
a key may pick are the HTTP front's; the store only finds tenants
(``store.phone_numbers.find_tenant``, ``tenant_by_id``). A header naming a
tenant the key does not reach is refused exactly like one naming no tenant.
"""

from __future__ import annotations

import asyncpg

from cnamd.access import Principal, Target, Verb, reaches
from cnamd.errors import Forbidden, InvalidRequest
from cnamd.model import Role, Scope
from cnamd.store.phone_numbers import TenantRef, find_tenant, tenant_by_id

__all__ = ["TENANT_HEADER", "select_tenant"]

TENANT_HEADER = "Wazo-Tenant"


async def select_tenant(conn: asyncpg.Connection, who: Principal, header: str | None) -> TenantRef:
    """The tenant a request acts on: the ``Wazo-Tenant`` header's, else the key's own."""
    if header is not None and header.strip():
        wanted = header.strip()
        tenant = await find_tenant(conn, wanted)
        if tenant is None or not _reaches(who, tenant.id):
            raise Forbidden(
                f"{TENANT_HEADER} {wanted[:64]!r} is not a tenant this key reaches",
                field=TENANT_HEADER,
            )
        return tenant
    tenant = await tenant_by_id(conn, _own_tenant(who))
    if tenant is None:  # the key's tenant was deleted since it was read
        raise Forbidden("this key's tenant no longer exists", field=TENANT_HEADER)
    return tenant


def _reaches(who: Principal, tenant_id: int) -> bool:
    """A tenant's phone numbers are read by its user keys and by keys reaching it whole."""
    return reaches(who, Verb.READ, Target(Scope.ENTERPRISE, tenant_id))


def _own_tenant(who: Principal) -> int:
    if who.role is Role.USER and who.tenant_id is not None:
        return who.tenant_id
    whole = {g.tenant_id for g in who.grants if g.usergroup_id is None}
    if who.role is Role.PARTNER and len(whole) == 1:
        return next(iter(whole))
    if who.role is Role.PARTNER and not whole:
        raise Forbidden(
            "phone numbers belong to a whole tenant; this key reaches only usergroups",
            field=TENANT_HEADER,
        )
    raise InvalidRequest(
        f"this key reaches several tenants: name one in the {TENANT_HEADER} header"
        " (its uuid or slug)",
        field=TENANT_HEADER,
    )
