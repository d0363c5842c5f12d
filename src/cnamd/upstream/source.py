"""What one upstream source answers, and the rule an upstream name must follow."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Protocol

from cnamd.names import is_valid_name
from cnamd.settings import SourceSettings


class Result(enum.Enum):
    """How one request to a source ended (the ``result`` label of its metrics)."""

    HIT = "hit"  # a name
    MISS = "miss"  # the source knows no name: cached as negative
    ERROR = "error"  # 5xx, garbage, a refused connection: not cached
    TIMEOUT = "timeout"  # not a negative answer either: not cached
    BREAKER_OPEN = "breaker-open"  # not asked: the source failed lately
    OVER_BUDGET = "over-budget"  # not asked: today's budget is spent
    RATE_LIMITED = "rate-limited"  # not asked: over its request rate
    BUDGET_UNAVAILABLE = "budget-unavailable"  # not asked: the budget's ledger unreachable


@dataclass(frozen=True, slots=True)
class Outcome:
    """One source's answer: ``name`` set only on HIT."""

    result: Result
    name: str | None = None


ERROR = Outcome(Result.ERROR)
MISS = Outcome(Result.MISS)


class Source(Protocol):
    """One provider client; ``fetch`` never raises (but may be cancelled)."""

    settings: SourceSettings

    async def fetch(self, number: str) -> Outcome: ...

    async def close(self) -> None: ...


_SPACES = re.compile(r"\s+")


def clean_name(raw: object, max_length: int) -> str | None:
    """An upstream name made to follow cnamd's name rule (trimmed, inner runs of spaces
    folded, cut to ``max_length``), or None when it cannot (not text, another alphabet,
    empty): then the source is taken to know no name."""
    if not isinstance(raw, str):
        return None
    name = _SPACES.sub(" ", raw).strip()[:max_length].strip()
    return name if is_valid_name(name, max_length) else None


def covers(settings: SourceSettings, number: str) -> bool:
    """Whether ``number`` (E.164) is in one of the source's countries (all when none)."""
    return not settings.countries or number.startswith(settings.countries)
