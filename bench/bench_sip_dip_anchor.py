"""In process: one dip (INVITE + its ACK) through the real lookup on the anchor's names.

``Dip.answer_udp`` over sipp-shaped INVITE/ACK pairs, one per calling number of the
anchor's ``calls.csv``, with the daemon's directory opened from the sitting's snapshot
(``bench/sip_anchor.sh`` writes both), an ACL of 0.0.0.0/0 and a rate limiter that never
refuses. Then the lookup's layers alone. Best and median of 7 passes; no sockets, so the
kernel's share of a dip is not here (``sip_anchor.sh`` measures that).

Reproduce: ``.venv/bin/python bench/bench_sip_dip_anchor.py /tmp/cnamd-sip-anchor [N]``
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cnamd.cache.contexts import Contexts
from cnamd.cache.directory import Directory
from cnamd.callers import DirectoryCallers
from cnamd.model import GLOBAL_ONLY, Digest
from cnamd.ratelimit import TokenBucket
from cnamd.replica.loader import open_snapshot
from cnamd.sip import Dip, DipSettings

CALLED = "+12125550001"
SOURCE = ("127.0.0.1", 5061)
INVITE = (
    "INVITE sip:+12125550001@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-{i}-0\r\n"
    "From: <sip:{n}@127.0.0.1>;tag=1SIPpTag00{i}\r\n"
    "To: <sip:+12125550001@127.0.0.1:5060>\r\n"
    "Call-ID: {i}-1@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:sipp@127.0.0.1:5061>\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: 0\r\n\r\n"
)
ACK = (
    "ACK sip:+12125550001@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-{i}-0\r\n"
    "From: <sip:{n}@127.0.0.1>;tag=1SIPpTag00{i}\r\n"
    "To: <sip:+12125550001@127.0.0.1:5060>;tag=cnamd-1234abcd\r\n"
    "Call-ID: {i}-1@127.0.0.1\r\n"
    "CSeq: 1 ACK\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: 0\r\n\r\n"
)


def per_item_us(fn: Callable[[Any], object], items: Sequence[Any], passes: int = 7) -> list[float]:
    """Microseconds per item of each pass, sorted."""
    times = []
    for _ in range(passes):
        started = time.perf_counter()
        for item in items:
            fn(item)
        times.append((time.perf_counter() - started) / len(items) * 1e6)
    return sorted(times)


def main() -> None:
    data = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/cnamd-sip-anchor")
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 40000
    cache, meta = open_snapshot(data / "cache.snapshot")
    directory = Directory()
    directory.install(
        cache, Contexts.from_json(meta["contexts"], ["0.0.0.0/0"]), Digest(0, 0, 0), stale=False
    )
    callers = DirectoryCallers(directory)
    dip = Dip(DipSettings(), callers, limiter=TokenBucket(1e6, 1e6))
    numbers = (data / "calls.csv").read_text().split()[1 : count + 1]
    invites = [INVITE.format(i=i, n=n).encode() for i, n in enumerate(numbers)]
    acks = [ACK.format(i=i, n=n).encode() for i, n in enumerate(numbers)]
    pairs = [m for pair in zip(invites, acks, strict=True) for m in pair]

    def answer(message: bytes) -> object:
        return dip.answer_udp(message, SOURCE)

    gc.disable()
    both = [2 * t for t in per_item_us(answer, pairs)]
    rows = [
        ("INVITE + ACK", both),
        ("INVITE", per_item_us(answer, invites)),
        ("ACK", per_item_us(answer, acks)),
        (
            "DirectoryCallers.caller_name",
            per_item_us(lambda n: callers.caller_name(n, CALLED, SOURCE[0]), numbers),
        ),
        (
            "NameCache.lookup (global only)",
            per_item_us(lambda n: cache.lookup(n, GLOBAL_ONLY), numbers),
        ),
    ]
    index = cache._index
    if index is not None:
        rows.append(("global index match()", per_item_us(index.match, numbers)))
    print(f"{len(numbers)} calling numbers from {data}, best / median of 7 passes, us")
    for name, times in rows:
        print(f"  {name:34} {times[0]:6.2f} / {times[3]:6.2f}")
    print("reproduce: .venv/bin/python bench/bench_sip_dip_anchor.py", data)


if __name__ == "__main__":
    main()
