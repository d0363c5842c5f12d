"""PostgreSQL's binary COPY stream of served rows, read in Python.

The full load streams ``COPY (SELECT scope, owner_id, key, name ...) TO STDOUT
(FORMAT binary)`` (``store/entries.copy_served``): no escaping to undo, and the
C builder (``cache/_builder.c``) parses it without a Python object per row. This
is its twin for a build without a C compiler, and the reference the tests hold
the C parser to. Format: PostgreSQL's documentation, "COPY", "Binary Format".
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from cnamd.model import Scope

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
# the trie's scopes (upstream answers are not in cnam_entries)
_SCOPES = {
    scope.label.encode(): scope
    for scope in (Scope.USER, Scope.USERGROUP, Scope.ENTERPRISE, Scope.GLOBAL)
}
_HEADER = struct.Struct(">11sII")  # signature, flags, header extension length
_COUNT = struct.Struct(">h")  # fields in a row; -1 ends the stream
_LENGTH = struct.Struct(">i")  # a field's length; -1 is NULL


def copy_rows(data: bytes | bytearray) -> Iterator[tuple[Scope, int, str, str]]:
    """(scope, owner, key, name) of every row in a whole stream; ValueError if malformed."""
    try:
        signature, _flags, extension = _HEADER.unpack_from(data, 0)
        if signature != SIGNATURE:
            raise ValueError("COPY stream: not PostgreSQL's binary format")
        at = _HEADER.size + extension
        while True:
            (fields,) = _COUNT.unpack_from(data, at)
            at += _COUNT.size
            if fields == -1:
                break
            if fields != 4:
                raise ValueError(f"COPY stream: rows of {fields} columns, expected 4")
            values = []
            for _ in range(4):
                (length,) = _LENGTH.unpack_from(data, at)
                at += _LENGTH.size
                if length < 0 or at + length > len(data):
                    raise ValueError("COPY stream: a NULL column or a row cut short")
                values.append(bytes(data[at : at + length]))
                at += length
            scope, owner, key, name = values
            if scope not in _SCOPES or len(owner) != 8:
                raise ValueError("COPY stream: unknown scope or an owner_id not int8")
            yield (
                _SCOPES[scope],
                int.from_bytes(owner, "big", signed=True),
                key.decode("ascii"),
                name.decode(),
            )
    except struct.error as exc:
        raise ValueError(f"COPY stream cut short: {exc}") from exc
    if at != len(data):
        raise ValueError("COPY stream: data after its trailer")
