"""A tenant's phone numbers (seed 003, wazo-confd's ``/phone-numbers``) and the names they publish.

Numbers are stored as the seed validates them: a digit string with an
optional leading ``+`` (1-32 digits, the schema's CHECK), so extensions
(``1111``) and national numbers (``5555550100``) are kept exactly as sent.

Publishing: a number's ``caller_id_name`` is also a name in the global
directory, written in the same transaction as the number, when the number is
E.164 (``+`` and a possible number for its country, normalized as lookups
normalize) and the name passes the directory's name rule (alphabet,
``names.max_length``). It is a ``cnam_entries`` row of scope ``global`` keyed
by the E.164 form and linked by ``phone_number_uuid``, approved at once or
``pending`` when ``directory.require_approval`` is set (or, for a name from a
CNAM record, until the record is approved; the reason says which); a changed name is
approved afresh. A key already held in the global directory by another holder
(an operator's name, another tenant's number) is never overwritten. Deleting
the number deletes its name through the foreign key, in the same statement.

Every number says where its name stands as ``cnam`` (extra fields; the
seed's keep their meaning): ``{"published": bool, "status": word, "reason":
sentence or null}`` with status ``published``, ``pending-approval``,
``rejected``, ``no-name``, ``not-e164``, ``invalid-name``,
``held-elsewhere`` or ``unpublished`` (a number stored before publishing
existed, or whose name an operator removed: writing it again publishes it).

Access: user keys read their own tenant's numbers; operator and partner keys
manage the numbers of a tenant they reach whole. Which tenant a request acts
on (the key's own, or the one its vendor's tenant header names) is decided in
the HTTP front (http/tenant_header.py); here tenants are only found. Another
tenant's number uuid answers 404, like one that does not exist.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from cnamd.access import Duty, Principal, readable_tenants, require
from cnamd.errors import InvalidName, InvalidNumber, InvalidRequest, NotFound
from cnamd.names import validate_name
from cnamd.numbers import normalize_number, parse_number

__all__ = [
    "ORDER_COLUMNS",
    "ListQuery",
    "NumberRange",
    "NumberSpec",
    "PhoneNumber",
    "Publication",
    "PublishRules",
    "RangeResult",
    "TenantRef",
    "canonical_uuid",
    "check_caller_id_name",
    "check_number",
    "create_number",
    "create_range",
    "delete_number",
    "directory_key",
    "find_tenant",
    "get_main",
    "get_number",
    "list_numbers",
    "list_query",
    "listed_tenants",
    "number_range",
    "publication",
    "publish_names",
    "require_manager",
    "set_main",
    "tenant_by_id",
    "update_number",
]

#: the schema's CHECK: ``^\+?[0-9]{1,32}$``
MAX_DIGITS = 32
#: wazo-confd's schema: ``caller_id_name`` Length(min=1, max=256)
MAX_CALLER_ID_NAME = 256
_NUMBER = re.compile(r"\+?[0-9]+")

# --- values ---


@dataclass(frozen=True, slots=True)
class TenantRef:
    """The tenant whose numbers a request manages."""

    id: int
    uuid: str
    slug: str


@dataclass(frozen=True, slots=True)
class PublishRules:
    """What a name must pass to be published, and whether it then waits for approval."""

    max_length: int
    require_approval: bool


@dataclass(frozen=True, slots=True)
class Publication:
    """Where a number's name stands in the global directory (the ``cnam`` field)."""

    status: str
    reason: str | None = None

    @property
    def published(self) -> bool:
        return self.status == "published"

    def to_json(self) -> dict[str, object]:
        return {"published": self.published, "status": self.status, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    """A phone number as the API shows it: the seed's fields, then ``user_uuid`` and ``cnam``."""

    uuid: str
    tenant_uuid: str
    number: str
    caller_id_name: str | None
    main: bool
    shared: bool
    user_uuid: str | None
    cnam: Publication

    def to_json(self, href: str) -> dict[str, object]:
        return {
            "uuid": self.uuid,
            "tenant_uuid": self.tenant_uuid,
            "number": self.number,
            "caller_id_name": self.caller_id_name,
            "main": self.main,
            "shared": self.shared,
            "links": [{"rel": "phone_numbers", "href": href}],
            "user_uuid": self.user_uuid,
            "cnam": self.cnam.to_json(),
        }


@dataclass(frozen=True, slots=True)
class NumberSpec:
    """A checked POST or PUT body. ``given`` names the fields sent: a PUT changes
    only those (wazo-confd loads PUT bodies as partial), and ``None`` in a given
    ``caller_id_name`` or ``user_uuid`` clears it."""

    number: str | None = None
    caller_id_name: str | None = None
    shared: bool | None = None
    user_uuid: str | None = None
    given: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class NumberRange:
    """``start_number``..``end_number`` inclusive, as ``prefix`` + integers padded to ``width``."""

    prefix: str
    low: int
    high: int
    width: int

    @property
    def span(self) -> int:
        return self.high - self.low + 1


@dataclass(frozen=True, slots=True)
class RangeResult:
    """The uuids a range created, and those of every number of the range the tenant
    now holds (created or already there), both in number order."""

    created: list[str]
    numbers: list[str]


ORDER_COLUMNS = {
    "uuid": "p.uuid",
    "number": 'p.number COLLATE "C"',
    "caller_id_name": "lower(p.caller_id_name)",
    "main": "p.main",
    "shared": "p.shared",
    "user_uuid": "u.uuid",
}


@dataclass(frozen=True, slots=True)
class ListQuery:
    """wazo-confd's list parameters; ``limit`` None returns every match, as it does.

    ``number``, ``caller_id_name``, ``main`` and ``shared`` are exact filters,
    one per column of xivo-dao's phone-number search config; ``search`` is a
    case-insensitive substring of the number or the name.
    """

    search: str | None = None
    order: str = "number"
    direction: str = "asc"
    limit: int | None = None
    offset: int = 0
    main: bool | None = None
    shared: bool | None = None
    number: str | None = None
    caller_id_name: str | None = None


# --- validation: pure; the seed's rules, which the schema's CHECKs mirror ---


def check_number(value: str, *, field: str = "number") -> str:
    """``value`` if it is a digit string with an optional leading ``+`` (seed 003)."""
    if _NUMBER.fullmatch(value) is None:
        shown = repr(value[:40]) + ("..." if len(value) > 40 else "")
        what = "is empty" if not value else "is not a digit-only phone number"
        raise InvalidNumber(f"{shown} {what}: digits with an optional leading '+'", field=field)
    digits = len(value) - value.startswith("+")
    if digits > MAX_DIGITS:
        raise InvalidNumber(
            f"{value[:40]!r}... has {digits} digits; the limit is {MAX_DIGITS}", field=field
        )
    return value


def check_caller_id_name(value: str) -> str:
    """``value`` if it has 1 to 256 characters, as wazo-confd's schema allows.

    The directory's stricter rule does not refuse the number: a name that
    breaks it is stored and reported unpublished.
    """
    if not 1 <= len(value) <= MAX_CALLER_ID_NAME:
        raise InvalidName(
            f"caller_id_name has 1 to {MAX_CALLER_ID_NAME} characters, not {len(value)}",
            field="caller_id_name",
        )
    return value


def number_range(start: str, end: str, *, max_span: int) -> NumberRange:
    """The range ``start``..``end``: both ends alike (with or without ``+``), in order,
    and at most ``max_span`` numbers (``ranges.max_span``)."""
    check_number(start, field="start_number")
    check_number(end, field="end_number")
    prefix = "+" if start.startswith("+") else ""
    if end.startswith("+") != bool(prefix):
        raise InvalidRequest(
            f"{end!r} and start_number {start!r} must both have a leading '+' or both not",
            field="end_number",
        )
    digits = start.removeprefix("+")
    low, high = int(digits), int(end.removeprefix("+"))
    if high < low:
        raise InvalidRequest(f"{end!r} is before start_number {start!r}", field="end_number")
    found = NumberRange(prefix, low, high, len(digits))
    if found.span > max_span:
        raise InvalidRequest(
            f"range {start}..{end} spans {found.span} numbers; the limit is {max_span}"
            " (ranges.max_span)",
            field="end_number",
        )
    return found


def list_query(
    *,
    search: str | None,
    order: str | None,
    direction: str | None,
    limit: int | None,
    offset: int,
    main: bool | None,
    shared: bool | None,
    number: str | None = None,
    caller_id_name: str | None = None,
) -> ListQuery:
    order = order or "number"
    if order not in ORDER_COLUMNS:
        raise InvalidRequest(
            f"order must be one of {', '.join(ORDER_COLUMNS)}, not {order[:40]!r}", field="order"
        )
    direction = direction or "asc"
    if direction not in ("asc", "desc"):
        raise InvalidRequest(
            f"direction must be asc or desc, not {direction[:40]!r}", field="direction"
        )
    return ListQuery(
        search or None, order, direction, limit, offset, main, shared, number, caller_id_name
    )


# --- publishing: pure ---


def directory_key(number: str) -> str | None:
    """The global directory key ``number`` publishes under: its E.164 form, or
    None for an extension, a national number or an impossible one."""
    return parse_number(number) if number.startswith("+") else None


def publication(
    number: str,
    caller_id_name: str | None,
    *,
    approval: str | None,
    rejection_reason: str | None,
    held_elsewhere: bool,
    max_length: int,
    cnam_record: int | None = None,
) -> Publication:
    """Why ``number``'s name is, or is not, served by the global directory.

    ``approval`` is that of the number's own global entry (None: it has none);
    ``held_elsewhere`` says another holder has a name under its key;
    ``cnam_record`` is the CNAM record (seed 001) the name comes from, if any.
    """
    if approval == "approved":
        return Publication("published")
    if approval == "pending" and cnam_record is not None:
        return Publication(
            "pending-approval", f"CNAM record {cnam_record} awaits an operator's approval"
        )
    if approval == "pending":
        return Publication(
            "pending-approval", "waiting for an operator's approval (directory.require_approval)"
        )
    if approval == "rejected":
        return Publication(
            "rejected", f"an operator rejected it: {rejection_reason or 'no reason'}"
        )
    if caller_id_name is None:
        return Publication("no-name", "the number has no caller_id_name")
    if directory_key(number) is None:
        return Publication("not-e164", _not_e164(number))
    try:
        validate_name(caller_id_name, max_length=max_length, field="caller_id_name")
    except InvalidName as exc:
        return Publication("invalid-name", f"{exc.reason}; the global directory's name rule")
    if held_elsewhere:
        return Publication(
            "held-elsewhere",
            f"the global directory already holds a name for {directory_key(number)} from"
            " another holder; it is not overwritten",
        )
    return Publication(
        "unpublished", "not in the global directory; update the number to publish its name"
    )


def _not_e164(number: str) -> str:
    tail = "only E.164 numbers are published to the global directory"
    if not number.startswith("+"):
        return f"{number!r} has no '+' and country code; {tail}"
    try:
        normalize_number(number, None, field="number")
    except InvalidNumber as exc:
        return f"{exc.reason}; {tail}"
    return tail  # pragma: no cover - directory_key() and normalize_number() agree


def _published_name(caller_id_name: str | None, max_length: int) -> str | None:
    """The name the directory serves for ``caller_id_name``, None if it may not."""
    if caller_id_name is None:
        return None
    try:
        return validate_name(caller_id_name, max_length=max_length, field="caller_id_name")
    except InvalidName:
        return None


# --- access ---


def require_manager(who: Principal) -> None:
    """Writes need an operator key or a partner key (selection checked its reach)."""
    require(who, Duty.MANAGE_PHONE_NUMBERS)


def canonical_uuid(text: str) -> str | None:
    """``text`` as a lowercase hyphenated uuid, None if it is not one."""
    try:
        return str(uuidlib.UUID(text))
    except ValueError:
        return None


async def find_tenant(conn: asyncpg.Connection, wanted: str) -> TenantRef | None:
    """The tenant ``wanted`` names, by uuid or else by slug; None when none does."""
    by_uuid = canonical_uuid(wanted)
    row = await conn.fetchrow(
        "SELECT id, uuid, slug FROM tenants WHERE "
        + ("uuid = $1::uuid" if by_uuid else "slug = $1"),
        by_uuid or wanted,
    )
    return None if row is None else TenantRef(row["id"], str(row["uuid"]), row["slug"])


async def tenant_by_id(conn: asyncpg.Connection, tenant_id: int) -> TenantRef | None:
    """The tenant with this id; None when it was deleted."""
    row = await conn.fetchrow("SELECT id, uuid, slug FROM tenants WHERE id = $1", tenant_id)
    return None if row is None else TenantRef(row["id"], str(row["uuid"]), row["slug"])


def listed_tenants(who: Principal, selected: TenantRef | None) -> list[int] | None:
    """The tenants a ``recurse=true`` list covers: the selected one (cnamd has no
    sub-tenants), else every tenant the key reaches whole (None: all, an operator)."""
    if selected is not None:
        return [selected.id]
    return readable_tenants(who)


# --- reads ---

_SELECT = """
SELECT p.uuid, t.uuid AS tenant_uuid, p.number, p.caller_id_name, p.main, p.shared,
       u.uuid AS user_uuid, e.approval, e.rejection_reason, p.cnam_record_id
  FROM phone_numbers p
  JOIN tenants t ON t.id = p.tenant_id
  LEFT JOIN users u ON u.id = p.user_id
  LEFT JOIN cnam_entries e ON e.phone_number_uuid = p.uuid
"""

_FILTER = """
 WHERE ($1::bigint[] IS NULL OR p.tenant_id = ANY($1::bigint[]))
   AND ($2::text IS NULL OR strpos(lower(p.number), lower($2)) > 0
        OR strpos(lower(coalesce(p.caller_id_name, '')), lower($2)) > 0)
   AND ($3::boolean IS NULL OR p.main = $3)
   AND ($4::boolean IS NULL OR p.shared = $4)
   AND ($5::text IS NULL OR p.number = $5)
   AND ($6::text IS NULL OR p.caller_id_name = $6)
"""


async def _numbers(
    conn: asyncpg.Connection, rows: Sequence[asyncpg.Record], max_length: int
) -> list[PhoneNumber]:
    """Rows of _SELECT as PhoneNumbers; one query finds which unpublished keys others hold."""
    keys = {
        key
        for r in rows
        if r["approval"] is None
        and _published_name(r["caller_id_name"], max_length) is not None
        and (key := directory_key(r["number"])) is not None
    }
    held: set[str] = set()
    if keys:
        found = await conn.fetch(
            "SELECT key FROM cnam_entries WHERE scope = 'global' AND owner_id = 0"
            " AND key = ANY($1::text[])",
            sorted(keys),
        )
        held = {r["key"] for r in found}
    return [
        PhoneNumber(
            str(r["uuid"]),
            str(r["tenant_uuid"]),
            r["number"],
            r["caller_id_name"],
            r["main"],
            r["shared"],
            None if r["user_uuid"] is None else str(r["user_uuid"]),
            publication(
                r["number"],
                r["caller_id_name"],
                approval=r["approval"],
                rejection_reason=r["rejection_reason"],
                held_elsewhere=directory_key(r["number"]) in held,
                max_length=max_length,
                cnam_record=r["cnam_record_id"],
            ),
        )
        for r in rows
    ]


async def get_number(
    conn: asyncpg.Connection, tenant: TenantRef, number_uuid: str, max_length: int
) -> PhoneNumber:
    """Number ``number_uuid`` of ``tenant``; NotFound for a bad uuid or another tenant's."""
    canonical = canonical_uuid(number_uuid)
    row = None
    if canonical is not None:
        row = await conn.fetchrow(
            _SELECT + " WHERE p.tenant_id = $1 AND p.uuid = $2::uuid", tenant.id, canonical
        )
    if row is None:
        raise NotFound(f"no phone number {number_uuid[:64]!r}", field="uuid")
    return (await _numbers(conn, [row], max_length))[0]


async def get_main(conn: asyncpg.Connection, tenant: TenantRef, max_length: int) -> PhoneNumber:
    row = await conn.fetchrow(_SELECT + " WHERE p.tenant_id = $1 AND p.main", tenant.id)
    if row is None:
        raise NotFound(f"tenant {tenant.slug!r} has no main phone number", field="main")
    return (await _numbers(conn, [row], max_length))[0]


async def list_numbers(
    conn: asyncpg.Connection, tenants: Sequence[int] | None, query: ListQuery, max_length: int
) -> tuple[int, list[PhoneNumber]]:
    """(how many match, the page) of the numbers of ``tenants`` (None: every tenant's) from
    one snapshot; ties broken by uuid for stable pages."""
    column = ORDER_COLUMNS[query.order]
    direction = "DESC" if query.direction == "desc" else "ASC"
    ids = None if tenants is None else list(tenants)
    args = (ids, query.search, query.main, query.shared, query.number, query.caller_id_name)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        total: int = await conn.fetchval("SELECT count(*) FROM phone_numbers p" + _FILTER, *args)
        rows = await conn.fetch(
            _SELECT
            + _FILTER
            + f" ORDER BY {column} {direction} NULLS LAST, p.uuid LIMIT $7 OFFSET $8",
            *args,
            query.limit,
            query.offset,
        )
        return total, await _numbers(conn, rows, max_length)


# --- writes ---


async def _user_id(
    conn: asyncpg.Connection, tenant: TenantRef, user_uuid: str | None
) -> int | None:
    if user_uuid is None:
        return None
    canonical = canonical_uuid(user_uuid)
    found: int | None = None
    if canonical is not None:
        found = await conn.fetchval(
            "SELECT id FROM users WHERE tenant_id = $1 AND uuid = $2::uuid", tenant.id, canonical
        )
    if found is None:
        raise InvalidRequest(
            f"no user {user_uuid[:64]!r} in tenant {tenant.slug!r}", field="user_uuid"
        )
    return found


def _exists(number: str) -> InvalidRequest:
    """wazo-confd answers a duplicate number 400 ("Resource Error ... already exists")."""
    return InvalidRequest(
        f"phone number {number!r} exists already in this tenant", field="number", status="exists"
    )


# A key held by another holder is left alone: the conflict arm only updates
# the number's own entry. Unless $5 (restate), an unchanged name keeps its
# approval state.
_PUBLISH = """
INSERT INTO cnam_entries (scope, key, name, approval, approved_at, phone_number_uuid)
SELECT 'global', k, $3, $4::text, CASE WHEN $4::text = 'approved' THEN now() END, u
  FROM unnest($1::uuid[], $2::text[]) AS x(u, k)
ON CONFLICT (scope, owner_id, key) DO UPDATE
   SET name = EXCLUDED.name, approval = EXCLUDED.approval, approved_at = EXCLUDED.approved_at,
       rejection_reason = NULL, updated_at = now()
 WHERE cnam_entries.phone_number_uuid = EXCLUDED.phone_number_uuid
   AND ($5 OR cnam_entries.name <> EXCLUDED.name)
RETURNING phone_number_uuid
"""


async def publish_names(
    conn: asyncpg.Connection,
    numbers: Sequence[tuple[object, str]],
    name: str,
    approval: str,
    *,
    restate: bool = False,
) -> set[object]:
    """Publish ``name`` for each (number uuid, directory key): the one place the
    global directory takes a number's name (phone numbers, CNAM records, orders).

    A number's entry under another key is removed first (the number moved).
    ``restate`` writes ``approval`` even over an unchanged name. Returns the
    uuids whose entry was written; a number missing from it either held that
    name already or lost its key to another holder.
    """
    uuids = [u for u, _ in numbers]
    keys = [k for _, k in numbers]
    await conn.execute(
        "DELETE FROM cnam_entries e USING unnest($1::uuid[], $2::text[]) AS x(u, k)"
        " WHERE e.phone_number_uuid = x.u AND e.key <> x.k",
        uuids,
        keys,
    )
    rows = await conn.fetch(_PUBLISH, uuids, keys, name, approval, restate)
    return {r["phone_number_uuid"] for r in rows}


async def _publish(
    conn: asyncpg.Connection,
    number_uuid: str,
    number: str,
    caller_id_name: str | None,
    rules: PublishRules,
) -> None:
    """Make the number's global entry match it (call inside the number's transaction).

    An unchanged name keeps its approval; a changed one is approved afresh. A
    key held by another holder is left alone: the insert's conflict arm only
    updates this number's own entry.
    """
    key = directory_key(number)
    name = _published_name(caller_id_name, rules.max_length)
    if key is None or name is None:
        await conn.execute("DELETE FROM cnam_entries WHERE phone_number_uuid = $1", number_uuid)
        return
    approval = "pending" if rules.require_approval else "approved"
    await publish_names(conn, [(number_uuid, key)], name, approval)


async def create_number(
    conn: asyncpg.Connection, tenant: TenantRef, spec: NumberSpec, rules: PublishRules
) -> PhoneNumber:
    """Create a number and publish its name, in one transaction."""
    assert spec.number is not None, "a POST body always has a number"
    async with conn.transaction():
        user_id = await _user_id(conn, tenant, spec.user_uuid)
        created = await conn.fetchval(
            "INSERT INTO phone_numbers (tenant_id, user_id, number, caller_id_name, shared)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, number) DO NOTHING"
            " RETURNING uuid",
            tenant.id,
            user_id,
            spec.number,
            spec.caller_id_name,
            bool(spec.shared),
        )
        if created is None:
            raise _exists(spec.number)
        await _publish(conn, str(created), spec.number, spec.caller_id_name, rules)
        return await get_number(conn, tenant, str(created), rules.max_length)


async def update_number(
    conn: asyncpg.Connection,
    tenant: TenantRef,
    number_uuid: str,
    spec: NumberSpec,
    rules: PublishRules,
) -> None:
    """Change the fields ``spec`` gives and republish, in one transaction.

    Even an empty change republishes, so a number stored before publishing
    existed is published by any PUT.
    """
    canonical = canonical_uuid(number_uuid)
    async with conn.transaction():
        row = None
        if canonical is not None:
            row = await conn.fetchrow(
                "SELECT number, caller_id_name, main, shared, user_id FROM phone_numbers"
                " WHERE tenant_id = $1 AND uuid = $2::uuid FOR UPDATE",
                tenant.id,
                canonical,
            )
        if row is None or canonical is None:
            raise NotFound(f"no phone number {number_uuid[:64]!r}", field="uuid")
        given = spec.given
        number = spec.number if "number" in given and spec.number is not None else row["number"]
        name = spec.caller_id_name if "caller_id_name" in given else row["caller_id_name"]
        shared = spec.shared if "shared" in given and spec.shared is not None else row["shared"]
        user_id = (
            await _user_id(conn, tenant, spec.user_uuid) if "user_uuid" in given else row["user_id"]
        )
        if row["main"] and not shared:
            raise InvalidRequest("the main number is always shared", field="shared")
        new = (number, name, shared, user_id)
        if new != (row["number"], row["caller_id_name"], row["shared"], row["user_id"]):
            if number != row["number"] and await conn.fetchval(
                "SELECT 1 FROM phone_numbers WHERE tenant_id = $1 AND number = $2",
                tenant.id,
                number,
            ):
                raise _exists(number)
            await conn.execute(
                "UPDATE phone_numbers SET number = $3, caller_id_name = $4, shared = $5,"
                " user_id = $6 WHERE tenant_id = $1 AND uuid = $2::uuid",
                tenant.id,
                canonical,
                *new,
            )
        await _publish(conn, canonical, number, name, rules)


async def delete_number(conn: asyncpg.Connection, tenant: TenantRef, number_uuid: str) -> None:
    """Delete a number; its published name goes with it (ON DELETE CASCADE)."""
    canonical = canonical_uuid(number_uuid)
    deleted = None
    if canonical is not None:
        deleted = await conn.fetchval(
            "DELETE FROM phone_numbers WHERE tenant_id = $1 AND uuid = $2::uuid RETURNING uuid",
            tenant.id,
            canonical,
        )
    if deleted is None:
        raise NotFound(f"no phone number {number_uuid[:64]!r}", field="uuid")


# $6 says what to do with a number that appears meanwhile: the fast path
# inserts only the numbers the anti-join found missing, without ON CONFLICT's
# speculative insertion (2x slower at 100,000 rows); a concurrent writer makes
# it fail with a unique violation, and the retry skips such numbers instead.
# Every uuid is gen_random_uuid()'s, as wazo-confd gives each number its own
# random uuid: identifiers behind an API must not be guessable from one
# another (a shared prefix and a counter would be). The random uuids are sorted
# and handed out in number order, so rows go in in number order (concurrent
# ranges lock the numbers' index in one order: no deadlock) and in uuid order
# (the primary key's pages are visited once each, in order, not 100,000 times
# at random; see bench/README.md for what that costs).
_RANGE = """
WITH wanted AS (
    SELECT s, $2::text || CASE WHEN length(v) < $5 THEN lpad(v, $5, '0') ELSE v END AS number
      FROM (SELECT s, ($3::text::numeric + s)::text AS v
              FROM generate_series(0::bigint, $4::bigint - 1) AS s) AS g
), existing AS (
    SELECT p.uuid, p.number FROM wanted w
      JOIN phone_numbers p ON p.tenant_id = $1 AND p.number = w.number
), fresh AS (
    SELECT w.number, row_number() OVER (ORDER BY w.s) AS i FROM wanted w
     WHERE NOT EXISTS (SELECT 1 FROM existing e WHERE e.number = w.number)
), ids AS (
    SELECT u, row_number() OVER (ORDER BY u) AS i
      FROM (SELECT gen_random_uuid() AS u FROM fresh) AS r
), created AS (
    INSERT INTO phone_numbers (uuid, tenant_id, number)
    SELECT ids.u, $1, fresh.number FROM fresh JOIN ids USING (i) ORDER BY i
    {on_conflict}
    RETURNING uuid, number
)
SELECT uuid, new FROM (
    SELECT uuid::text, number, true AS new FROM created
    UNION ALL
    SELECT uuid::text, number, false FROM existing
) AS found ORDER BY length(number), number
"""
_RANGE_FAST = _RANGE.format(on_conflict="")
_RANGE_SAFE = _RANGE.format(on_conflict="ON CONFLICT (tenant_id, number) DO NOTHING")


async def create_range(
    conn: asyncpg.Connection, tenant: TenantRef, span: NumberRange
) -> RangeResult:
    """Create every number of ``span`` the tenant lacks, in one set-based statement.

    ``generate_series`` makes the numbers; those the tenant holds are skipped
    and reported, read from the statement's own snapshot (before its insert).
    A number another request inserts meanwhile is skipped too, by the retry.
    """
    args = (tenant.id, span.prefix, str(span.low), span.span, span.width)
    async with conn.transaction():
        # the numbers are read twice: keep them in memory rather than in a temporary file
        await conn.execute("SET LOCAL work_mem = '64MB'")
        try:
            async with conn.transaction():
                rows = await conn.fetch(_RANGE_FAST, *args)
        except asyncpg.UniqueViolationError:
            rows = await conn.fetch(_RANGE_SAFE, *args)
    return RangeResult([r[0] for r in rows if r[1]], [r[0] for r in rows])


async def set_main(conn: asyncpg.Connection, tenant: TenantRef, number_uuid: str) -> None:
    """Make ``number_uuid`` the tenant's one main number (and shared); the old main is
    unflagged in the same transaction. A lock on the tenant row serializes two
    such requests, so neither trips the one-main index."""
    canonical = canonical_uuid(number_uuid)
    async with conn.transaction():
        await conn.execute("SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE", tenant.id)
        main = None
        if canonical is not None:
            main = await conn.fetchval(
                "SELECT main FROM phone_numbers WHERE tenant_id = $1 AND uuid = $2::uuid",
                tenant.id,
                canonical,
            )
        if main is None or canonical is None:
            raise NotFound(f"no phone number {number_uuid[:64]!r}", field="phone_number_uuid")
        if main:
            return
        await conn.execute(
            "UPDATE phone_numbers SET main = false WHERE tenant_id = $1 AND main", tenant.id
        )
        await conn.execute(
            "UPDATE phone_numbers SET main = true, shared = true"
            " WHERE tenant_id = $1 AND uuid = $2::uuid",
            tenant.id,
            canonical,
        )
