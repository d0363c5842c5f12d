"""Bulk import and export of one owner's phone book, all or nothing.

An import streams its rows: each is validated and normalized in Python,
the good ones are encoded as binary COPY tuples (both pure, so a worker
process can do them) and go into a temporary staging table while the rest
are still being read. Then, in SQL, the last row per phone is
classified against ``cnam_entries`` (new, changed, unchanged) and one
``INSERT ... ON CONFLICT`` merges the new and changed rows, sorted by key.
COPY and merge run in one transaction: an import that fails or is killed
half way leaves the database as it was, and the change-log triggers log the
merge set-wise (one statement, not a million).

Why one merge, not one per chunk overlapping the validation: a file is in
no particular order, and chunk by chunk its keys land at random places in
the two ``(scope, owner_id, key)`` indexes; one sorted merge inserts them in
index order. Measured at 1M scrambled rows (bench/README.md "Bulk import"):
20 merges of 50k rows took 36 s, one merge 22 s.

One import at a time per database, for its whole cost: an import takes its turn
(the session advisory lock ``IMPORT_TURN``) before its COPY and gives it up once
the caller's cache serves what it wrote (``settled``), or at once when there is
no cache to wait for (``cnamd import``). On a 2-core host that also served dips,
two 10 MB uploads side by side took both cores: their parsing and COPYs first,
then a merge of one beside the cache's reload of the other. In turn, the dips'
p99 during the pair fell from 2.7-3.7x idle to 2.2-2.8x (bench/README.md, "One
import at a time").
The HTTP front reads an upload's body before it asks for the turn
(http/cnam_csv.py), so a wait holds no sender and a slow sender holds no turn.

Within one input the last row for a phone wins; the earlier ones are
reported as superseded. An existing entry keeps its approval state (the
import sets names, as the API's PUT does); a new entry is approved.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, TypeVar

import asyncpg

from cnamd.errors import CnamdError, InvalidRequest
from cnamd.model import CnamEntry, Owner, Scope
from cnamd.names import validate_name
from cnamd.numbers import normalize_prefix, written_number
from cnamd.phonebook_csv import Block, RawRow, Rejected
from cnamd.store.pool import CONNECTION_LOST

__all__ = [
    "ImportReport",
    "export_entries",
    "import_blocks",
    "import_entries",
    "stage_block",
    "stage_rows",
    "validate_rows",
]

log = logging.getLogger(__name__)

Row = RawRow | Rejected
Record = tuple[int, str, bool, str]  # line, key, is_prefix, name: a staging row
#: a batch made ready for COPY: its binary tuples, how many, and the rejected rows
Staged = tuple[bytes, int, list[Rejected]]
OnReject = Callable[[Rejected], object]
#: returns once the caller's cache has applied the change log up to the id given
Settled = Callable[[int], Awaitable[None]]
T = TypeVar("T")

# Rows validated at a time: per-chunk costs vanish, memory stays small, and
# validated on the loop, one chunk holds it for ~65 ms at most.
_CHUNK_ROWS = 5000
# Chunks an executor validates at once: keeps two to four workers busy.
_IN_FLIGHT = 4
_FLAGS = {"": False, "false": False, "0": False, "true": True, "1": True}
_BULK_TIMEOUT = 3600.0  # seconds one statement of an import may take, in the client
#: advisory lock key of an import's turn: one import at a time per database (the
#: change log's ids use ...601, its pruner ...602)
IMPORT_TURN = 7210315377642189603
#: how long an import keeps its turn waiting for the caller's cache to serve it: past
#: this (a feed that is reloading from scratch, a database gone) the next import goes
_SETTLE_TIMEOUT = 60.0

# PostgreSQL's binary COPY format ("COPY", File Formats): a signature, flags
# and header-extension length, then per tuple its field count and each field
# as a length and the value in the type's binary form; -1 ends the data.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)
_TUPLE_HEAD = struct.Struct("!hiqi")  # 4 fields; line: int8; the key's length
_LENGTH = struct.Struct("!i")
_PREFIX = {True: b"\x00\x00\x00\x01\x01", False: b"\x00\x00\x00\x01\x00"}  # bool

# A client killed during the merge would leave the server merging (and holding
# the change log's lock) until the statement ends, tens of seconds at 1M rows;
# polling the socket every second ends it within a second.
_ABANDON_CHECK = "SET LOCAL client_connection_check_interval = '1s'"

# The COPY lasts as long as the file takes to read, and the merge of a million
# rows tens of seconds, as may the wait for the import turn: database.statement_timeout,
# which bounds the API's quick steps, would cancel them. Client-side, _BULK_TIMEOUT
# bounds each.
_SETUP = """
SET LOCAL work_mem = '128MB';
SET LOCAL statement_timeout = 0;
CREATE TEMP TABLE cnamd_import (line bigint, key text, is_prefix boolean, name text)
    ON COMMIT DROP;
"""

# The last row per key, classified against the stored entry in one join
# (statistics first, so that a million rows get a hash or merge join and ten
# rows get index probes).
# {lookup} is the join, or for a book empty when the import began (a first
# load) nothing at all.
_CLASSIFY = """
CREATE TEMP TABLE cnamd_import_latest ON COMMIT DROP AS
SELECT l.line, l.key, l.is_prefix, l.name,
       CASE WHEN e.name IS NULL THEN 'i'
            WHEN (e.name, e.is_prefix) IS DISTINCT FROM (l.name, l.is_prefix) THEN 'u'
            ELSE 'n' END AS outcome
  FROM (SELECT DISTINCT ON (key COLLATE "C") line, key, is_prefix, name
          FROM cnamd_import ORDER BY key COLLATE "C", line DESC) l
  {lookup}
"""
_JOIN = "LEFT JOIN cnam_entries e ON e.scope = $1 AND e.owner_id = $2 AND e.key = l.key"
_NO_JOIN = ", LATERAL (SELECT NULL::text AS name, NULL::boolean AS is_prefix) e"

# The merge issue #3 asks for, over the new and changed rows only (1M
# unchanged rows cost 7 s of ON CONFLICT checks; the join above, 2 s).
# ON CONFLICT still decides: a key another writer added since is updated.
_MERGE = """
INSERT INTO cnam_entries
       (scope, tenant_id, usergroup_id, user_id, key, is_prefix, name, approval, approved_at)
SELECT $1, $2, $3, $4, key, is_prefix, name, 'approved', now()
  FROM cnamd_import_latest WHERE outcome <> 'n' ORDER BY key
ON CONFLICT (scope, owner_id, key) DO UPDATE
   SET name = EXCLUDED.name, is_prefix = EXCLUDED.is_prefix, updated_at = now()
 WHERE (cnam_entries.name, cnam_entries.is_prefix)
       IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.is_prefix)
"""

_SUPERSEDED = """
SELECT line, key, name, winner FROM (
    SELECT line, key, name, max(line) OVER (PARTITION BY key) AS winner FROM cnamd_import
) s WHERE line <> winner ORDER BY line
"""

# Before the merge, while the statistics still describe the book: after it
# they would not count this transaction's inserts, and a plan for a "small"
# book could scan the staged keys once per entry.
_DELETE_UNLISTED = """
DELETE FROM cnam_entries e
 WHERE e.scope = $1 AND e.owner_id = $2
   AND NOT EXISTS (SELECT FROM cnamd_import_latest l WHERE l.key = e.key)
"""


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did, per phone. ``unchanged``: the entry already held that name.

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


def validate_rows(
    rows: Iterable[Row], region: str | None, max_name_length: int
) -> tuple[list[Record], list[Rejected]]:
    """Staging records for the good rows, and the bad ones with their reasons.

    Pure and picklable, so an executor's worker process can run it.
    """
    records: list[Record] = []
    rejected: list[Rejected] = []
    for row in rows:
        if type(row) is tuple:  # exact type: the common case costs one test
            line, phone, name, flag = row
            try:
                prefix = _FLAGS[flag] if flag in _FLAGS else _read_flag(flag)
                if prefix:
                    key = normalize_prefix(phone, field="phone")
                else:
                    key = written_number(phone, region, field="phone")
                records.append((line, key, prefix, validate_name(name, max_length=max_name_length)))
            except CnamdError as exc:
                rejected.append(Rejected(line, phone, name, str(exc)))
        else:
            assert isinstance(row, Rejected)
            rejected.append(row)
    return records, rejected


def stage_rows(rows: Iterable[Row], region: str | None, max_name_length: int) -> Staged:
    """``validate_rows``, with the good rows encoded for ``cnamd_import``'s binary COPY.

    Pure and picklable: a worker process returns one bytes object, not a
    list of tuples for the event loop to walk and encode.
    """
    records, rejected = validate_rows(rows, region, max_name_length)
    head, length, prefix = _TUPLE_HEAD.pack, _LENGTH.pack, _PREFIX
    parts = []
    for line, key, is_prefix, name in records:
        k, n = key.encode(), name.encode()
        parts.append(b"".join((head(4, 8, line, len(k)), k, prefix[is_prefix], length(len(n)), n)))
    return b"".join(parts), len(records), rejected


def stage_block(block: Block, region: str | None, max_name_length: int) -> Staged:
    """``stage_rows`` for a block of CSV lines: the parsing too runs where this runs."""
    return stage_rows(block.rows(), region, max_name_length)


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


async def _chunks(rows: Iterable[Row] | AsyncIterable[Row]) -> AsyncIterator[list[Row]]:
    if isinstance(rows, AsyncIterable):
        batch: list[Row] = []
        async for row in rows:
            batch.append(row)
            if len(batch) == _CHUNK_ROWS:
                yield batch
                batch = []
        if batch:
            yield batch
    else:
        source = iter(rows)
        while batch := list(itertools.islice(source, _CHUNK_ROWS)):
            yield batch


class _Staging(Generic[T]):
    """The COPY data of the good rows, staged a batch at a time; counts and reports the bad.

    With an executor, several batches are staged at once and taken in
    order: the staging is pure Python (numbers.py, ~13 us a row), and during
    the COPY the database leaves cores to spare.
    """

    def __init__(
        self,
        stage: Callable[[T, str | None, int], Staged],
        batches: AsyncIterable[T],
        *,
        owner: Owner,
        max_name_length: int,
        on_reject: OnReject | None,
        executor: Executor | None,
    ) -> None:
        self.stage = stage
        self.batches = batches
        self.args = (owner.region, max_name_length)
        self.on_reject = on_reject
        self.executor = executor
        self.staged = 0
        self.rejected = 0

    async def copy_data(self) -> AsyncIterator[bytes]:
        yield _COPY_HEADER
        async for data, staged, rejected in self._staged():
            self.rejected += len(rejected)
            if self.on_reject is not None:
                for row in rejected:
                    self.on_reject(row)
            self.staged += staged
            if data:
                yield data
        yield _COPY_TRAILER

    async def _staged(self) -> AsyncIterator[Staged]:
        if self.executor is None:
            async for batch in self.batches:
                yield self.stage(batch, *self.args)
            return
        loop = asyncio.get_running_loop()
        pending: deque[asyncio.Future[Staged]] = deque()
        try:
            async for batch in self.batches:
                pending.append(loop.run_in_executor(self.executor, self.stage, batch, *self.args))
                if len(pending) >= _IN_FLIGHT:
                    yield await pending.popleft()
            while pending:
                yield await pending.popleft()
        finally:
            for future in pending:
                future.cancel()


async def import_entries(
    conn: asyncpg.Connection,
    owner: Owner,
    rows: Iterable[Row] | AsyncIterable[Row],
    *,
    max_name_length: int,
    replace: bool = False,
    on_reject: OnReject | None = None,
    executor: Executor | None = None,
    settled: Settled | None = None,
) -> ImportReport:
    """Merge ``rows`` into ``owner``'s phone book in one transaction.

    ``rows`` may be a sync or async iterable (``phonebook_csv.read_lines`` /
    ``read_lines_async``), consumed once, a chunk at a time: memory stays
    flat for any size. National numbers are read in the owner's region.
    ``executor`` (a ProcessPoolExecutor) stages chunks in parallel;
    without it they are staged on the event loop, which a server should
    not do for a big input. Each bad row, and after the merge each row
    superseded by a later one for the same phone, is passed to
    ``on_reject``. ``replace`` deletes the owner's entries the input does
    not list, unless a row was rejected. Errors of the input as a whole (a
    bad header) and of the database propagate after the rollback. The import
    waits for its turn (``IMPORT_TURN``) and, when it changed anything, keeps it
    until ``settled`` returns for its last change (at most _SETTLE_TIMEOUT).
    """
    staging = _Staging(
        stage_rows,
        _chunks(rows),
        owner=owner,
        max_name_length=max_name_length,
        on_reject=on_reject,
        executor=executor,
    )
    return await _merge(conn, owner, staging, replace=replace, on_reject=on_reject, settled=settled)


async def import_blocks(
    conn: asyncpg.Connection,
    owner: Owner,
    blocks: AsyncIterable[Block],
    *,
    max_name_length: int,
    replace: bool = False,
    on_reject: OnReject | None = None,
    executor: Executor | None = None,
    settled: Settled | None = None,
) -> ImportReport:
    """``import_entries`` for a CSV cut into blocks (``phonebook_csv.read_blocks``).

    With an ``executor`` the lines are parsed, validated and encoded there:
    the calling event loop only moves bytes.
    """
    staging = _Staging(
        stage_block,
        blocks,
        owner=owner,
        max_name_length=max_name_length,
        on_reject=on_reject,
        executor=executor,
    )
    return await _merge(conn, owner, staging, replace=replace, on_reject=on_reject, settled=settled)


async def _merge(
    conn: asyncpg.Connection,
    owner: Owner,
    staging: _Staging[T],
    *,
    replace: bool,
    on_reject: OnReject | None,
    settled: Settled | None,
) -> ImportReport:
    values = _owner_values(owner)
    where = (values[0], owner.owner_id)
    try:
        async with conn.transaction():
            await conn.execute(_SETUP)
            with contextlib.suppress(asyncpg.PostgresError):
                async with conn.transaction():  # a savepoint: not every platform has the check
                    await conn.execute(_ABANDON_CHECK)
            # in the transaction: _SETUP lifted the statement timeout for the wait, and a
            # client that leaves ends it (_ABANDON_CHECK)
            await _take_turn(conn, where)
            await conn.copy_to_table(
                "cnamd_import",
                source=staging.copy_data(),
                columns=["line", "key", "is_prefix", "name"],
                format="binary",
                timeout=_BULK_TIMEOUT,
            )
            # read committed: in turn, this sees the imports that merged before
            empty_book = not await conn.fetchval(
                "SELECT EXISTS (SELECT FROM cnam_entries WHERE scope = $1 AND owner_id = $2)",
                *where,
            )
            if empty_book:
                await conn.execute(_CLASSIFY.format(lookup=_NO_JOIN), timeout=_BULK_TIMEOUT)
            else:
                await conn.execute("ANALYZE cnamd_import", timeout=_BULK_TIMEOUT)
                await conn.execute(_CLASSIFY.format(lookup=_JOIN), *where, timeout=_BULK_TIMEOUT)
            counts = dict.fromkeys("iun", 0)
            for row in await conn.fetch(
                "SELECT outcome, count(*) FROM cnamd_import_latest GROUP BY outcome",
                timeout=_BULK_TIMEOUT,
            ):
                counts[row[0]] = row[1]
            refused = replace and staging.rejected > 0
            deleted = 0
            if replace and not refused and not empty_book:
                await conn.execute("ANALYZE cnamd_import_latest", timeout=_BULK_TIMEOUT)
                status = await conn.execute(_DELETE_UNLISTED, *where, timeout=_BULK_TIMEOUT)
                deleted = int(status.split()[-1])
            if counts["i"] or counts["u"]:
                await conn.execute(_MERGE, *values, timeout=_BULK_TIMEOUT)
            superseded = staging.staged - sum(counts.values())
            if superseded and on_reject is not None:
                async for r in conn.cursor(_SUPERSEDED, timeout=_BULK_TIMEOUT):
                    on_reject(
                        Rejected(
                            r["line"],
                            r["key"],
                            r["name"],
                            f"phone: superseded by line {r['winner']}",
                        )
                    )
            # the change log's triggers hold its id lock until the commit: nobody else
            # has appended since, so the newest id is this import's last
            last = None
            if settled is not None and (deleted or counts["i"] or counts["u"]):
                last = await conn.fetchval("SELECT max(id) FROM change_log")
        if last is not None:
            assert settled is not None
            await _settle(settled, last, where)
    finally:
        await _end_turn(conn)
    return ImportReport(
        inserted=counts["i"],
        updated=counts["u"],
        unchanged=counts["n"],
        superseded=superseded,
        rejected=staging.rejected,
        deleted=deleted,
        replace_refused=refused,
    )


async def _take_turn(conn: asyncpg.Connection, where: tuple[str, int]) -> None:
    """Wait for the import ahead, if any, to end; a wait is logged, since it can be as
    long as another import (tens of seconds at 1M rows): a CLI import or an upload
    seen to hang is explained."""
    if await conn.fetchval("SELECT pg_try_advisory_lock($1)", IMPORT_TURN):
        return
    log.info("waiting for another import to end", extra={"scope": where[0], "owner_id": where[1]})
    await conn.execute("SELECT pg_advisory_lock($1)", IMPORT_TURN, timeout=_BULK_TIMEOUT)


async def _settle(settled: Settled, last: int, where: tuple[str, int]) -> None:
    """Keep the turn until the caller's cache serves change ``last``: its reload of a big
    import would otherwise run beside the next import's parsing and merge."""
    try:
        async with asyncio.timeout(_SETTLE_TIMEOUT):
            await settled(last)
    except TimeoutError:
        log.warning(
            "an import's changes were not served here in time; the next import goes ahead",
            extra={"scope": where[0], "owner_id": where[1], "change_id": last},
        )


async def _end_turn(conn: asyncpg.Connection) -> None:
    """Give the turn up. A session lock outlives a rollback, so this runs whatever
    happened; on a connection that failed, the lock went with its session (and a
    pool's reset unlocks all a connection holds)."""
    if conn.is_closed():
        return
    with contextlib.suppress(*CONNECTION_LOST, asyncpg.PostgresError):
        await conn.execute("SELECT pg_advisory_unlock($1)", IMPORT_TURN)


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
