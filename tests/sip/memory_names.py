"""A trivial in-memory CallerNames for SIP tests and the demo responder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cnamd.lookup import NameAnswer, NameKind

DEMO = {"+492216698712": "John Doe", "+4930123456": 'Dr. "Quote" \\ Backslash'}


@dataclass
class MemoryNames:
    """Numbers must be E.164 (``+`` and digits) or national German (``0...``); ``denied``
    sources are outside the ACL; ``calls`` records what the dip asked."""

    names: dict[str, str] = field(default_factory=lambda: dict(DEMO))
    denied: set[str] = field(default_factory=set)
    deny_numbers: set[str] = field(default_factory=set)
    calls: list[tuple[str, str, str]] = field(default_factory=list)

    def admit(self, source_ip: str) -> bool:
        return source_ip not in self.denied

    def caller_name(self, calling: str, called: str, source_ip: str) -> NameAnswer:
        self.calls.append((calling, called, source_ip))
        number = calling
        if number.startswith("0") and number[1:].isdigit():
            number = "+49" + number[1:]
        if not (number.startswith("+") and number[1:].isdigit() and 2 < len(number) <= 16):
            return NameAnswer(NameKind.INVALID)
        if number in self.deny_numbers:
            return NameAnswer(NameKind.DENIED)
        name = self.names.get(number)
        if name is None:
            return NameAnswer(NameKind.MISS, number=number)
        return NameAnswer(NameKind.HIT, name, number)

    def later(self, pending: NameAnswer, done: Callable[[NameAnswer], None]) -> None:
        done(NameAnswer(NameKind.MISS, number=pending.number))  # never PENDING: no upstream here
