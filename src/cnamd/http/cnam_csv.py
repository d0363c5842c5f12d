"""A phone book as CSV over HTTP: ``POST .../cnam-import`` and ``GET .../cnam-export``.

The same CSV and the same one-transaction importer as ``cnamd import`` /
``cnamd export`` (store/imports.py): a failed or abandoned upload leaves the
book as it was. The body is streamed, never held whole; rows are validated
in a worker process, because validating on the event loop would hold up
the SIP dips this process also answers (~65 ms per 5,000 rows).
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ProcessPoolExecutor

from aiohttp import web

from cnamd.errors import InvalidRequest
from cnamd.http.auth import principal
from cnamd.http.bodies import BodyTooLarge
from cnamd.http.cnam import FAMILIES, Resolve
from cnamd.http.db import connection
from cnamd.http.keys import SETTINGS
from cnamd.phonebook_csv import HEADER, Rejected, format_entry, read_lines_async
from cnamd.store.imports import export_entries, import_entries

__all__ = ["add_routes"]

#: the largest upload taken: ~10M rows of a typical book; cnamd import has no limit
MAX_BYTES = 512 * 1024 * 1024
#: rejected rows listed in the answer (all are counted)
MAX_LISTED = 1000
#: below this a body is validated on the loop: a worker process costs more to start
_INLINE_BYTES = 64 * 1024
_CSV_TYPES = ("text/csv", "application/csv", "text/plain")
_FLAGS = {"true": True, "1": True, "false": False, "0": False}


async def _limited(request: web.Request) -> AsyncIterator[bytes]:
    """The body line by line, refusing it once it passes MAX_BYTES."""
    seen = 0
    async for line in request.content:
        seen += len(line)
        if seen > MAX_BYTES:
            raise BodyTooLarge(
                f"the upload passes {MAX_BYTES // 2**20} MiB; use cnamd import for larger files",
                field="body",
            )
        yield line


@contextlib.contextmanager
def _validators(request: web.Request) -> Iterator[ProcessPoolExecutor | None]:
    """A worker process for a large body; spawned, so it inherits no sockets."""
    length = request.content_length
    if length is not None and length <= _INLINE_BYTES:
        yield None
        return
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield pool
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


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

        async with connection(request) as conn:
            owner = await self.resolve(request, conn, who)
            with _validators(request) as pool:
                report = await import_entries(
                    conn,
                    owner,
                    read_lines_async(_limited(request)),
                    max_name_length=request.app[SETTINGS].names.max_length,
                    replace=replace,
                    on_reject=note,
                    executor=pool,
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


def add_routes(app: web.Application) -> None:
    for base, resolve in FAMILIES:
        book = CsvBook(resolve)
        app.router.add_post(f"{base}/cnam-import", book.import_csv)
        app.router.add_get(f"{base}/cnam-export", book.export_csv)
