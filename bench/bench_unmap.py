#!/usr/bin/env python3
"""What the event loop pays when a reload replaces the mapped cache: ``close()`` on the
loop (before ``NameCache.retire``) against ``retire()`` on the loop with the unmapping
on a thread (the feed since then).

    .venv/bin/python bench/bench_unmap.py [--entries 1000000 3000000] [--rounds 3]

Per size: builds a cache of N entries (bench_cache.py's mix), saves it, then each round
maps the snapshot, answers 100k lookups from it (its pages touched as a worker's are),
replaces the file by a rename as the loader does, and times the loop's part of the
swap. The replaced file's page cache is freed by whichever thread drops its last
mapping, so that is what moves off the loop.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench_cache import context_of, generate, key_for

from cnamd.cache.trie import CacheBuilder, NameCache


def mapped_and_used(path: Path, numbers: list[str]) -> NameCache:
    cache, _ = NameCache.open(path)
    rnd = random.Random(7)
    for number in numbers:
        cache.lookup(number, context_of(rnd.randrange(1, 1000)))
    return cache


def longest_gap(during: threading.Thread) -> float:
    """The longest wait of a 0.2 ms sleep loop (a stand-in for the event loop's thread,
    which needs the GIL to run) while ``during`` runs: what of its work holds the GIL."""
    worst, last = 0.0, time.perf_counter()
    during.start()
    while during.is_alive():
        time.sleep(0.0002)
        now = time.perf_counter()
        worst, last = max(worst, now - last), now
    during.join()
    return worst


def replace(path: Path) -> None:
    """A new file renamed over ``path``: the mapped one is now unlinked."""
    fresh = path.with_suffix(".new")
    shutil.copyfile(path, fresh)
    fresh.rename(path)


def main(sizes: list[int], rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="cnamd-unmap-bench-") as tmp:
        for size in sizes:
            builder = CacheBuilder()
            for scope, owner, key, name in generate(size, 1, False):
                builder.add(scope, owner, key, name)
            path = Path(tmp) / f"cache-{size}.snapshot"
            built = builder.build()
            built.save(path, b'{"last_change_id": 1}')
            built.close()
            rnd = random.Random(3)
            numbers = [key_for(rnd) + "0000" for _ in range(100_000)]
            megabytes = path.stat().st_size / 1e6
            loop: dict[str, list[float]] = {"close": [], "retire": []}
            thread: list[float] = []
            held: list[float] = []
            for _ in range(rounds):
                for way in ("close", "retire"):
                    cache = mapped_and_used(path, numbers)
                    replace(path)
                    started = time.perf_counter()
                    if way == "close":
                        cache.close()
                        loop[way].append(time.perf_counter() - started)
                        continue
                    unmap = cache.retire()
                    loop[way].append(time.perf_counter() - started)
                    done: list[float] = []

                    def timed(unmap=unmap, done=done) -> None:  # type: ignore[no-untyped-def]
                        began = time.perf_counter()
                        unmap()
                        done.append(time.perf_counter() - began)

                    held.append(longest_gap(threading.Thread(target=timed)))
                    thread.extend(done)
            print(
                f"{size:>10,} entries, snapshot {megabytes:.0f} MB: on the loop, close"
                f" {statistics.median(loop['close']) * 1e3:.2f} ms, retire"
                f" {statistics.median(loop['retire']) * 1e3:.3f} ms (median of {rounds});"
                f" the unmapping thread {statistics.median(thread) * 1e3:.2f} ms, the loop's"
                f" longest wait meanwhile {statistics.median(held) * 1e3:.2f} ms",
                flush=True,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, nargs="+", default=[1_000_000, 3_000_000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    main(args.entries, args.rounds)
