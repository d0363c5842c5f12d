"""Bare-digit readings per second: number_readings() on the HTTP benchmark's kind of numbers.

The call list of bench/http_anchor.sh (../shared/bench/kamailio-anchor/gen-data.py): ``+1``
and 10 random digits from 2000000000-9999999999, asked as bare digits (``1NXXNXXXXXX``) by
a tenant in region US; about 54% of them are not valid NANP numbers (refused, 400).

    .venv/bin/python bench/bench_numbers.py [COUNT]

To compare with another commit in the same sitting: ``PYTHONPATH=/tmp/base/src`` (a
``git archive`` of it) and the same command.
"""

from __future__ import annotations

import random
import sys
import time

from cnamd.errors import InvalidNumber
from cnamd.numbers import number_readings


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    rng = random.Random(7)
    calls = [f"1{rng.randint(2_000_000_000, 9_999_999_999)}" for _ in range(count)]
    best = float("inf")
    refused = 0
    for _ in range(3):
        refused = 0
        start = time.perf_counter()
        for raw in calls:
            try:
                number_readings(raw, "US")
            except InvalidNumber:
                refused += 1
        best = min(best, time.perf_counter() - start)
    print(
        f"{count} bare US numbers ({refused / count:.0%} refused): best of 3"
        f" {count / best:,.0f} readings/s, {best / count * 1e6:.1f} us each"
    )


if __name__ == "__main__":
    main()
