"""Snapshot files: named byte sections in one file, written atomically and mapped read-only.

One file, so a snapshot is replaced by a single ``rename`` and can never be seen
half-written. marisa-trie 1.4.1 can ``map()`` any buffer, so the trie lives at an
offset inside the file next to the name arrays instead of in a file of its own.

Layout (little-endian; every section starts on a 64-byte boundary)::

    0   magic     8s   b"CNAMSNAP"
    8   crc32     I    zlib.crc32 of every byte from offset 12 to the end of the file
    12  version   I    FORMAT_VERSION
    16  size      Q    total file size: truncation is caught before the checksum runs
    24  count     I    number of sections
    28  reserved  I
    32  table     count x (tag 4s, reserved I, offset Q, length Q)

The checksum runs in C over the mapped pages (GB/s, bench/README.md), which also
pulls the file into the page cache that forked workers then share. It guards
against truncation and bit rot, not against a forged file: snapshots are trusted
input written by cnamd itself.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from cnamd.errors import SnapshotError

MAGIC = b"CNAMSNAP"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIIQII")
_ENTRY = struct.Struct("<4sIQQ")
_CRC_FROM = 12
_ALIGN = 64


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGN) * _ALIGN


def write_sections(path: Path, sections: Sequence[tuple[bytes, memoryview]]) -> None:
    """Write (tag, bytes) ``sections`` to ``path``: temp file, fsync, rename, fsync the dir."""
    _require_little_endian(path)
    views = [(tag, section.cast("B")) for tag, section in sections]
    offset = _aligned(_HEADER.size + len(views) * _ENTRY.size)
    table = bytearray()
    layout: list[tuple[int, memoryview]] = []
    for tag, view in views:
        if len(tag) != 4:
            raise ValueError(f"section tag {tag!r} must be 4 bytes")
        table += _ENTRY.pack(tag, 0, offset, view.nbytes)
        layout.append((offset, view))
        offset = _aligned(offset + view.nbytes)
    size = layout[-1][0] + layout[-1][1].nbytes if layout else len(table) + _HEADER.size
    head = bytearray(_HEADER.pack(MAGIC, 0, FORMAT_VERSION, size, len(views), 0)) + table

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        # owner-only: the metadata holds API keys' secret hashes
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "wb") as out:
            crc = zlib.crc32(memoryview(head)[_CRC_FROM:])
            out.write(head)
            written = len(head)
            for start, view in layout:
                pad = bytes(start - written)
                crc = zlib.crc32(view, zlib.crc32(pad, crc))
                out.write(pad)
                out.write(view)
                written = start + view.nbytes
            out.flush()
            os.pwrite(out.fileno(), struct.pack("<I", crc), 8)
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class MappedSnapshot:
    """A verified snapshot file mapped read-only; sections are zero-copy views.

    Every view handed out is released by ``close()``, which must come last:
    ``mmap.close()`` refuses while a view is alive, and anything built over a
    view (the marisa trie) must be dropped first.
    """

    __slots__ = ("_mmap", "_sections", "_views", "path")

    def __init__(self, path: Path, mapped: mmap.mmap, sections: dict[bytes, tuple[int, int]]):
        self.path = path
        self._mmap = mapped
        self._sections = sections
        self._views: list[memoryview] = []

    @property
    def buffer(self) -> mmap.mmap:
        """The whole mapping; slicing it copies out ``bytes`` (cheaper than a view per name)."""
        return self._mmap

    def has(self, tag: bytes) -> bool:
        """Whether the file holds section ``tag`` (an optional one may be absent)."""
        return tag in self._sections

    def offset(self, tag: bytes) -> int:
        """Absolute file offset of section ``tag``."""
        return self._section(tag)[0]

    def view(self, tag: bytes) -> memoryview:
        """Section ``tag`` as a zero-copy byte view."""
        start, length = self._section(tag)
        whole = memoryview(self._mmap)
        part = whole[start : start + length]
        self._views += (whole, part)
        return part

    def words(self, tag: bytes, fmt: Literal["I", "Q"]) -> memoryview:
        """Section ``tag`` as a zero-copy view of native (here: little-endian) uint32 / uint64."""
        part = self.view(tag)
        if len(part) % struct.calcsize(fmt):
            raise SnapshotError(f"section {tag!r} is not whole {fmt!r} words", field=str(self.path))
        words = part.cast(fmt)
        self._views.append(words)
        return words

    def close(self) -> None:
        """Release every view and unmap; idempotent."""
        for view in reversed(self._views):
            view.release()
        self._views.clear()
        self._mmap.close()

    def _section(self, tag: bytes) -> tuple[int, int]:
        try:
            return self._sections[tag]
        except KeyError:
            raise SnapshotError(f"section {tag!r} missing", field=str(self.path)) from None


def map_sections(path: Path) -> MappedSnapshot:
    """Map ``path``; verify magic, version, size and checksum, else raise SnapshotError."""
    _require_little_endian(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise SnapshotError(f"cannot open: {exc.strerror}", field=str(path)) from exc
    try:
        size = os.fstat(fd).st_size
        if size < _HEADER.size:
            raise SnapshotError(f"truncated: {size} bytes, shorter than a header", field=str(path))
        mapped = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    try:
        sections = _verify(path, mapped, size)
    except BaseException:
        mapped.close()
        raise
    return MappedSnapshot(path, mapped, sections)


def _verify(path: Path, mapped: mmap.mmap, size: int) -> dict[bytes, tuple[int, int]]:
    def bad(reason: str) -> SnapshotError:
        return SnapshotError(reason, field=str(path))

    magic, crc, version, recorded, count, _ = _HEADER.unpack_from(mapped, 0)
    if magic != MAGIC:
        raise bad(f"not a cnamd snapshot (magic {magic!r})")
    if version != FORMAT_VERSION:
        raise bad(f"format version {version}, this cnamd reads version {FORMAT_VERSION}")
    if recorded != size:
        raise bad(f"truncated or padded: header says {recorded} bytes, file has {size}")
    table_end = _HEADER.size + count * _ENTRY.size
    if table_end > size:
        raise bad(f"section table of {count} entries runs past the end of the file")
    with memoryview(mapped) as whole, whole[_CRC_FROM:] as body:
        actual = zlib.crc32(body)
    if actual != crc:
        raise bad(f"checksum mismatch (stored {crc:#010x}, computed {actual:#010x}): corrupt")
    sections: dict[bytes, tuple[int, int]] = {}
    for i in range(count):
        tag, _, start, length = _ENTRY.unpack_from(mapped, _HEADER.size + i * _ENTRY.size)
        if start < table_end or start + length > size or tag in sections:
            raise bad(f"section {tag!r} at {start}+{length} is out of bounds or repeated")
        sections[tag] = (start, length)
    return sections


def _require_little_endian(path: Path) -> None:
    if sys.byteorder != "little":
        raise SnapshotError("snapshots are little-endian; this host is not", field=str(path))
