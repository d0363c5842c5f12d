"""store/phone_numbers.py: the pure rules, and ranges racing other writers on a real PostgreSQL."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from cnamd.errors import InvalidNumber, InvalidRequest
from cnamd.store import phone_numbers
from cnamd.store.phone_numbers import NumberRange, TenantRef, number_range, publication


def test_a_range_is_a_prefix_and_integers_padded_to_the_start() -> None:
    assert number_range("+18001234560", "+18001234569", max_span=10) == NumberRange(
        "+", 18001234560, 18001234569, 11
    )
    assert number_range("0098", "0102", max_span=10) == NumberRange("", 98, 102, 4)


@pytest.mark.parametrize(
    ("start", "end", "field", "words"),
    [
        ("+1800", "+1799", "end_number", "before start_number"),
        ("+1800", "1801", "end_number", "both have a leading '+'"),
        ("+1800", "+1811", "end_number", "spans 12 numbers; the limit is 10 (ranges.max_span)"),
        ("1x", "12", "start_number", "not a digit-only phone number"),
    ],
)
def test_bad_ranges_name_the_field_and_why(start: str, end: str, field: str, words: str) -> None:
    with pytest.raises((InvalidRequest, InvalidNumber)) as caught:
        number_range(start, end, max_span=10)
    assert caught.value.field == field and words in caught.value.reason


def test_the_directory_key_is_the_e164_form_of_plus_numbers_only() -> None:
    assert phone_numbers.directory_key("+15555550100") == "+15555550100"
    assert phone_numbers.directory_key("+4902216698700") == "+492216698700"  # trunk 0 dropped
    for number in ("1111", "5555550100", "+1414", "+999123"):
        assert phone_numbers.directory_key(number) is None


def test_publication_says_why_in_order_of_what_to_fix_first() -> None:
    def status(
        number: str, name: str | None, approval: str | None = None, held_elsewhere: bool = False
    ) -> str:
        found = publication(
            number,
            name,
            approval=approval,
            rejection_reason=None,
            held_elsewhere=held_elsewhere,
            max_length=15,
        )
        return found.status

    assert status("+15555550100", "ACME", approval="approved") == "published"
    assert status("+15555550100", "ACME", approval="pending") == "pending-approval"
    assert status("+15555550100", "ACME", approval="rejected") == "rejected"
    assert status("1111", None) == "no-name"
    assert status("1111", "\u00e9") == "not-e164"
    assert status("+15555550100", "\u00e9", held_elsewhere=True) == "invalid-name"
    assert status("+15555550100", "ACME", held_elsewhere=True) == "held-elsewhere"
    assert status("+15555550100", "ACME") == "unpublished"
    assert publication(
        "+15555550100",
        "ACME",
        approval="approved",
        rejection_reason=None,
        held_elsewhere=False,
        max_length=15,
    ).to_json() == {"published": True, "status": "published", "reason": None}


@pytest.fixture
async def tenant(conn: asyncpg.Connection) -> TenantRef:
    row = await conn.fetchrow(
        "INSERT INTO tenants (slug, name) VALUES ('t', 'T') RETURNING id, uuid, slug"
    )
    return TenantRef(row["id"], str(row["uuid"]), row["slug"])


async def test_a_range_skips_a_number_another_transaction_inserts_meanwhile(
    conn: asyncpg.Connection, db_url: str, tenant: TenantRef
) -> None:
    """The fast insert waits on the other writer's uncommitted number, trips the
    unique index when it commits, and the retry skips that number."""
    other = await asyncpg.connect(db_url)
    try:
        writer = other.transaction()
        await writer.start()
        await other.execute(
            "INSERT INTO phone_numbers (tenant_id, number) VALUES ($1, '+18005550105')", tenant.id
        )
        span = number_range("+18005550100", "+18005550109", max_span=10)
        ranged = asyncio.create_task(phone_numbers.create_range(conn, tenant, span))
        await asyncio.sleep(0.3)
        assert not ranged.done(), "the range should wait for the uncommitted number"
        await writer.commit()
        result = await asyncio.wait_for(ranged, 10)
    finally:
        await other.close()
    assert len(result.created) == 9
    numbers = await conn.fetch(
        "SELECT number FROM phone_numbers WHERE tenant_id = $1 ORDER BY number", tenant.id
    )
    assert [r[0] for r in numbers] == [f"+1800555010{i}" for i in range(10)]


async def test_a_ranges_uuids_are_version_4_and_distinct(
    conn: asyncpg.Connection, tenant: TenantRef
) -> None:
    first = await phone_numbers.create_range(
        conn, tenant, number_range("1000", "1999", max_span=1000)
    )
    second = await phone_numbers.create_range(
        conn, tenant, number_range("2000", "2999", max_span=1000)
    )
    uuids = first.created + second.created
    assert len(set(uuids)) == 2000
    assert {u[14] for u in uuids} == {"4"} and {u[19] for u in uuids} <= set("89ab")
