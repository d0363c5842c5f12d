"""The sampled SIP request log (setting ``sip.log_sample``): one line per logged message.

Off by default: at carrier rates a line per dip would cost more than the dip.
When on, the dip calls it after each message (``Dip.trace``) and it counts,
so ``0.01`` logs exactly every 100th message; only those are parsed again.
A SIP dip carries no credentials, so nothing here needs redacting.
"""

from __future__ import annotations

import logging

from cnamd.sip.dip import Answer
from cnamd.sip.message import CALL_ID, parse_request, split_uri

log = logging.getLogger("cnamd.sip.requests")


class SampledRequestLog:
    """``Dip.trace``: logs every ``every``-th message with its method, Call-ID and answer."""

    __slots__ = ("_seen", "every")

    def __init__(self, share: float) -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self.every = max(1, round(1 / share))
        self._seen = 0

    def __call__(
        self, data: bytes, source: tuple[str, int], transport: str, answer: Answer | None
    ) -> None:
        self._seen += 1
        if self._seen < self.every:
            return
        self._seen = 0
        req = parse_request(data)
        status = answer[0][8:11].decode("ascii", "replace") if answer is not None else "none"
        log.info(
            "sip request",
            extra={
                "method": _text(req.method) or "-",
                "user": _text(split_uri(req.uri)[1]) if req.uri else "-",
                "call_id": _text(req.header(CALL_ID) or b"-"),
                "source": f"{source[0]}:{source[1]}",
                "transport": transport,
                "status": status,
            },
        )


def _text(value: bytes, limit: int = 128) -> str:
    """Printable and bounded: a peer chooses these bytes."""
    text = value[:limit].decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "?" for c in text)


def request_log(share: float) -> SampledRequestLog | None:
    """The tracer for ``sip.log_sample``, or None when off."""
    return SampledRequestLog(share) if share > 0 else None
