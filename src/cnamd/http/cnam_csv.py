"""A phone book as CSV over HTTP: ``POST .../cnam-import`` and ``GET .../cnam-export``.

The same CSV and the same one-transaction importer as ``cnamd import`` /
``cnamd export`` (store/imports.py): a failed or abandoned upload leaves the
book as it was. The body is read first, in bounded chunks up to
``http.max_upload_bytes``, into a spool (memory up to 1 MiB, then an unnamed
temporary file), holding neither a database connection nor the import turn
while a sender takes its time. Then, in the import's turn, it is cut into
blocks of whole lines that worker processes parse, validate and encode for
COPY: the event loop, which also answers this process's SIP dips and lookups,
only moves bytes. The answer comes once this process serves the upload's
names, and the turn passes on only then (store/imports.py says why).

Why processes, not threads (bench/bench_loop_lag.py, bench/README.md
"CSV uploads beside dips and lookups"): the parsing is pure Python and holds
the GIL, so a thread still takes the loop's turns. Two 10 MB uploads staged
beside a uvloop loop delayed a 1 ms timer by 15 ms p50 / 84 ms p99 from
threads, 0.1 ms / 6 ms from processes (idle: 0.1 ms / 4.5 ms; on the loop
itself: 109 ms / 311 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from cnamd import cpus
from cnamd.bulk_workers import BulkWorkers
from cnamd.errors import InvalidRequest, StoreUnavailable
from cnamd.http.auth import principal
from cnamd.http.bodies import BodyTimeout, BodyTooLarge
from cnamd.http.cnam import BOOKS, Resolve
from cnamd.http.db import connection
from cnamd.http.family import Route
from cnamd.http.keys import BULK_WORKERS, SERVED, SETTINGS, main_app
from cnamd.http.spool import Spool
from cnamd.phonebook_csv import HEADER, Rejected, format_entry, read_blocks
from cnamd.settings import HttpSettings
from cnamd.store.imports import export_entries, import_blocks

__all__ = ["ROUTES", "add_bulk_workers"]

#: rejected rows listed in the answer (all are counted)
MAX_LISTED = 1000
#: up to this a body is parsed on the loop (~100 rows, ~1 ms), sparing a round trip
_INLINE_BYTES = 4 * 1024
#: the most one read from the socket returns
_READ_BYTES = 64 * 1024
_CSV_TYPES = ("text/csv", "application/csv", "text/plain")
_FLAGS = {"true": True, "1": True, "false": False, "0": False}


def _size(limit: int) -> str:
    return f"{limit // 2**20} MiB" if limit % 2**20 == 0 else f"{limit} bytes"


async def _limited(request: web.Request, limit: int, timeout: float) -> AsyncIterator[bytes]:
    """The body in chunks of at most _READ_BYTES, refusing it once it passes ``limit``,
    or once ``timeout`` passes without a byte: a sender that stops must not hold its
    connection and spool for ever (a wait between reads, as nginx's
    client_body_timeout: a slow upload that keeps sending is not cut off)."""
    refusal = BodyTooLarge(
        f"the upload passes {_size(limit)}; use cnamd import for larger files", field="body"
    )
    if (request.content_length or 0) > limit:
        raise refusal
    seen = 0
    content = request.content
    while True:
        try:
            async with asyncio.timeout(timeout):
                chunk = await content.read(_READ_BYTES)  # iter_chunked's step, bounded in time
        except TimeoutError:
            raise BodyTimeout(
                f"the upload sent nothing for {timeout:g} s (http.body_timeout); nothing of"
                " it is stored",
                field="body",
            ) from None
        if not chunk:
            return
        seen += len(chunk)
        if seen > limit:
            raise refusal
        yield chunk


@contextlib.asynccontextmanager
async def _spooled(request: web.Request, http: HttpSettings) -> AsyncIterator[Spool]:
    """The whole body (``_limited``), spooled in ``http.spool_dir`` (http/spool.py: its
    file on a thread, off the loop); a spool that cannot be written (a full disk) is a
    503 naming ``body``, nothing stored.

    Why not aiofiles: it hops to a thread per call, where the spool hops per mebibyte.
    """
    spool = Spool(http.spool_dir or None)
    try:
        try:
            async for chunk in _limited(request, http.max_upload_bytes, http.body_timeout):
                await spool.write(chunk)
        except OSError as exc:
            raise StoreUnavailable(
                f"the upload could not be held for its import ({exc.strerror or exc});"
                " nothing of it is stored",
                field="body",
            ) from exc
        yield spool
    finally:
        spool.close()


class CsvBook:
    """Import and export for one family of phone-book paths."""

    def __init__(self, resolve: Resolve) -> None:
        self.resolve = resolve

    async def import_csv(self, request: web.Request) -> web.Response:
        who = await principal(request)
        if request.content_type not in _CSV_TYPES:
            raise InvalidRequest(
                f"send the CSV as text/csv, not {request.content_type!r}", field="content-type"
            )
        replace = _FLAGS.get(request.query.get("replace", "false").lower())
        if replace is None:
            raise InvalidRequest("replace must be true or false", field="replace")
        listed: list[dict[str, object]] = []

        def note(rejected: Rejected) -> None:
            if len(listed) < MAX_LISTED:
                listed.append(
                    {
                        "line": rejected.line,
                        "phone": rejected.phone,
                        "name": rejected.name,
                        "reason": rejected.reason,
                    }
                )

        app = main_app(request)
        settings = app[SETTINGS]
        async with connection(request) as conn:
            await self.resolve(request, conn, who)  # a book that is not there: before the body
        async with _spooled(request, settings.http) as spool:
            workers = None
            if spool.size > _INLINE_BYTES:
                workers = app[BULK_WORKERS]
                await workers.start()
            async with connection(request) as conn:
                owner = await self.resolve(request, conn, who)
                report = await import_blocks(
                    conn,
                    owner,
                    read_blocks(spool.read_back()),
                    max_name_length=settings.names.max_length,
                    replace=replace,
                    on_reject=note,
                    executor=workers,
                    settled=app.get(SERVED),
                )
        return web.json_response(
            {
                "inserted": report.inserted,
                "updated": report.updated,
                "unchanged": report.unchanged,
                "superseded": report.superseded,
                "rejected": report.rejected,
                "deleted": report.deleted,
                "replace_refused": report.replace_refused,
                "rejected_rows": listed,
                "rejected_rows_truncated": report.rejected + report.superseded > len(listed),
            }
        )

    async def export_csv(self, request: web.Request) -> web.StreamResponse:
        who = await principal(request)
        async with connection(request) as conn:
            owner = await self.resolve(request, conn, who)
            response = web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8"})
            await response.prepare(request)
            await response.write(HEADER.encode())
            chunk: list[str] = []
            async for entry in export_entries(conn, owner):
                chunk.append(format_entry(entry))
                if len(chunk) == 1000:
                    await response.write("".join(chunk).encode())
                    chunk.clear()
            await response.write("".join(chunk).encode())
        await response.write_eof()
        return response


async def _close_workers(app: web.Application) -> None:
    app[BULK_WORKERS].shutdown(wait=False, cancel_futures=True)


def add_bulk_workers(app: web.Application) -> None:
    """The parsing processes, on the main application: every phone book's uploads share them."""
    # Two workers keep up with the database's COPY; more would take cores from serving.
    # On a 2-CPU host one: two beside the COPY took both cores, and the dips waited
    # (bench/README.md, "One import at a time").
    app[BULK_WORKERS] = BulkWorkers(min(2, cpus.for_background()))
    app.on_cleanup.append(_close_workers)


def _routes(base: str, book: CsvBook) -> tuple[Route, ...]:
    return (
        ("POST", f"{base}/cnam-import", book.import_csv),
        ("GET", f"{base}/cnam-export", book.export_csv),
    )


ROUTES = tuple(route for base, resolve in BOOKS for route in _routes(base, CsvBook(resolve)))
