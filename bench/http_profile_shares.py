"""Where an HTTP lookup's CPU goes: a ``py-spy record -f raw`` profile of the daemon grouped.

Each sample's stack goes to the first group whose test it passes: the socket send, the
number's readings, the rest of ``FastLookups.answer``, the connection front, aiohttp's
request side, the event loop, the rest (bench/README.md, "The connection front").

    .venv/bin/py-spy record -r 250 -f raw -o prof.txt -p PID -d 10   # while wrk runs
    .venv/bin/python bench/http_profile_shares.py prof.txt [more.txt ...]
"""

from __future__ import annotations

import collections
import re
import sys
from collections.abc import Callable

Stack = list[str]

GROUPS: list[tuple[str, Callable[[Stack], bool]]] = [
    (
        "the socket send (transport.write)",
        lambda f: f[-1] in ("RawAnswer.prepare", "LookupFront._write"),
    ),
    ("number readings (numbers.py, validity.py)", lambda f: "number_readings" in f),
    ("FastLookups.answer, the rest", lambda f: "FastLookups.answer" in f),
    ("the front: head scan, answer bytes, buffer", lambda f: "LookupFront.data_received" in f),
    (
        "aiohttp's request side (parser, request, task, response)",
        lambda f: any(x.startswith("RequestHandler") for x in f),
    ),
    ("the event loop (uvloop)", lambda f: f[-1] == "Runner.run"),
    ("other (change feed, order worker, start-up)", lambda f: True),
]


def shares(path: str) -> tuple[int, collections.Counter[str]]:
    """The samples in ``path`` and how many fell in each group."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as lines:
        for line in lines:
            stack, _, n = line.rstrip().rpartition(" ")
            if not stack:
                continue
            frames = [re.sub(r" \(.*?:\d+\)$", "", f) for f in stack.split(";")]
            total += int(n)
            counts[next(name for name, test in GROUPS if test(frames))] += int(n)
    return total, counts


def main() -> None:
    for path in sys.argv[1:]:
        total, counts = shares(path)
        print(f"{path}: {total} samples")
        for name, _ in GROUPS:
            print(f"  {100 * counts[name] / max(total, 1):5.1f}%  {name}")


if __name__ == "__main__":
    main()
