"""The phone-book CSV format shared by ``cnamd import``/``export`` and the HTTP bulk API.

A header line names the columns: ``phone`` and ``name``, and optionally
``prefix`` (``true``/``false``/``1``/``0``/empty), in any order. Every further
line is one row: records are physical lines, so a quoted field cannot span
lines (no valid number or name holds a line break), and the line number a
reader reports is the one an editor shows. Blank lines are skipped.

Sans-I/O: ``PhonebookReader.feed`` takes one line of text and returns a row,
so a file, a pipe or a streamed request body drive the same parser.
``read_blocks`` cuts a byte stream into ``Block``s of whole lines that can be
parsed anywhere, e.g. in another process, in any order.
Values are not judged here beyond splitting; the importer normalizes them.
"""

from __future__ import annotations

import copy
import csv
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

from cnamd.errors import InvalidRequest
from cnamd.model import CnamEntry

__all__ = [
    "BLOCK_BYTES",
    "HEADER",
    "Block",
    "PhonebookReader",
    "RawRow",
    "Rejected",
    "format_entry",
    "read_blocks",
    "read_lines",
    "read_lines_async",
]

#: What export writes, and the fullest header import reads.
HEADER = "phone,name,prefix\n"
_COLUMNS = ("phone", "name", "prefix")
_REQUIRED = ("phone", "name")
#: whole lines handed on at a time (~8,000 rows): a block's round trip to a
#: worker process is then negligible; also the longest line taken
BLOCK_BYTES = 256 * 1024

#: ``(line, phone, name, prefix)`` as written; a plain tuple because a
#: million of them pass through the importer (a NamedTuple costs 5x to build).
RawRow = tuple[int, str, str, str]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A row that is not imported: its 1-based line, its fields as written, and why."""

    line: int
    phone: str
    name: str
    reason: str


class PhonebookReader:
    """Turns lines of a phone-book CSV into rows; the first non-blank line is the header.

    A header without ``phone`` or ``name``, or with an unknown or repeated
    column, raises InvalidRequest: the whole file is wrong, not one row.
    """

    def __init__(self) -> None:
        self.line = 0
        self._width = 0
        self._phone = self._name = 0
        self._prefix: int | None = None

    def feed(self, text: str) -> RawRow | Rejected | None:
        """The row on the next line of input (None: the header or a blank line)."""
        self.line += 1
        text = text.rstrip("\r\n")
        if not self._width:
            if self.line == 1:
                text = text.removeprefix("\ufeff")  # the BOM spreadsheets write
            if text.strip():
                self._read_header(text)
            return None
        if '"' in text:
            try:
                fields = next(csv.reader((text,), strict=True))
            except (csv.Error, StopIteration):
                return Rejected(self.line, "", "", "line: unbalanced quotes")
        else:  # the common case: the csv module would return exactly this, 3x slower
            fields = text.split(",")
        if len(fields) == self._width:
            prefix = "" if self._prefix is None else fields[self._prefix]
            return (self.line, fields[self._phone], fields[self._name], prefix)
        if len(fields) == 1 and not text.strip():
            return None
        phone = fields[self._phone] if self._phone < len(fields) else ""
        name = fields[self._name] if self._name < len(fields) else ""
        return Rejected(
            self.line,
            phone,
            name,
            f"line: {_count(len(fields))}; the header has {self._width} ({self._header()})",
        )

    def _read_header(self, text: str) -> None:
        names = [f.strip().lower() for f in next(csv.reader((text,)))]
        for name in names:
            if name not in _COLUMNS:
                raise InvalidRequest(
                    f"line {self.line}: unknown column {name!r}; the first line names"
                    " the columns: phone, name and optionally prefix",
                    field="header",
                )
            if names.count(name) > 1:
                raise InvalidRequest(
                    f"line {self.line}: column {name!r} appears twice in the header",
                    field="header",
                )
        missing = [c for c in _REQUIRED if c not in names]
        if missing:
            raise InvalidRequest(
                f"line {self.line}: the header has no {' or '.join(missing)} column;"
                " the first line must name the columns, e.g. phone,name,prefix",
                field="header",
            )
        self._width = len(names)
        self._phone, self._name = names.index("phone"), names.index("name")
        self._prefix = names.index("prefix") if "prefix" in names else None

    @property
    def has_header(self) -> bool:
        """Whether the header line has been read (the columns are known)."""
        return self._width > 0

    def _header(self) -> str:
        columns = {self._phone: "phone", self._name: "name"}
        if self._prefix is not None:
            columns[self._prefix] = "prefix"
        return ",".join(columns[i] for i in range(self._width))

    def finish(self) -> None:
        """Check the end of input: a file without even a header is refused."""
        if not self._width:
            raise InvalidRequest(
                "no header line; the first line must name the columns, e.g. phone,name,prefix",
                field="header",
            )


def read_lines(lines: Iterable[str]) -> Iterator[RawRow | Rejected]:
    """Rows from lines of text (an open file): the importer's input."""
    reader = PhonebookReader()
    feed = reader.feed
    for text in lines:
        row = feed(text)
        if row is not None:
            yield row
    reader.finish()


async def read_lines_async(lines: AsyncIterable[bytes | str]) -> AsyncIterator[RawRow | Rejected]:
    """Rows from a stream of lines, e.g. ``aiohttp``'s ``request.content``.

    Bytes are read as UTF-8; a byte that is not becomes U+FFFD, so the row is
    rejected by the name or number rule instead of failing the whole import.
    """
    reader = PhonebookReader()
    async for chunk in lines:
        text = chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else chunk
        row = reader.feed(text)
        if row is not None:
            yield row
    reader.finish()


@dataclass(frozen=True, slots=True)
class Block:
    """Whole lines of a CSV after its header, with a reader positioned before the first.

    Self-contained and picklable: ``rows()`` gives what ``PhonebookReader``
    gives for the same lines, wherever it runs.
    """

    reader: PhonebookReader
    data: bytes

    def rows(self) -> Iterator[RawRow | Rejected]:
        """The rows of these lines, read as UTF-8 as ``read_lines_async`` reads them."""
        feed = copy.copy(self.reader).feed
        lines = self.data.decode("utf-8", "replace").split("\n")
        if not lines[-1]:
            lines.pop()  # what follows the last line break
        for text in lines:
            row = feed(text)
            if row is not None:
                yield row


async def read_blocks(
    chunks: AsyncIterable[bytes], block_bytes: int = BLOCK_BYTES
) -> AsyncIterator[Block]:
    """Blocks of about ``block_bytes`` of whole lines from a byte stream of any chunking.

    Only the header is parsed here; the buffer holds at most a block and a chunk. A line
    longer than ``block_bytes`` is refused (field ``body``).
    """
    reader = PhonebookReader()
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        if len(buffer) < block_bytes:
            continue
        end = buffer.rfind(b"\n") + 1
        if end:
            block = _block(reader, bytes(buffer[:end]))
            del buffer[:end]
            if block is not None:
                yield block
        if len(buffer) >= block_bytes:
            raise InvalidRequest(
                f"line {reader.line + 1} is longer than {block_bytes} bytes", field="body"
            )
    block = _block(reader, bytes(buffer))
    if block is not None:
        yield block
    reader.finish()


def _block(reader: PhonebookReader, data: bytes) -> Block | None:
    """``data``'s lines as a Block, after the header if not read yet; advances ``reader``."""
    while not reader.has_header and data:
        line, _, data = data.partition(b"\n")
        reader.feed(line.decode("utf-8", "replace"))
    if not data:
        return None
    block = Block(copy.copy(reader), data)
    reader.line += data.count(b"\n") + (not data.endswith(b"\n"))
    return block


def format_entry(entry: CnamEntry) -> str:
    """One line of an export, in HEADER's column order, quoted as RFC 4180 §2 asks."""
    return f"{_quoted(entry.phone)},{_quoted(entry.name)},{'true' if entry.prefix else 'false'}\n"


def _quoted(field: str) -> str:
    if any(c in field for c in ',"\r\n'):
        return '"' + field.replace('"', '""') + '"'
    return field


def _count(fields: int) -> str:
    return f"{fields} field" if fields == 1 else f"{fields} fields"
