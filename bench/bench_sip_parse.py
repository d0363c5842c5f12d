"""Microbenchmark: Python cost of one SIP dip (parse + decide + serialize), no sockets.

Times ``Dip.handle`` on a sipp-shaped INVITE (the kamailio-anchor scenario) with a
trivial in-memory directory whose answers are built once, so the figure is the SIP
front's own cost. Reproduce: ``.venv/bin/python bench/bench_sip_parse.py``
"""

from __future__ import annotations

import sys
import time

from cnamd.lookup import NameAnswer, NameKind
from cnamd.sip import Dip, DipSettings
from cnamd.sip.message import parse_request

INVITE = (
    b"INVITE sip:+12125550001@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-12345-1-0\r\n"
    b"From: <sip:+492216698712@127.0.0.1>;tag=12345SIPpTag001\r\n"
    b"To: <sip:+12125550001@127.0.0.1:5060>\r\n"
    b"Call-ID: 1-12345@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:sipp@127.0.0.1:5061>\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n\r\n"
)
HIT = NameAnswer(NameKind.HIT, "John Doe", "+492216698712")
MISS = NameAnswer(NameKind.MISS, "", "+492216698712")


class FixedNames:
    """Answers instantly: the directory's cost is not the SIP front's."""

    def __init__(self, answer: NameAnswer) -> None:
        self.answer = answer

    def admit(self, source_ip: str) -> bool:
        return True

    def caller_name(self, calling: str, called: str, source_ip: str) -> NameAnswer:
        return self.answer

    def later(self, pending: object, done: object) -> None:
        raise AssertionError("never PENDING")


def per_call_us(fn: object, arg: tuple[object, ...], seconds: float = 2.0) -> float:
    """Best of 5 runs of the median-length loop, in microseconds per call."""
    call = fn  # type: ignore[assignment]
    n = 1000
    while True:  # calibrate to ~seconds/5 per run
        t = time.perf_counter()
        for _ in range(n):
            call(*arg)  # type: ignore[operator]
        if time.perf_counter() - t > seconds / 5 or n > 10_000_000:
            break
        n *= 2
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            call(*arg)  # type: ignore[operator]
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


def main() -> None:
    source = ("127.0.0.1", 5061)
    hit = Dip(DipSettings(), FixedNames(HIT))
    miss = Dip(DipSettings(), FixedNames(MISS))
    options = INVITE.replace(b"INVITE", b"OPTIONS")
    rows = [
        ("parse_request(INVITE)", per_call_us(parse_request, (INVITE,))),
        ("Dip.handle INVITE -> 302", per_call_us(hit.handle, (INVITE, source, "udp"))),
        ("Dip.handle INVITE -> 404", per_call_us(miss.handle, (INVITE, source, "udp"))),
        ("Dip.handle OPTIONS -> 200", per_call_us(hit.handle, (options, source, "udp"))),
    ]
    print(f"python {sys.version.split()[0]}")
    for label, us in rows:
        print(f"{label:28} {us:6.2f} us")
    print("reproduce: .venv/bin/python bench/bench_sip_parse.py")


if __name__ == "__main__":
    main()
