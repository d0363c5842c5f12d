"""Spool: an upload's body held for its import, in memory up to a bound, then in a file
whose every write, read and close run on a thread of the spool's own.

Not on the event loop, which also answers this process's SIP dips and lookups: a write
to the page cache usually takes tens of microseconds, but the kernel can make a writer
wait (``balance_dirty_pages``) once dirty pages pile up, as they may while PostgreSQL
writes an import beside it, and closing the unnamed file frees its pages on the
closing thread (0.5 ms for 10 MB, 1.1 ms for 20 MB on the 2-core VM). One thread per
spool, not the loop's default executor, so that those steps keep their order: a close
after a cancelled write waits for that write, not the other way round. Small bodies
never reach a file and never start the thread.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import IO, TypeVar

__all__ = ["Spool"]

T = TypeVar("T")

#: each hop to the spool's thread moves about this much (and a body up to it stays in memory)
BATCH_BYTES = 1 << 20
#: the most one read back returns: a CSV block's worth (phonebook_csv.BLOCK_BYTES)
READ_BYTES = 256 * 1024


class Spool:
    """Appended to with ``write``, read back once with ``read_back``, then ``close``d.

    ``where`` is the directory of the file (None: the system's temporary directory).
    An ``OSError`` of the file (a full disk, a directory that is not there) comes out
    of the ``write`` or ``read_back`` that met it.
    """

    def __init__(self, where: str | None, batch_bytes: int = BATCH_BYTES) -> None:
        self.where = where
        self.batch_bytes = batch_bytes
        self.size = 0
        self._pending: list[bytes] = []  # not yet handed to the thread
        self._pending_bytes = 0
        self._file: IO[bytes] | None = None  # made on the thread, at the first batch
        self._thread: ThreadPoolExecutor | None = None

    async def write(self, chunk: bytes) -> None:
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        self.size += len(chunk)
        if self._pending_bytes >= self.batch_bytes:
            await self._flush()

    async def read_back(self) -> AsyncIterator[bytes]:
        """The body from its start, in pieces of up to ``READ_BYTES``."""
        if self._file is None:  # all of it in memory
            for chunk in self._pending:
                yield chunk
            return
        await self._flush()
        file = self._file
        await self._run(file.seek, 0)
        while chunk := await self._run(file.read, READ_BYTES):
            yield chunk

    def close(self) -> None:
        """Close (and so free) the file on the spool's thread, after what it still runs;
        returns at once, so that it may run in a ``finally`` of a cancelled task."""
        self._pending = []
        thread, self._thread = self._thread, None
        if thread is None:
            return
        file = self._file
        if file is not None:
            thread.submit(file.close)
        thread.shutdown(wait=False)

    async def _flush(self) -> None:
        if not self._pending:
            return
        chunks, self._pending, self._pending_bytes = self._pending, [], 0
        await self._run(self._append, chunks)

    def _append(self, chunks: list[bytes]) -> None:  # on the spool's thread
        if self._file is None:
            self._file = tempfile.TemporaryFile(dir=self.where)  # noqa: SIM115 - closed by close()
        self._file.writelines(chunks)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="spool")
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
