"""Benchmark the name cache: build, snapshot write/open, lookups, memory, fork sharing.

    python bench/bench_cache.py --entries 1000000
    python bench/bench_cache.py --entries 10000000     # ~6 GB RAM, several minutes

Entry mix (--entries N, seeded): 80% global, 10% enterprise over 1,000 tenants,
5% usergroup over 5,000 usergroups, 5% user over 50,000 users; 90% full numbers of
10-13 digits, 10% prefixes of 4-9 digits. Names: half from 2,000 shared names
(businesses, "WIRELESS CALLER"...), half random person-like names (mostly unique),
at most 15 characters; --unique-names makes every name distinct (worst case for
the deduplicated blob).

Lookups: 200k (--lookups) through the full chain (user, usergroup, tenant, global;
the user is in the usergroup is in the tenant), half numbers extending a stored key
of any scope, half random numbers; timed one by one with perf_counter_ns, plus a
batch mean. They run on the snapshot mapped in forked workers, with 20k
(--overlay) live changes applied first (70% new keys, 15% renames, 15% deletes,
scopes mixed like the entries).

Memory: Pss / Private from /proc/self/smaps_rollup of each worker after the cache
is opened and changed, measured while all workers hold it (a barrier), minus the
worker's own figures before opening it.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import pickle
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from cnamd.cache.trie import CacheBuilder, NameCache
from cnamd.model import LookupContext, Scope

TENANTS, USERGROUPS, USERS = 1_000, 5_000, 50_000
SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ne",
    "su",
    "ta",
    "ri",
    "do",
    "pe",
    "an",
    "el",
    "or",
    "us",
    "ve",
    "zi",
    "ba",
    "go",
    "hu",
    "ja",
    "ko",
]
SHARED_NAMES = 2_000


@dataclass(frozen=True, slots=True)
class Workload:
    """What workers replay: live changes and lookups, generated once by the parent."""

    changes: list[tuple[Scope, int, str, str | None]]
    queries: list[tuple[str, LookupContext]]


def group_of(user: int) -> int:
    return user % USERGROUPS + 1


def tenant_of(group: int) -> int:
    return group % TENANTS + 1


def context_of(user: int) -> LookupContext:
    group = group_of(user)
    return LookupContext(tenant_id=tenant_of(group), usergroup_id=group, user_id=user)


def asker_of(rnd: random.Random, scope: Scope, owner: int) -> LookupContext:
    """A random user who sees namespace (scope, owner): its user, or one below it."""
    if scope is Scope.USER:
        return context_of(owner)
    if scope is Scope.ENTERPRISE:
        owner = owner - 1 + TENANTS * rnd.randrange(1, USERGROUPS // TENANTS)
    if scope is not Scope.GLOBAL:
        return context_of(owner - 1 + USERGROUPS * rnd.randrange(1, USERS // USERGROUPS))
    return context_of(rnd.randrange(1, USERS + 1))


def owner_for(rnd: random.Random) -> tuple[Scope, int]:
    draw = rnd.random()
    if draw < 0.80:
        return Scope.GLOBAL, 0
    if draw < 0.90:
        return Scope.ENTERPRISE, rnd.randrange(1, TENANTS + 1)
    if draw < 0.95:
        return Scope.USERGROUP, rnd.randrange(1, USERGROUPS + 1)
    return Scope.USER, rnd.randrange(1, USERS + 1)


def key_for(rnd: random.Random) -> str:
    digits = rnd.randrange(10, 14) if rnd.random() < 0.9 else rnd.randrange(4, 10)
    return "+" + str(rnd.randrange(10 ** (digits - 1), 10**digits))


def name_for(rnd: random.Random, unique: bool, serial: int) -> str:
    if unique:
        return f"{''.join(rnd.choices(SYLLABLES, k=3)).title()} {serial:x}"[:15]
    if rnd.random() < 0.5:
        return f"SHARED NAME {rnd.randrange(SHARED_NAMES)}"
    first = "".join(rnd.choices(SYLLABLES, k=2)).title()
    last = "".join(rnd.choices(SYLLABLES, k=rnd.randrange(2, 5))).title()
    return f"{first} {last}"[:15]


def generate(count: int, seed: int, unique: bool) -> list[tuple[Scope, int, str, str]]:
    rnd = random.Random(seed)
    return [(*owner_for(rnd), key_for(rnd), name_for(rnd, unique, i)) for i in range(count)]


def workload(entries: list[tuple[Scope, int, str, str]], args: argparse.Namespace) -> Workload:
    rnd = random.Random(args.seed + 1)
    changes: list[tuple[Scope, int, str, str | None]] = []
    for i in range(args.overlay):
        draw = rnd.random()
        if draw < 0.70:
            changes.append((*owner_for(rnd), key_for(rnd), f"Live {i}"))
        else:
            scope, owner, key, _ = rnd.choice(entries)
            changes.append((scope, owner, key, f"Renamed {i}" if draw < 0.85 else None))
    queries = []
    for _ in range(args.lookups):
        if rnd.random() < 0.5:
            scope, owner, key, _ = rnd.choice(entries)
            number = key + "".join(rnd.choices("0123456789", k=max(0, 12 - len(key))))
            queries.append((number, asker_of(rnd, scope, owner)))
        else:
            number = key_for(rnd) if rnd.random() < 0.2 else "+" + str(rnd.randrange(10**11))
            queries.append((number, context_of(rnd.randrange(1, USERS + 1))))
    return Workload(changes, queries)


def smaps() -> dict[str, int]:
    """This process's memory in bytes from /proc/self/smaps_rollup (Rss, Pss, Private...)."""
    figures = {}
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            field, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                figures[field] = int(rest.split()[0]) * 1024
    figures["Private"] = figures["Private_Clean"] + figures["Private_Dirty"]
    return figures


def cpu_model() -> str:
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def time_lookups(cache: NameCache, queries: list[tuple[str, LookupContext]]) -> dict[str, float]:
    lookup = cache.lookup
    clock = time.perf_counter_ns
    for number, ctx in queries[:20_000]:  # warm the interpreter's caches, not the data
        lookup(number, ctx)
    samples = []
    hits = 0
    gc.disable()
    for number, ctx in queries:
        start = clock()
        found = lookup(number, ctx)
        samples.append(clock() - start)
        hits += found is not None
    start = clock()
    for number, ctx in queries:
        lookup(number, ctx)
    batch = (clock() - start) / len(queries)
    gc.enable()
    samples.sort()
    return {
        "p50_us": samples[len(samples) // 2] / 1000,
        "p99_us": samples[len(samples) * 99 // 100] / 1000,
        "max_us": samples[-1] / 1000,
        "mean_us": statistics.fmean(samples) / 1000,
        "batch_mean_us": batch / 1000,
        "hit_rate": hits / len(queries),
    }


def apply_changes(cache: NameCache, changes: list[tuple[Scope, int, str, str | None]]) -> float:
    start = time.perf_counter_ns()
    for scope, owner, key, name in changes:
        if name is None:
            cache.delete(scope, owner, key)
        else:
            cache.put(scope, owner, key, name)
    return (time.perf_counter_ns() - start) / max(1, len(changes)) / 1000


def worker(
    snapshot: Path, workload_path: Path, barrier: Barrier, out: multiprocessing.Queue[Any]
) -> None:
    with workload_path.open("rb") as source:
        work: Workload = pickle.load(source)
    gc.collect()
    before = smaps()  # the interpreter and the workload, not the cache
    start = time.perf_counter()
    cache, _ = NameCache.open(snapshot)
    opened = time.perf_counter() - start
    change_us = apply_changes(cache, work.changes)
    gc.collect()
    barrier.wait()
    held = smaps()
    barrier.wait()
    timing = time_lookups(cache, work.queries)
    barrier.wait()
    after = smaps()
    barrier.wait()
    out.put(
        {
            "pid": os.getpid(),
            "open_s": opened,
            "change_us": change_us,
            "overlay": cache.overlay_size,
            "before": before,
            "held": held,
            "after": after,
            **timing,
        }
    )


def run_workers(args: argparse.Namespace) -> None:
    """Phase run in a fresh interpreter: fork N workers that map the same snapshot."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(args.workers)
    out: multiprocessing.Queue[Any] = context.Queue()
    procs = [
        context.Process(target=worker, args=(args.snapshot, args.workload, barrier, out))
        for _ in range(args.workers)
    ]
    for proc in procs:
        proc.start()
    results = [out.get() for _ in procs]
    for proc in procs:
        proc.join()
    print(json.dumps(results))


def run_open(args: argparse.Namespace) -> None:
    """Phase run in a fresh interpreter: time NameCache.open, cold (evicted) or warm."""
    if args.cold:
        fd = os.open(args.snapshot, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    start = time.perf_counter()
    cache, _ = NameCache.open(args.snapshot)
    opened = time.perf_counter() - start
    cache.close()
    with args.snapshot.open("rb") as source:
        data = source.read()
    start = time.perf_counter()
    zlib.crc32(data)
    crc = time.perf_counter() - start
    print(json.dumps({"open_s": opened, "crc_gb_s": len(data) / crc / 1e9}))


def run_breakdown(args: argparse.Namespace) -> None:
    """Phase run in a fresh interpreter: where a lookup's time goes (CPU ns per lookup).

    Batches of 100k, best of three, GC off: the bare trie walk of the global
    namespace, then lookups with and without the private scopes and the overlay.
    """
    cache, _ = NameCache.open(args.snapshot)
    with args.workload.open("rb") as source:
        work: Workload = pickle.load(source)
    queries = work.queries[:100_000]
    numbers = [number for number, _ in queries]
    trie = cache._trie  # the structure underneath, measured on purpose
    nobody = LookupContext()
    lookup = cache.lookup

    def walk() -> None:
        for number in numbers:
            for _ in trie.iter_prefixes_with_ids("d0" + number):
                pass

    def global_only() -> None:
        for number in numbers:
            lookup(number, nobody)

    def full_chain() -> None:
        for number, ctx in queries:
            lookup(number, ctx)

    def best(run: Any) -> float:
        fastest = float("inf")
        for _ in range(3):
            start = time.thread_time_ns()
            run()
            fastest = min(fastest, (time.thread_time_ns() - start) / len(queries))
        return fastest

    gc.collect()
    gc.disable()
    figures = {
        "walk_ns": best(walk),
        "global_only_ns": best(global_only),
        "full_chain_ns": best(full_chain),
    }
    apply_changes(cache, work.changes)
    figures["overlay_global_only_ns"] = best(global_only)
    figures["overlay_full_chain_ns"] = best(full_chain)
    print(json.dumps(figures))


def phase(args: argparse.Namespace, *extra: str) -> Any:
    command = [sys.executable, __file__, "--snapshot", str(args.snapshot), *extra]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=200_000)
    parser.add_argument("--overlay", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--unique-names", action="store_true")
    parser.add_argument("--dir", type=Path, default=None, help="where the snapshot goes")
    parser.add_argument("--phase", choices=["workers", "open", "breakdown"], help=argparse.SUPPRESS)
    parser.add_argument("--snapshot", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workload", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "workers":
        return run_workers(args)
    if args.phase == "open":
        return run_open(args)
    if args.phase == "breakdown":
        return run_breakdown(args)

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-cache-") as tmp:
        args.snapshot = Path(tmp) / "cache.snap"
        args.workload = Path(tmp) / "workload.pickle"
        report(args, measure(args))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    print(f"generating {args.entries:,} entries ...", file=sys.stderr)
    entries = generate(args.entries, args.seed, args.unique_names)
    with args.workload.open("wb") as sink:
        pickle.dump(workload(entries, args), sink)

    print("building ...", file=sys.stderr)
    builder = CacheBuilder()
    add = builder.add
    start = time.perf_counter()
    for entry in entries:
        add(*entry)
    figures["add_s"] = time.perf_counter() - start
    del entries
    gc.collect()
    start = time.perf_counter()
    cache = builder.build()
    figures["build_s"] = time.perf_counter() - start
    figures["live"] = len(cache)
    gc.collect()
    figures["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    start = time.perf_counter()
    cache.save(args.snapshot, b"bench")
    figures["save_s"] = time.perf_counter() - start
    figures["file_bytes"] = args.snapshot.stat().st_size

    with args.workload.open("rb") as source:
        work: Workload = pickle.load(source)
    apply_changes(cache, work.changes)
    print("timing lookups on the built (heap) cache ...", file=sys.stderr)
    figures["heap"] = time_lookups(cache, work.queries)
    del cache, work, builder
    gc.collect()

    print("opening cold and warm ...", file=sys.stderr)
    figures["open_cold"] = phase(args, "--phase", "open", "--cold")
    figures["open_warm"] = phase(args, "--phase", "open")
    print("breaking a lookup down ...", file=sys.stderr)
    figures["breakdown"] = phase(args, "--phase", "breakdown", "--workload", str(args.workload))
    for workers in sorted({1, args.workers}):
        print(f"forking {workers} worker(s) ...", file=sys.stderr)
        figures[f"workers_{workers}"] = phase(
            args, "--phase", "workers", "--workers", str(workers), "--workload", str(args.workload)
        )
    return figures


def report(args: argparse.Namespace, f: dict[str, Any]) -> None:
    n = f["live"]
    one = f["workers_1"][0]
    many = f[f"workers_{args.workers}"]

    def held(w: dict[str, Any], field: str) -> int:
        return int(w["held"][field] - w["before"][field])

    one_pss = held(one, "Pss")
    many_pss = sum(held(w, "Pss") for w in many)
    mib = 1024 * 1024
    rows = [
        ("entries (live after build)", f"{n:,}"),
        ("builder add() total", f"{f['add_s']:.2f} s ({f['add_s'] / n * 1e6:.2f} us/entry)"),
        ("builder build()", f"{f['build_s']:.2f} s"),
        ("builder share (add + build)", f"{f['add_s'] + f['build_s']:.2f} s"),
        ("snapshot file", f"{f['file_bytes'] / mib:.1f} MiB = {f['file_bytes'] / n:.1f} B/entry"),
        ("snapshot save()", f"{f['save_s']:.2f} s"),
        (
            "snapshot open() cold / warm",
            f"{f['open_cold']['open_s']:.2f} s / "
            f"{f['open_warm']['open_s']:.2f} s (crc32 {f['open_warm']['crc_gb_s']:.1f} GB/s)",
        ),
        (
            "peak RSS of the bench's build process",
            f"{f['peak_rss'] / mib:,.0f} MiB (entry tuples + builder dict + built cache)",
        ),
        (
            "1 worker: cache Pss / Private",
            f"{one_pss / mib:.1f} MiB ({one_pss / n:.1f} B/entry)"
            f" / {held(one, 'Private') / mib:.1f} MiB",
        ),
        (
            f"{args.workers} workers: cache Pss sum",
            f"{many_pss / mib:.1f} MiB = {many_pss / max(1, one_pss):.2f}x one worker",
        ),
        (
            f"{args.workers} workers: Private each",
            ", ".join(f"{held(w, 'Private') / mib:.1f} MiB" for w in many),
        ),
        (
            f"{args.workers} workers: whole processes (with workload), Pss sum",
            f"{sum(w['held']['Pss'] for w in many) / one['held']['Pss']:.2f}x one worker",
        ),
        ("live changes applied", f"{one['overlay']:,} records, {one['change_us']:.2f} us/change"),
    ]
    for label, timing in (("mapped, 1 worker", one), ("built heap", f["heap"])):
        rows.append(
            (
                f"lookup p50 / p99 ({label})",
                f"{timing['p50_us']:.2f} / {timing['p99_us']:.2f} us "
                f"(batch mean {timing['batch_mean_us']:.2f} us, "
                f"hits {timing['hit_rate']:.0%})",
            )
        )
    parts = f["breakdown"]
    rows.append(
        (
            "CPU per lookup, mapped (batch)",
            f"trie walk {parts['walk_ns'] / 1000:.2f} us; global only "
            f"{parts['global_only_ns'] / 1000:.2f} / with overlay "
            f"{parts['overlay_global_only_ns'] / 1000:.2f}; full chain "
            f"{parts['full_chain_ns'] / 1000:.2f} / with overlay "
            f"{parts['overlay_full_chain_ns'] / 1000:.2f} us",
        )
    )
    width = max(len(label) for label, _ in rows)
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\ncnamd cache benchmark: {os.cpu_count()} CPUs ({cpu_model()}), "
        f"Python {sys.version.split()[0]}, load average now {load}"
    )
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    print("\nreproduce: python bench/bench_cache.py " + " ".join(sys.argv[1:]))
    print(json.dumps(f), file=sys.stderr)


if __name__ == "__main__":
    main()
