"""A tenant's CNAM records (seed 001, Flowroute's ``/v2/cnams``), their approval, and the
numbers they are associated with.

A record is a name a tenant asks to show; an operator approves or rejects
it. Associating a record with one of the tenant's numbers makes the record's
value that number's ``caller_id_name``, published through the number's one
global-directory entry (version 3's ``phone_number_uuid``), whose approval
mirrors the record's: pending until approved, withdrawn when rejected or
deleted. So the phone-number API (seed 003) always shows what the number
publishes, and the two never compete for the key:

* writing another ``caller_id_name`` to the number (phone-number API, an
  Atmosphere order) ends the association (a trigger, schema version 4);
* a key another holder already publishes (``held-elsewhere``) is never
  overwritten: the association is refused with Conflict.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import asyncpg

from cnamd.errors import Conflict, InvalidName, InvalidRequest, NotFound
from cnamd.names import validate_name
from cnamd.store.phone_numbers import TenantRef, directory_key, publish_names

__all__ = [
    "FLOWROUTE_MAX_LENGTH",
    "CnamRecord",
    "DigitFilter",
    "NumberRow",
    "approve",
    "associate",
    "check_value",
    "create_record",
    "delete_record",
    "dissociate",
    "get_number",
    "get_record",
    "list_numbers",
    "list_records",
    "reject",
]

#: Flowroute's own limit, applied on top of ``names.max_length``
FLOWROUTE_MAX_LENGTH = 15


@dataclass(frozen=True, slots=True)
class CnamRecord:
    """One record as stored; ``tenant`` is the owner's slug (operators see many)."""

    id: int
    tenant: str
    value: str
    approval: str
    rejection_reason: str | None
    created_at: datetime.datetime
    approved_at: datetime.datetime | None
    numbers: int = 0

    @property
    def is_approved(self) -> bool:
        return self.approval == "approved"


@dataclass(frozen=True, slots=True)
class NumberRow:
    """One of a tenant's E.164 numbers as ``/v2/numbers`` lists it."""

    number: str
    caller_id_name: str | None
    cnam_record_id: int | None

    @property
    def digits(self) -> str:
        """Flowroute names a number by its digits (``12065551234``)."""
        return self.number.removeprefix("+")


def check_value(raw: str, max_length: int) -> str:
    """Flowroute's rule on top of cnamd's: the alphabet and ``names.max_length``, at most
    15 characters, at least one letter, and not a phone number."""
    value = validate_name(raw, max_length=min(max_length, FLOWROUTE_MAX_LENGTH), field="value")
    if not any(c.isalpha() for c in value):
        # a phone number written any way ("(212) 555-0001") has no letter either
        raise InvalidName(
            f"{value!r} has no letter: a CNAM needs at least one and may not be a phone number",
            field="value",
        )
    return value


_RECORD = """
SELECT r.id, t.slug AS tenant, r.value, r.approval, r.rejection_reason, r.created_at,
       r.approved_at,
       (SELECT count(*) FROM phone_numbers p WHERE p.cnam_record_id = r.id) AS numbers
  FROM cnam_records r JOIN tenants t ON t.id = r.tenant_id
"""


def _record(row: asyncpg.Record) -> CnamRecord:
    return CnamRecord(
        row["id"],
        row["tenant"],
        row["value"],
        row["approval"],
        row["rejection_reason"],
        row["created_at"],
        row["approved_at"],
        row["numbers"],
    )


async def create_record(conn: asyncpg.Connection, tenant: TenantRef, value: str) -> CnamRecord:
    """A new record of ``tenant``, pending approval (``value`` already checked)."""
    record_id = await conn.fetchval(
        "INSERT INTO cnam_records (tenant_id, value) VALUES ($1, $2) RETURNING id",
        tenant.id,
        value,
    )
    return await get_record(conn, tenant, str(record_id))


def _record_id(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) < 19 else None


async def get_record(conn: asyncpg.Connection, tenant: TenantRef | None, text: str) -> CnamRecord:
    """Record ``text`` of ``tenant`` (None: any tenant's, for operators); else NotFound."""
    record_id = _record_id(text)
    row = None
    if record_id is not None:
        row = await conn.fetchrow(
            _RECORD + " WHERE r.id = $1 AND ($2::bigint IS NULL OR r.tenant_id = $2)",
            record_id,
            None if tenant is None else tenant.id,
        )
    if row is None:
        raise NotFound(f"no CNAM record {text[:40]!r}", field="id")
    return _record(row)


async def list_records(
    conn: asyncpg.Connection,
    tenant: TenantRef | None,
    *,
    approval: tuple[str, ...] | None,
    value: str | None,
    limit: int,
    offset: int,
) -> tuple[list[CnamRecord], bool]:
    """A page of records in id order and whether another page follows.

    ``approval`` None lists every state; ``value`` is a case-insensitive substring.
    """
    rows = await conn.fetch(
        _RECORD + " WHERE ($1::bigint IS NULL OR r.tenant_id = $1)"
        " AND ($2::text[] IS NULL OR r.approval = ANY($2::text[]))"
        " AND ($3::text IS NULL OR strpos(lower(r.value), lower($3)) > 0)"
        " ORDER BY r.id LIMIT $4 OFFSET $5",
        None if tenant is None else tenant.id,
        None if approval is None else list(approval),
        value,
        limit + 1,
        offset,
    )
    return [_record(r) for r in rows[:limit]], len(rows) > limit


async def delete_record(conn: asyncpg.Connection, tenant: TenantRef, text: str) -> None:
    """Delete a record; its numbers stop publishing its value, in one transaction."""
    async with conn.transaction():
        record = await get_record(conn, tenant, text)
        await _withdraw(conn, record.id)
        await conn.execute("DELETE FROM cnam_records WHERE id = $1", record.id)


async def _withdraw(conn: asyncpg.Connection, record_id: int) -> None:
    """Numbers associated with ``record_id`` lose its name and their global entry."""
    await conn.execute(
        "DELETE FROM cnam_entries e USING phone_numbers p"
        " WHERE p.cnam_record_id = $1 AND e.phone_number_uuid = p.uuid",
        record_id,
    )
    await conn.execute(
        "UPDATE phone_numbers SET caller_id_name = NULL, cnam_record_id = NULL"
        " WHERE cnam_record_id = $1",
        record_id,
    )


async def approve(conn: asyncpg.Connection, text: str) -> CnamRecord:
    """Approve a record; the numbers associated with it are served its name at once."""
    async with conn.transaction():
        record = await get_record(conn, None, text)
        await conn.execute(
            "UPDATE cnam_records SET approval = 'approved', approved_at = now(),"
            " rejection_reason = NULL WHERE id = $1 AND approval <> 'approved'",
            record.id,
        )
        await conn.execute(
            "UPDATE cnam_entries e SET approval = 'approved', approved_at = now(),"
            " rejection_reason = NULL, updated_at = now() FROM phone_numbers p"
            " WHERE p.cnam_record_id = $1 AND e.phone_number_uuid = p.uuid"
            " AND e.approval <> 'approved'",
            record.id,
        )
        return await get_record(conn, None, text)


async def reject(conn: asyncpg.Connection, text: str, reason: str) -> CnamRecord:
    """Reject a record with ``reason``; a name it served is withdrawn from every cache."""
    reason = reason.strip()
    if not reason:
        raise InvalidRequest("a rejection needs a reason", field="reason")
    async with conn.transaction():
        record = await get_record(conn, None, text)
        await conn.execute(
            "UPDATE cnam_records SET approval = 'rejected', approved_at = NULL,"
            " rejection_reason = $2 WHERE id = $1",
            record.id,
            reason[:500],
        )
        await conn.execute(
            "UPDATE cnam_entries e SET approval = 'rejected', approved_at = NULL,"
            " rejection_reason = $2, updated_at = now() FROM phone_numbers p"
            " WHERE p.cnam_record_id = $1 AND e.phone_number_uuid = p.uuid",
            record.id,
            reason[:500],
        )
        return await get_record(conn, None, text)


# --- numbers: /v2/numbers and the cnam relationship ---


@dataclass(frozen=True, slots=True)
class DigitFilter:
    """Flowroute's ``/v2/numbers`` filters on a number's digits (its id): each is
    a digit string or None."""

    starts_with: str | None = None
    ends_with: str | None = None
    contains: str | None = None


# The name a number shows is the one its global entry serves (approved), and
# its relationship the record it is associated with unless that was rejected:
# after a rejection the listing says what the dip says, no name.
_NUMBERS = """
SELECT p.number, e.name AS caller_id_name, r.id AS cnam_record_id
  FROM phone_numbers p
  LEFT JOIN cnam_entries e ON e.phone_number_uuid = p.uuid AND e.approval = 'approved'
  LEFT JOIN cnam_records r ON r.id = p.cnam_record_id AND r.approval <> 'rejected'
 WHERE p.tenant_id = $1 AND p.number LIKE '+%'
"""


def _number_row(row: asyncpg.Record) -> NumberRow:
    return NumberRow(row["number"], row["caller_id_name"], row["cnam_record_id"])


async def list_numbers(
    conn: asyncpg.Connection, tenant: TenantRef, digits: DigitFilter, limit: int, offset: int
) -> tuple[list[NumberRow], bool]:
    """The tenant's E.164 numbers whose digits match ``digits``, in number order."""
    rows = await conn.fetch(
        _NUMBERS + " AND ($2::text IS NULL OR starts_with(p.number, '+' || $2))"
        " AND ($3::text IS NULL OR right(p.number, length($3)) = $3)"
        " AND ($4::text IS NULL OR strpos(p.number, $4) > 0)"
        ' ORDER BY p.number COLLATE "C" LIMIT $5 OFFSET $6',
        tenant.id,
        digits.starts_with,
        digits.ends_with,
        digits.contains,
        limit + 1,
        offset,
    )
    found = [_number_row(r) for r in rows]
    return found[:limit], len(found) > limit


async def get_number(conn: asyncpg.Connection, tenant: TenantRef, digits: str) -> NumberRow:
    """The tenant's number whose digits are ``digits`` (Flowroute's id); else NotFound."""
    row = None
    if digits.isascii() and digits.isdigit():
        row = await conn.fetchrow(_NUMBERS + " AND p.number = $2", tenant.id, "+" + digits)
    if row is None:
        raise NotFound(f"no phone number {digits[:40]!r} on this account", field="number")
    return _number_row(row)


async def _number(conn: asyncpg.Connection, tenant: TenantRef, digits: str) -> asyncpg.Record:
    row = None
    if digits.isdigit():
        row = await conn.fetchrow(
            "SELECT uuid, number, cnam_record_id FROM phone_numbers"
            " WHERE tenant_id = $1 AND number = $2 FOR UPDATE",
            tenant.id,
            "+" + digits,
        )
    if row is None:
        raise NotFound(f"no phone number {digits[:40]!r} on this account", field="number")
    return row


async def associate(
    conn: asyncpg.Connection, tenant: TenantRef, digits: str, record_text: str
) -> CnamRecord:
    """Associate record ``record_text`` with number ``digits``: the number's
    ``caller_id_name`` becomes the value, published as the record's approval says."""
    async with conn.transaction():
        number = await _number(conn, tenant, digits)
        record = await get_record(conn, tenant, record_text)
        if record.approval == "rejected":
            raise InvalidRequest(
                f"CNAM record {record.id} was rejected: {record.rejection_reason}", field="cnam"
            )
        key = directory_key(number["number"])
        if key is None:
            raise InvalidRequest(
                f"{number['number']} is not a possible E.164 number; only those publish a name",
                field="number",
            )
        published = await publish_names(
            conn, [(number["uuid"], key)], record.value, record.approval, restate=True
        )
        if not published:
            raise Conflict(
                f"the global directory already holds a name for {key} from another holder",
                field="number",
            )
        await conn.execute(
            "UPDATE phone_numbers SET caller_id_name = $2, cnam_record_id = $3 WHERE uuid = $1",
            number["uuid"],
            record.value,
            record.id,
        )
        return await get_record(conn, tenant, record_text)


async def dissociate(conn: asyncpg.Connection, tenant: TenantRef, digits: str) -> int | None:
    """Remove the number's CNAM: its ``caller_id_name`` and published name go.
    Returns the id of the record it was associated with (None: none)."""
    async with conn.transaction():
        number = await _number(conn, tenant, digits)
        await conn.execute("DELETE FROM cnam_entries WHERE phone_number_uuid = $1", number["uuid"])
        await conn.execute(
            "UPDATE phone_numbers SET caller_id_name = NULL, cnam_record_id = NULL WHERE uuid = $1",
            number["uuid"],
        )
        record_id: int | None = number["cnam_record_id"]
        return record_id
