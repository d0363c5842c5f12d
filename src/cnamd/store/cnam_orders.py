"""IntelePeer Atmosphere-style CNAM orders (seed 002) and the sessions its clients log in for.

An order adds (or changes) or removes the CNAM of some of a tenant's numbers.
It is answered at once with its id and worked off later, a batch at a time,
by whichever daemon takes it first (``FOR UPDATE SKIP LOCKED``). Each item's
status is the truth: an item becomes PROVISIONED in the same transaction that
changes its number, so a daemon killed mid-order leaves every item either done
or not, and the next daemon resumes with the rest; no number is done twice.

Publishing follows the phone-number API's rule (store/phone_numbers.py): the
name becomes the number's ``caller_id_name`` and its global entry, pending
when ``directory.require_approval`` is set, and a key another holder publishes
is left alone. Removing clears both.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from cnamd.access import Grant, Principal
from cnamd.errors import Conflict, InvalidRequest, NotFound, Unauthorized
from cnamd.model import Role
from cnamd.names import validate_name
from cnamd.store import apikeys
from cnamd.store.phone_numbers import TenantRef, directory_key, publish_names

__all__ = [
    "SESSION_LIFETIME",
    "Order",
    "OrderSpec",
    "check_order",
    "create_order",
    "create_session",
    "get_order",
    "process_next",
    "session_principal",
]

SESSION_LIFETIME = datetime.timedelta(hours=24)
#: pg_advisory_xact_lock(int, int) key space: (this, tenant id)
ACTIVE_ORDER_LOCK = 721031537


def _required(name: str) -> InvalidRequest:
    return InvalidRequest(f"The '{name}' parameter is required.", field=name)


def _typed(name: str, kind: str) -> InvalidRequest:
    return InvalidRequest(f"The '{name}' parameter must be formatted as a(n) {kind}.", field=name)


def _not_string(name: str, value: object) -> InvalidRequest:
    """The seed's sentence for a string parameter given anything else: an array or
    object is not even a scalar."""
    if isinstance(value, (list, dict)):
        return InvalidRequest(f"The '{name}' parameter must be scalar.", field=name)
    return _typed(name, "string")


@dataclass(frozen=True, slots=True)
class OrderSpec:
    """A checked order: the E.164 numbers in the order sent, the name (None: remove)."""

    numbers: tuple[str, ...]
    cnam: str | None
    email: str | None = None
    notes: str | None = None
    reference_id: str | None = None


def check_order(body: Any, *, adding: bool, max_length: int, max_numbers: int) -> OrderSpec:
    """The body of ``POST``/``DELETE /_rest/v3/my/did/cnam``, refused with the seed's words."""
    if not isinstance(body, dict):
        raise _required("numbers")
    raw = body.get("numbers")
    if raw is None:
        raise _required("numbers")
    if not isinstance(raw, list):
        raise _typed("numbers", "array")
    if not raw:
        raise _required("numbers")
    if len(raw) > max_numbers:
        raise InvalidRequest(
            f"The 'numbers' parameter must contain at most {max_numbers} numbers.",
            field="numbers",
        )
    numbers: list[str] = []
    for item in raw:
        if not isinstance(item, dict):
            raise _typed("numbers", "array")
        for name in ("countryCode", "number"):
            if name not in item or item[name] is None:
                raise InvalidRequest(
                    f"The '{name}' parameter is required for each Number object.", field=name
                )
            if not isinstance(item[name], str):
                raise _not_string(name, item[name])
        if item["countryCode"] != "1":
            raise InvalidRequest(
                "The 'countryCode' parameter must match one of the following values: 1",
                field="countryCode",
            )
        digits = item["number"]
        if len(digits) != 10 or not digits.isascii() or not digits.isdigit():
            raise InvalidRequest(
                "The 'number' parameter must be 10 numeric digits.", field="number"
            )
        numbers.append("+1" + digits)
    if len(set(numbers)) != len(numbers):
        raise InvalidRequest(
            "The 'numbers' parameter must contain unique numbers.", field="numbers"
        )
    cnam = None
    if adding:
        given = body.get("cnam")
        if given is None or given == "":
            raise _required("cnam")
        if not isinstance(given, str):
            raise _not_string("cnam", given)
        cnam = validate_name(given, max_length=max_length, field="cnam")
    extras: dict[str, str | None] = {}
    for name, keys in (("email", ("email", "Email")), ("notes", ("notes", "Notes"))):
        extras[name] = _optional_string(body, keys)
    extras["reference_id"] = _optional_string(body, ("referenceID",))
    if extras["reference_id"] is not None and not extras["reference_id"].strip():
        raise InvalidRequest(
            "The 'referenceID' parameter must be a non-empty string.", field="referenceID"
        )
    return OrderSpec(tuple(numbers), cnam, **extras)


def _optional_string(body: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        if key in body and body[key] is not None:
            if not isinstance(body[key], str):
                raise _not_string(key, body[key])
            return str(body[key])[:1000]
    return None


# --- sessions: POST /_rest/v4/authenticate ---


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create_session(conn: asyncpg.Connection, key_id: str, secret: str) -> str | None:
    """A token valid 24 hours for a live key whose secret matches, else None."""
    if await apikeys.authenticate(conn, key_id, secret) is None:
        return None
    token = secrets.token_urlsafe(32)  # no '.': never mistaken for KEYID.SECRET
    async with conn.transaction():
        await conn.execute("DELETE FROM api_sessions WHERE expires_at < now() - interval '7 days'")
        await conn.execute(
            "INSERT INTO api_sessions (token_hash, key_id, expires_at) VALUES ($1, $2, $3)",
            _token_hash(token),
            key_id,
            datetime.datetime.now(datetime.UTC) + SESSION_LIFETIME,
        )
    return token


async def session_principal(conn: asyncpg.Connection, token: str) -> Principal:
    """The principal of a session token; Unauthorized ``session-expired`` once it expired."""
    row = await conn.fetchrow(
        "SELECT k.key_id, k.role, k.tenant_id, k.user_id, s.expires_at > now() AS fresh,"
        " k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now()) AS live"
        " FROM api_sessions s JOIN api_keys k ON k.key_id = s.key_id WHERE s.token_hash = $1",
        _token_hash(token),
    )
    if row is None or not row["live"]:
        raise Unauthorized("unknown token", field="authorization")
    if not row["fresh"]:
        raise Unauthorized("the session expired", field="authorization", status="session-expired")
    grants = await conn.fetch(
        "SELECT tenant_id, usergroup_id FROM api_key_grants WHERE key_id = $1", row["key_id"]
    )
    return Principal(
        row["key_id"],
        Role(row["role"]),
        row["tenant_id"],
        row["user_id"],
        frozenset(Grant(g["tenant_id"], g["usergroup_id"]) for g in grants),
    )


# --- orders ---


@dataclass(frozen=True, slots=True)
class Order:
    """An order as ``GET /_rest/v3/my/orders/{orderID}`` shows it."""

    id: int
    batches: list[tuple[int, list[tuple[str, str]]]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "orderID": self.id,
            "batches": [
                {
                    "batchID": batch_id,
                    "numbers": [
                        {
                            "countryCode": "1",
                            "number": e164[2:],
                            "e164": e164,
                            "cnam": status,
                        }
                        for e164, status in numbers
                    ],
                }
                for batch_id, numbers in self.batches
            ],
        }


def _listed(numbers: list[str], limit: int = 10) -> str:
    shown = ", ".join(n[2:] for n in numbers[:limit])
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")


async def create_order(
    conn: asyncpg.Connection, tenant: TenantRef, spec: OrderSpec, batch_size: int
) -> int:
    """Check the numbers against the account and queue the order; its id.

    One tenant's orders are created one at a time (an advisory lock), so two
    orders racing for a number cannot both pass the active-order check.
    """
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1::int, ($2::bigint % 2147483647)::int)",
            ACTIVE_ORDER_LOCK,
            tenant.id,
        )
        rows = await conn.fetch(
            "SELECT n.e164, p.uuid, e.id IS NOT NULL AS served"
            " FROM unnest($2::text[]) AS n(e164)"
            " LEFT JOIN phone_numbers p ON p.tenant_id = $1 AND p.number = n.e164"
            " LEFT JOIN cnam_entries e ON e.phone_number_uuid = p.uuid",
            tenant.id,
            list(spec.numbers),
        )
        if any(r["uuid"] is None for r in rows):
            raise Conflict("One or more numbers are not assigned to this account.", field="numbers")
        pending = await conn.fetch(
            "SELECT i.order_id, i.e164, o.action FROM cnam_order_items i"
            " JOIN cnam_orders o ON o.id = i.order_id AND o.tenant_id = $1"
            " WHERE i.e164 = ANY($2::text[]) AND i.status <> 'PROVISIONED'"
            " ORDER BY i.order_id, i.e164",
            tenant.id,
            list(spec.numbers),
        )
        disconnecting = [r["e164"] for r in pending if r["action"] == "remove"]
        if spec.cnam is None and disconnecting:
            raise Conflict(
                f"One or more numbers are already pending disconnect: {_listed(disconnecting)}",
                field="numbers",
            )
        if pending:
            raise Conflict(
                f"One or more numbers are part of an active order: {pending[0]['order_id']}",
                field="numbers",
            )
        if spec.cnam is None:
            bare = [r["e164"] for r in rows if not r["served"]]
            if bare:
                raise Conflict(
                    f"One or more numbers do not have service: {_listed(bare)}", field="numbers"
                )
        order_id: int = await conn.fetchval(
            "INSERT INTO cnam_orders (tenant_id, action, cnam, email, notes, reference_id)"
            " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            tenant.id,
            "remove" if spec.cnam is None else "add",
            spec.cnam,
            spec.email,
            spec.notes,
            spec.reference_id,
        )
        batches = -(-len(rows) // batch_size)
        ids = [
            r[0]
            for r in await conn.fetch(
                "SELECT nextval('cnam_order_batch_ids') FROM generate_series(1, $1)", batches
            )
        ]
        by_number = {r["e164"]: r["uuid"] for r in rows}
        await conn.execute(
            "INSERT INTO cnam_order_items (order_id, batch_id, e164, phone_number_uuid)"
            " SELECT $1, b, n, u FROM unnest($2::bigint[], $3::text[], $4::uuid[]) AS x(b, n, u)",
            order_id,
            [ids[i // batch_size] for i in range(len(spec.numbers))],
            list(spec.numbers),
            [by_number[n] for n in spec.numbers],
        )
        await conn.execute("SELECT pg_notify('cnamd_orders', $1)", str(order_id))
    return order_id


async def get_order(conn: asyncpg.Connection, tenant: TenantRef, text: str) -> Order:
    """Order ``text`` of ``tenant`` with every item's status; NotFound otherwise."""
    order_id = int(text) if text.isascii() and text.isdigit() and len(text) < 19 else None
    found = order_id is not None and await conn.fetchval(
        "SELECT 1 FROM cnam_orders WHERE id = $1 AND tenant_id = $2", order_id, tenant.id
    )
    if not found or order_id is None:
        raise NotFound(f"no order {text[:40]!r}", field="orderID")
    rows = await conn.fetch(
        "SELECT batch_id, e164, status FROM cnam_order_items WHERE order_id = $1"
        ' ORDER BY batch_id, e164 COLLATE "C"',
        order_id,
    )
    batches: dict[int, list[tuple[str, str]]] = {}
    for r in rows:
        batches.setdefault(r["batch_id"], []).append((r["e164"], r["status"]))
    return Order(order_id, list(batches.items()))


# --- the worker's step ---

_TAKE = """
SELECT id, tenant_id, action, cnam FROM cnam_orders
 WHERE completed_at IS NULL AND ($1::bigint IS NULL OR id = $1)
 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
"""


async def process_next(
    conn: asyncpg.Connection, *, require_approval: bool, only: int | None = None
) -> bool:
    """Work one batch of the oldest open order nobody else holds; False when none is left.

    First the batch is marked PENDING (committed, so clients see work begin);
    then, holding the order's row lock, its PENDING items are applied and
    marked PROVISIONED in one transaction. A daemon that dies between the two
    leaves PENDING items that the next one applies.
    """
    async with conn.transaction():
        order = await conn.fetchrow(_TAKE, only)
        if order is None:
            return False
        batch = await conn.fetchval(
            "SELECT batch_id FROM cnam_order_items WHERE order_id = $1"
            " AND status <> 'PROVISIONED' ORDER BY batch_id LIMIT 1",
            order["id"],
        )
        if batch is None:
            await conn.execute(
                "UPDATE cnam_orders SET completed_at = now() WHERE id = $1", order["id"]
            )
            return True
        await conn.execute(
            "UPDATE cnam_order_items SET status = 'PENDING'"
            " WHERE order_id = $1 AND batch_id = $2 AND status = 'QUEUED'",
            order["id"],
            batch,
        )
    async with conn.transaction():
        if await conn.fetchrow(_TAKE, order["id"]) is None:
            return True  # another daemon holds it now; it will do this batch
        items = await conn.fetch(
            "SELECT e164, phone_number_uuid FROM cnam_order_items"
            " WHERE order_id = $1 AND batch_id = $2 AND status = 'PENDING'",
            order["id"],
            batch,
        )
        uuids = [r["phone_number_uuid"] for r in items if r["phone_number_uuid"] is not None]
        if order["action"] == "remove":
            await conn.execute(
                "DELETE FROM cnam_entries WHERE phone_number_uuid = ANY($1::uuid[])", uuids
            )
            await conn.execute(
                "UPDATE phone_numbers SET caller_id_name = NULL WHERE uuid = ANY($1::uuid[])",
                uuids,
            )
        else:
            await _publish(conn, items, order["cnam"], require_approval)
        await conn.execute(
            "UPDATE cnam_order_items SET status = 'PROVISIONED', processed_at = now()"
            " WHERE order_id = $1 AND batch_id = $2 AND status = 'PENDING'",
            order["id"],
            batch,
        )
    return True


async def _publish(
    conn: asyncpg.Connection, items: list[asyncpg.Record], name: str, require_approval: bool
) -> None:
    """Set the name on the batch's numbers and publish it, as the phone-number API does."""
    uuids = [r["phone_number_uuid"] for r in items if r["phone_number_uuid"] is not None]
    await conn.execute(
        "UPDATE phone_numbers SET caller_id_name = $2 WHERE uuid = ANY($1::uuid[])"
        " AND caller_id_name IS DISTINCT FROM $2",
        uuids,
        name,
    )
    keyed = [
        (r["phone_number_uuid"], key)
        for r in items
        if r["phone_number_uuid"] is not None and (key := directory_key(r["e164"])) is not None
    ]
    await publish_names(conn, keyed, name, "pending" if require_approval else "approved")
