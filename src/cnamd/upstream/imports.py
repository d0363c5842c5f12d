"""A provider's CSV into the upstream scope: ``phone,name`` with a header (extra
columns ignored, ``cnamd export``'s ``prefix`` among them). An empty name is a
negative answer. Shared by ``POST /api/operator/upstream/answers/import`` and
``cnamd upstream import``."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass

from cnamd.errors import CnamdError, InvalidRequest
from cnamd.numbers import normalize_number
from cnamd.settings import source_name_problem
from cnamd.store.upstream import Answer
from cnamd.upstream.source import clean_name

MAX_ROWS = 1_000_000


@dataclass(frozen=True, slots=True)
class Read:
    """The answers read, and the rows refused as (line, reason)."""

    answers: list[Answer]
    rejected: list[tuple[int, str]]


def check_source(source: str) -> str:
    """A source name as in settings (``[a-z0-9][a-z0-9_.-]*``), else InvalidRequest."""
    allowed = source_name_problem(source)
    if allowed:
        raise InvalidRequest(f"source must be {allowed}", field="source")
    return source


def read_csv(lines: Iterable[str], *, source: str, ttl: float, max_length: int) -> Read:
    """Every row as an Answer of ``source`` kept ``ttl`` seconds; bad rows rejected."""
    rows = csv.reader(lines)
    header = [h.strip().lower() for h in next(rows, [])]
    if "phone" not in header or "name" not in header:
        raise InvalidRequest("the CSV needs a header naming phone and name", field="file")
    phone_at, name_at = header.index("phone"), header.index("name")
    answers: list[Answer] = []
    rejected: list[tuple[int, str]] = []
    for line, row in enumerate(rows, start=2):
        if len(answers) + len(rejected) >= MAX_ROWS:
            raise InvalidRequest(f"at most {MAX_ROWS} rows per import", field="file")
        if not row:
            continue
        if len(row) <= max(phone_at, name_at):
            rejected.append((line, "missing columns"))
            continue
        try:
            number = normalize_number(row[phone_at])
        except CnamdError as exc:
            rejected.append((line, exc.reason))
            continue
        raw = row[name_at].strip()
        name = clean_name(raw, max_length) if raw else None
        if raw and name is None:
            rejected.append((line, f"name {raw[:40]!r} does not follow the name rule"))
            continue
        answers.append(Answer(number, name, source, ttl))
    return Read(answers, rejected)
