"""Bulk import and export of one owner's phone book, all or nothing.

An import streams its rows: each is validated and normalized in Python, the
good ones go by binary COPY into a temporary staging table while the rest
are still being read, and one ``INSERT ... SELECT ... ON CONFLICT`` merges
them into ``cnam_entries``. COPY and merge run in one transaction, so an
import that fails or is killed half way leaves the database as it was, and
the change-log triggers log the merge set-wise (one statement, not a
million).

Within one input the last row for a phone wins; the earlier ones are
reported as superseded. An existing entry keeps its approval state (the
import sets names, as the API's PUT does); a new entry is approved.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass

import asyncpg

from cnamd.errors import CnamdError, InvalidRequest
from cnamd.model import CnamEntry, Owner, Scope
from cnamd.names import validate_name
from cnamd.numbers import normalize_number, normalize_prefix
from cnamd.phonebook_csv import RawRow, Rejected

__all__ = ["ImportReport", "export_entries", "import_entries"]

_STAGING = "cnamd_import"
_FLAGS = {"": False, "false": False, "0": False, "true": True, "1": True}

# Last row per key wins; keys sort bytewise ("C"): same order for every
# database locale, and several times faster than a linguistic sort.
_MERGE = f"""
WITH latest AS (
    SELECT DISTINCT ON (key COLLATE "C") key, is_prefix, name
      FROM {_STAGING} ORDER BY key COLLATE "C", line DESC
), merged AS (
    INSERT INTO cnam_entries
           (scope, tenant_id, usergroup_id, user_id, key, is_prefix, name, approval, approved_at)
    SELECT $1, $2, $3, $4, key, is_prefix, name, 'approved', now() FROM latest
    ON CONFLICT (scope, owner_id, key) DO UPDATE
       SET name = EXCLUDED.name, is_prefix = EXCLUDED.is_prefix, updated_at = now()
     WHERE (cnam_entries.name, cnam_entries.is_prefix)
           IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.is_prefix)
    RETURNING xmax = 0 AS inserted
)
SELECT (SELECT count(*) FROM latest) AS keys,
       count(*) FILTER (WHERE inserted) AS inserted,
       count(*) FILTER (WHERE NOT inserted) AS updated
  FROM merged
"""

_SUPERSEDED = f"""
SELECT line, key, name, winner FROM (
    SELECT line, key, name, max(line) OVER (PARTITION BY key) AS winner FROM {_STAGING}
) s WHERE line <> winner ORDER BY line
"""

_DELETE_UNLISTED = f"""
DELETE FROM cnam_entries e
 WHERE e.scope = $1 AND e.owner_id = $2
   AND NOT EXISTS (SELECT 1 FROM {_STAGING} s WHERE s.key = e.key)
"""


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did. ``unchanged``: rows whose entry already held that name.

    ``replace_refused``: a replacing import that rejected rows deleted nothing,
    since a rejected row's entry would otherwise be lost for a typo.
    """

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    superseded: int = 0
    rejected: int = 0
    deleted: int = 0
    replace_refused: bool = False

    def summary(self) -> str:
        """One ``key=value`` line, for the CLI and logs."""
        text = (
            f"inserted={self.inserted} updated={self.updated} unchanged={self.unchanged}"
            f" superseded={self.superseded} rejected={self.rejected} deleted={self.deleted}"
        )
        return text + (" replace=refused" if self.replace_refused else "")


class _Validator:
    """Rows -> staging records ``(line, key, is_prefix, name)``; counts and reports rejections."""

    def __init__(
        self, owner: Owner, max_name_length: int, on_reject: Callable[[Rejected], object] | None
    ) -> None:
        self.region = owner.region
        self.max_name_length = max_name_length
        self.on_reject = on_reject
        self.rejected = 0

    def check(self, row: RawRow | Rejected) -> tuple[int, str, bool, str] | None:
        """The record for a good row; None (after reporting it) for a bad one."""
        if type(row) is tuple:  # exact type: the common case costs one test
            line, phone, name, flag = row
            try:
                prefix = _FLAGS[flag] if flag in _FLAGS else _read_flag(flag)
                if prefix:
                    key = normalize_prefix(phone, field="phone")
                else:
                    key = normalize_number(phone, self.region, field="phone")
                return (line, key, prefix, validate_name(name, max_length=self.max_name_length))
            except CnamdError as exc:
                row = Rejected(line, phone, name, str(exc))
        assert isinstance(row, Rejected)
        self.reject(row)
        return None

    def reject(self, row: Rejected) -> None:
        self.rejected += 1
        if self.on_reject is not None:
            self.on_reject(row)

    async def records(
        self, rows: Iterable[RawRow | Rejected] | AsyncIterable[RawRow | Rejected]
    ) -> AsyncIterator[tuple[int, str, bool, str]]:
        check = self.check
        if isinstance(rows, AsyncIterable):
            async for row in rows:
                if (record := check(row)) is not None:
                    yield record
        else:
            for row in rows:
                if (record := check(row)) is not None:
                    yield record


def _read_flag(flag: str) -> bool:
    value = _FLAGS.get(flag.strip().lower())
    if value is None:
        raise InvalidRequest(
            f"{flag[:40]!r} is not a prefix flag: true, false, 1, 0 or empty", field="prefix"
        )
    return value


def _owner_values(owner: Owner) -> tuple[str, int | None, int | None, int | None]:
    """scope, tenant_id, usergroup_id, user_id: what the scope needs, so owner_id follows."""
    tenant = None if owner.scope is Scope.GLOBAL else owner.tenant_id
    group = owner.usergroup_id if owner.scope is Scope.USERGROUP else None
    user = owner.user_id if owner.scope is Scope.USER else None
    return owner.scope.label, tenant, group, user


async def import_entries(
    conn: asyncpg.Connection,
    owner: Owner,
    rows: Iterable[RawRow | Rejected] | AsyncIterable[RawRow | Rejected],
    *,
    max_name_length: int,
    replace: bool = False,
    on_reject: Callable[[Rejected], object] | None = None,
) -> ImportReport:
    """Merge ``rows`` into ``owner``'s phone book in one transaction.

    ``rows`` may be a sync or async iterable (``phonebook_csv.read_lines`` /
    ``read_lines_async``), consumed once and never held: memory stays flat
    for any size. National numbers are read in the owner's region. Each bad
    row, and each row superseded by a later one for the same phone, is
    passed to ``on_reject`` (superseded ones after the merge). ``replace``
    deletes the owner's entries the input does not list, unless a row was
    rejected. Errors of the input as a whole (a bad header) and of the
    database propagate after the rollback.
    """
    validator = _Validator(owner, max_name_length, on_reject)
    values = _owner_values(owner)
    async with conn.transaction():
        await conn.execute(
            f"CREATE TEMP TABLE {_STAGING} (line bigint, key text, is_prefix boolean, name text)"
            " ON COMMIT DROP"
        )
        status = await conn.copy_records_to_table(
            _STAGING, records=validator.records(rows), columns=["line", "key", "is_prefix", "name"]
        )
        staged = int(status.split()[-1])
        merged = await conn.fetchrow(_MERGE, *values)
        assert merged is not None
        keys, inserted, updated = merged["keys"], merged["inserted"], merged["updated"]
        if staged > keys and on_reject is not None:
            async for r in conn.cursor(_SUPERSEDED):
                on_reject(
                    Rejected(
                        r["line"], r["key"], r["name"], f"phone: superseded by line {r['winner']}"
                    )
                )
        refused = replace and validator.rejected > 0
        deleted = 0
        if replace and not refused:
            status = await conn.execute(_DELETE_UNLISTED, values[0], owner.owner_id)
            deleted = int(status.split()[-1])
    return ImportReport(
        inserted=inserted,
        updated=updated,
        unchanged=keys - inserted - updated,
        superseded=staged - keys,
        rejected=validator.rejected,
        deleted=deleted,
        replace_refused=refused,
    )


async def export_entries(
    conn: asyncpg.Connection, owner: Owner, *, batch: int = 10000
) -> AsyncIterator[CnamEntry]:
    """Every entry of ``owner``'s phone book in phone order, from one snapshot.

    All entries, whatever their approval (as the API's list shows them), so
    that importing an export changes nothing. Streams through a server-side
    cursor in a read-only REPEATABLE READ transaction held while iterating.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        cursor = await conn.cursor(
            "SELECT key, name, is_prefix FROM cnam_entries"
            " WHERE scope = $1 AND owner_id = $2 ORDER BY key",
            owner.scope.label,
            owner.owner_id,
        )
        while rows := await cursor.fetch(batch):
            for row in rows:
                yield CnamEntry(row[0], row[1], row[2])
