"""The held upstream answers' file: written once per host beside the snapshot, mapped by all.

Each process used to hold every upstream answer in a dict of its own, read from
PostgreSQL at start-up (~160 B per answer per process). The loader child now
writes them, from the same REPEATABLE READ snapshot as the names' base, to
``<snapshot>.upstream``; the supervisor and every worker map it read-only (one
copy in the page cache for the host) and apply the changes since its build on
top, in memory (``cache/upstream.py``).

The file is a snapshot container (``cache/snapshot.py``: written atomically by
rename, checksummed, version-checked on open) with two sections: ``UPST``, the
C hash table (``cache/_held.c``, its own magic and version), and ``META``, JSON
with this module's own ``format``, the ``base_id`` of the names' base it was
built with and the change id it reflects. A file of another format, another
base or a torn one is refused (SnapshotError); the caller then reads the
answers from PostgreSQL as before, and the next full load writes it again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnamd.cache.snapshot import MappedSnapshot, map_sections, write_sections
from cnamd.errors import SnapshotError

try:
    from cnamd.cache import _held
except ImportError:  # pragma: no cover - CNAMD_PURE_PYTHON: every process loads its own dict
    _held = None  # type: ignore[assignment]

FORMAT = 1
_INF = float("inf")

#: (number, name or None, source, expires epoch; None: pinned), as store/upstream.py reads them
Row = tuple[str, str | None, str, float | None]


def held_path(snapshot: Path) -> Path:
    """Where the held answers built with the names' base at ``snapshot`` are kept."""
    return snapshot.with_name(snapshot.name + ".upstream")


def available() -> bool:
    """Whether this build can write and map the file (the C table is compiled)."""
    return _held is not None


def write_held(path: Path, rows: Sequence[Row], *, base_id: str, last_change_id: int) -> None:
    """Write ``rows`` to ``path`` (temp file, fsync, rename) for the base ``base_id``."""
    assert _held is not None, "the held answers' table is not compiled"
    sources: dict[str, int] = {}
    packed: list[tuple[str, str | None, int, float]] = []
    extra: list[Row] = []  # numbers the table cannot pack (never seen: E.164 is 15 digits)
    for number, name, source, expires in rows:
        if not _held.packable(number):
            extra.append((number, name, source, expires))
            continue
        index = sources.setdefault(source, len(sources))
        packed.append((number, name, index, _INF if expires is None else expires))
    meta = {
        "format": FORMAT,
        "base_id": base_id,
        "last_change_id": last_change_id,
        "sources": list(sources),
        "extra": extra,
    }
    table = _held.build(packed)
    encoded = json.dumps(meta).encode()
    write_sections(path, [(b"UPST", memoryview(table)), (b"META", memoryview(encoded))])


@dataclass(frozen=True, slots=True)
class HeldFile:
    """A verified held-answers file, mapped; ``close()`` last (it releases the table first)."""

    table: Any  # _held.Table (Any: the module may be absent in a pure Python build)
    sources: tuple[str, ...]
    extra: tuple[Row, ...]
    base_id: str
    last_change_id: int
    snapshot: MappedSnapshot

    @classmethod
    def open(cls, path: Path) -> HeldFile:
        """Map and check ``path``; SnapshotError (nothing left mapped) if it is not sound."""
        if _held is None:
            raise SnapshotError("the held answers' table is not compiled", field=str(path))
        snapshot = map_sections(path)
        try:
            meta = _read_meta(bytes(snapshot.view(b"META")), path)
            try:
                table = _held.Table(snapshot.view(b"UPST"))
            except ValueError as exc:
                raise SnapshotError(str(exc), field=str(path)) from exc
            extra = tuple((n, name, s, e) for n, name, s, e in meta["extra"])
            return cls(
                table,
                tuple(meta["sources"]),
                extra,
                meta["base_id"],
                meta["last_change_id"],
                snapshot,
            )
        except BaseException:
            snapshot.close()
            raise

    def close(self) -> None:
        """Release the table, then unmap; idempotent."""
        self.table.release()
        self.snapshot.close()


def _read_meta(raw: bytes, path: Path) -> dict[str, Any]:
    try:
        meta: dict[str, Any] = json.loads(raw)
        if meta.get("format") != FORMAT:
            raise SnapshotError(
                f"held answers' format {meta.get('format')!r}, this cnamd reads {FORMAT}",
                field=str(path),
            )
        for field in ("base_id", "last_change_id", "sources", "extra"):
            if field not in meta:
                raise SnapshotError(f"held answers' metadata lacks {field}", field=str(path))
    except (ValueError, AttributeError) as exc:
        raise SnapshotError(f"unreadable held answers' metadata: {exc}", field=str(path)) from exc
    return meta
