#!/usr/bin/env python3
"""SIP dip and HTTP lookup latency of a real daemon, idle and during concurrent CSV uploads.

    .venv/bin/python bench/bench_upload_latency.py [--workers 1 2] [--mb 10] [--uploads 2]
        [--idle 5] [--timeline] [--rounds 1] [--floor] [--limit-rate 10M] [--dump DIR]
        [--cpus 0] [--client anywhere|serving|aside]

For each ``--workers`` value: starts ``cnamd serve --demo --workers N`` on an
embedded PostgreSQL in a fresh temporary directory, makes a partner key with
``cnamd apikey create``, then measures open-loop (requests are sent on a
fixed schedule whatever the answers do, so a stall counts in full):
- SIP dips: UDP INVITEs every 2 ms (500/s), each matched to its final
  answer by Call-ID;
- HTTP lookups: ``GET /v1/lookup/+492216698712?tenant=demo`` every 5 ms
  (200/s), each on its own task over a pool of keep-alive connections;
first for ``--idle`` seconds with nothing else, then from the start of
``--uploads`` concurrent ``POST /api/partner/enterprise/demo/cnam-import``
of ``--mb`` MB each (distinct numbers, sent by curl processes, so the
uploads cost this client nothing) until the last is answered. Prints p50,
p99 and max per phase, each answer timed on arrival (the kernel's receive
time: the daemon's latency) and, as "seen", when this client's loop got to it
(arrival_clients.py says why both). With ``--rounds K``, K fresh daemons per
``--workers`` value, then each round's ratio and the ratio of all rounds' samples
pooled: the idle p99 alone moves 2x from one start to the next on a small VM. With
``--floor`` the uploads are not sent to the daemon: ``cnamd import`` runs the same
imports into a second database of its PostgreSQL, which no worker follows, so the
figures are this host's share of the tail without cnamd's (bench/README.md, "The
host's share"). ``--cpus`` sets the daemon's ``server.cpus`` and ``--client`` says where
this client runs beside it (bench/README.md, "A core kept for serving, timed on
arrival"). ``--dump DIR`` writes the uploads' answers over twice the idle p99 as windows
for ``late_ticks/who_ran.py``. The daemon's code is whatever ``cnamd`` imports:
set PYTHONPATH to another checkout's src to measure that one.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import loop_lag_reading
import psutil
from arrival_clients import Dips, Lookups, Sample
from demo_daemon import CLI, demo, environment

from cnamd.settings import parse_cpus as parse

DIP_EVERY = 0.002
LOOKUP_EVERY = 0.005
IDLE = 5.0  # seconds measured idle (--idle)
TIMELINE = False  # --timeline
ROUNDS = 1  # --rounds
WARM = False  # --warm-upload: the first body is a small upload sent before the idle phase
CPUS = ""  # --cpus: the daemon's server.cpus
CLIENT = "anywhere"  # --client: where this client runs with --cpus (serving: curl aside)
ASIDE: list[str] = []  # taskset prefix of the curl uploads with --client serving or aside
FLOOR = False  # --floor: the same imports by `cnamd import` into a database not served
LIMIT_RATE = ""  # --limit-rate: each curl's sending rate (curl's syntax, e.g. 10M)
DUMP = ""  # --dump: a directory for the over-bound answers, in late_ticks' format
NOTABLE = 12  # the daemon's warnings, errors and cache reloads printed per sitting
NOTABLE_MARKS = (
    "level=warning",
    "level=error",
    "Traceback",
    "too large",
    "mapped from snapshot",
    "cache load built",
    "cache swapped",
)


def csv_body(mb: int, seed: int) -> bytes:
    rows, size, i = ["phone,name\n"], 0, 0
    while size < mb * 10**6:
        row = f"+1{300 + seed}{2000000 + i:07d},Bulk {i}\n"
        rows.append(row)
        size += len(row)
        i += 1
    return "".join(rows).encode()


Samples = list[Sample]  # (sent at on perf_counter, latency on arrival, latency seen)


async def measure(
    base: str, sip: tuple[str, int], done: asyncio.Future[object]
) -> tuple[Samples, Samples, int]:
    """Dip and lookup latencies until ``done``; and how many dips went unanswered."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    dips = Dips(sip)
    lookups = Lookups((host, int(port)), "/v1/lookup/+492216698712?tenant=demo")
    tasks: set[asyncio.Task[None]] = set()
    try:
        start = time.perf_counter()
        n_dips = n_lookups = 0
        while not done.done():
            now = time.perf_counter() - start
            while n_dips * DIP_EVERY <= now:
                dips.send()
                n_dips += 1
            while n_lookups * LOOKUP_EVERY <= now:
                task = asyncio.create_task(lookups.lookup())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n_lookups += 1
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.5)  # late answers still count
        await asyncio.gather(*tasks)
    finally:
        dips.close()
        lookups.close()
    return dips.samples, lookups.samples, len(dips.sent)


def figures(name: str, samples: Samples, seen: bool = False) -> str:
    """p50, p99 and max on arrival (``seen``: as this client's loop got to them)."""
    values = [s[2] if seen else s[1] for s in samples]
    q = statistics.quantiles(values, n=100)
    return (
        f"{name} p50 {q[49] * 1e3:6.2f} ms  p99 {q[98] * 1e3:7.2f} ms"
        f"  max {max(values) * 1e3:7.1f} ms  (n={len(values)})"
    )


async def upload(base: str, token: str, body: Path, floor: str = "") -> tuple[float, str]:
    """One upload, sent by curl; with ``floor`` (a database URL), ``cnamd import`` instead."""
    started = time.perf_counter()
    if floor:
        return await floor_import(floor, body, started)
    curl = await asyncio.create_subprocess_exec(
        *ASIDE,
        *("curl", "-sS", "-X", "POST", "--data-binary", f"@{body}"),
        *(("--limit-rate", LIMIT_RATE) if LIMIT_RATE else ()),
        *("-H", "Content-Type: text/csv", "-H", f"Authorization: Bearer {token}"),
        base + "/api/partner/enterprise/demo/cnam-import",
        stdout=subprocess.PIPE,
    )
    out, _ = await curl.communicate()
    took = time.perf_counter() - started
    try:
        report = json.loads(out)
        return took, f"inserted={report['inserted']} rejected={report['rejected']}"
    except (ValueError, KeyError):
        return took, out[:200].decode(errors="replace")


async def floor_import(url: str, body: Path, started: float) -> tuple[float, str]:
    """The upload's database work and parsing without the daemon: ``cnamd import`` (one
    parsing process, as a 2-CPU daemon's bulk worker, at its nice 10) into a second
    database of the same PostgreSQL, which no worker follows. What is left of the
    dips' tail then is this host's, not the serving path's."""
    cli = await asyncio.create_subprocess_exec(
        *ASIDE,
        *("nice", "-n", "10", *CLI, "import", "--database-url", url),
        *("--scope", "enterprise:demo", "--jobs", "1", "--log-level", "warning", str(body)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await cli.communicate()
    return time.perf_counter() - started, out.decode(errors="replace").strip()[-200:]


def floor_database(data: Path, env: dict[str, str]) -> str:
    """A database ``floor`` beside the daemon's, with the same schema and demo data."""
    url = f"postgresql://postgres@/floor?host={data}"
    script = (
        "import asyncio, sys, asyncpg\n"
        "from cnamd.database import migrate_database\n"
        "async def main():\n"
        "    c = await asyncpg.connect(sys.argv[1])\n"
        "    await c.execute('CREATE DATABASE floor')\n"
        "    await c.close()\n"
        "    await migrate_database(sys.argv[2], 30.0, demo=True)\n"
        "asyncio.run(main())"
    )
    admin = f"postgresql://postgres@/postgres?host={data}"
    subprocess.run([CLI[0], "-c", script, admin, url], check=True, env=env)
    return url


def timeline(began: float, dips: Samples, lookups: Samples, over: float) -> None:
    """Per second of the uploads: the worst dip and lookup, and how many of each took
    longer than ``over`` (twice the idle p99 of dips: the issue's bound)."""
    print(f"  per second: worst latency, and answers over {over * 1e3:.2f} ms")
    for second in range(int(max(s[0] for s in dips) - began) + 1):
        worst, late = [], []
        for samples in (dips, lookups):
            here = [s[1] for s in samples if second <= s[0] - began < second + 1]
            worst.append(max(here, default=0.0) * 1e3)
            late.append(sum(lat > over for lat in here))
        print(
            f"  t={second:3d} s  dip {worst[0]:6.1f} ms {late[0]:3d} over"
            f"  lookup {worst[1]:6.1f} ms {late[1]:3d} over"
        )


def dump(began: float, dips: Samples, lookups: Samples, over: float) -> None:
    """Each answer of the uploads' phase that took longer than ``over`` as a window on
    ``CLOCK_MONOTONIC`` (``perf_counter``'s clock on Linux), in the probe's format, so
    ``late_ticks/who_ran.py`` says what the serving loop thread did while it waited."""
    path = Path(DUMP) / f"over-{os.getpid()}-{began:.0f}.txt"
    with path.open("w") as out:
        for kind, samples in (("dip", dips), ("lookup", lookups)):
            for sent, latency, _ in samples:
                if latency > over:
                    out.write(
                        f"late {latency * 1e3:.2f} ms due {sent:.6f} ran {sent + latency:.6f}"
                        f" {kind} at {sent - began:.3f} s\n"
                    )
    print(f"  over-bound answers written to {path}")


def _role(proc: psutil.Process, postmasters: set[int]) -> str:
    """Which part of the sitting a process is, from its command line ("other": not ours)."""
    if proc.pid == os.getpid():
        return "bench client"
    if proc.pid in postmasters or proc.ppid() in postmasters:
        return "PostgreSQL"
    line = " ".join(proc.cmdline())
    for mark, role in (
        ("multiprocessing", "bulk workers"),
        ("cnamd.replica.loader", "loader"),
        ("cnamd.cli serve", "cnamd serving"),
        ("curl", "curl"),
    ):
        if mark in line:
            return role
    return "other"


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """Every process's role and CPU seconds so far (user + system)."""
    found = {}
    procs = list(psutil.process_iter())
    postmasters = set()  # this sitting's: their data directory is under the bench's own
    for proc in procs:
        try:
            if "cnamd-upload-bench-" in " ".join(proc.cmdline()) and "postgres" in proc.name():
                postmasters.add(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    for proc in procs:
        try:
            times = proc.cpu_times()
            found[proc.pid] = (_role(proc, postmasters), times.user + times.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def cpu_by_role(before: dict[int, tuple[str, float]], seconds: float) -> str:
    """CPU each role used since ``before``, in % of one core over ``seconds``; processes
    that ended meanwhile (a loader child) are not seen."""
    used: dict[str, float] = {}
    for pid, (role, cpu) in cpu_seconds().items():
        used[role] = used.get(role, 0.0) + cpu - before.get(pid, (role, 0.0))[1]
    ranked = sorted(used.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{role} {cpu / seconds * 100:.0f}%" for role, cpu in ranked if cpu > 0.05)


Phases = tuple[Samples, Samples, Samples, Samples]  # idle dips, lookups; during the uploads


async def phases(
    base: str, sip: tuple[str, int], token: str, bodies: list[Path], log: Path, *, floor: str
) -> Phases:
    """Warm-up (1 s, not counted), idle, then during the uploads; prints each phase."""
    loop = asyncio.get_running_loop()
    if WARM:
        warm, *bodies = bodies
        print(f"warm-up  {(await upload(base, token, warm))[1]}")
    warm: asyncio.Future[object] = loop.create_future()
    loop.call_later(1.0, warm.set_result, None)
    await measure(base, sip, warm)
    quiet: asyncio.Future[object] = loop.create_future()
    loop.call_later(IDLE, quiet.set_result, None)
    lag = await loop_lag_reading.buckets(base)
    dips, lookups, lost = await measure(base, sip, quiet)
    idle = (dips, lookups)
    lag, before = await loop_lag_reading.buckets(base), lag
    print(f"idle     {figures('dip', dips)}  unanswered {lost}")
    idle_p99 = statistics.quantiles([s[1] for s in dips], n=100)[98]
    print(f"idle     {figures('lookup', lookups)}")
    print(f"idle     seen {figures('dip', dips, seen=True)}")
    print(f"idle     seen {figures('lookup', lookups, seen=True)}")
    print(f"idle     {loop_lag_reading.described(before, lag)}", flush=True)
    began, began_wall = time.perf_counter(), time.time()
    cpu = cpu_seconds()
    uploads = asyncio.gather(*(upload(base, token, body, floor) for body in bodies))
    dips, lookups, lost = await measure(base, sip, uploads)
    print(f"uploads  CPU of one core: {cpu_by_role(cpu, time.perf_counter() - began)}")
    lag, before = await loop_lag_reading.buckets(base), lag
    print(f"uploads  {figures('dip', dips)}  unanswered {lost}")
    print(f"uploads  {figures('lookup', lookups)}")
    print(f"uploads  seen {figures('dip', dips, seen=True)}")
    print(f"uploads  seen {figures('lookup', lookups, seen=True)}")
    print(f"uploads  {loop_lag_reading.described(before, lag)}")
    cached = first_cache_event(log, began_wall)
    if cached is not None:
        until = began + cached
        print(f"  the first commit reached the cache {cached:.1f} s in; before that:")
        print(f"reading  {figures('dip', [d for d in dips if d[0] < until])}")
        print(f"reading  {figures('lookup', [d for d in lookups if d[0] < until])}")
    if TIMELINE:
        timeline(began, dips, lookups, 2 * idle_p99)
    if DUMP:
        dump(began, dips, lookups, 2 * idle_p99)
    for took, what in uploads.result():
        print(f"upload   {took:.1f} s  {what}", flush=True)
    return (*idle, dips, lookups)


def first_cache_event(log: Path, since: float) -> float | None:
    """Seconds after ``since`` of the daemon's first change-feed log line, if any.

    Until then the uploads are being read, parsed and copied, and the cache
    has nothing of them to apply: the figures of this issue alone.
    """
    for line in log.read_text(errors="replace").splitlines():
        if "logger=cnamd.replica.feed" not in line or not line.startswith("ts="):
            continue
        stamp = line[3:].split(" ", 1)[0].replace("Z", "+00:00")
        at = datetime.datetime.fromisoformat(stamp).timestamp()
        if at > since:
            return at - since
    return None


def sitting(workers: int, bodies: list[Path], where: Path) -> Phases:
    """One daemon with ``workers`` workers on a fresh embedded PostgreSQL, measured."""
    where = Path(tempfile.mkdtemp(prefix=f"w{workers}-", dir=where))  # fresh per round
    env = environment()
    print(f"--workers {workers}", flush=True)
    cpus = ("--set", f"server.cpus={CPUS}") if CPUS else ()
    with demo(where, workers, *cpus) as daemon:
        print(f"daemon pid {daemon.proc.pid}", flush=True)
        key = ("apikey", "create", "--role", "partner", "--enterprise", "demo")
        made = subprocess.run(
            [*CLI, *key, "--embedded-dir", str(daemon.data)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        token = made.stdout.strip().splitlines()[-1]
        floor = floor_database(daemon.data, env) if FLOOR else ""
        every = os.sched_getaffinity(0)
        if CPUS and CLIENT != "anywhere":  # after the daemon started: it splits the CPUs
            serving = parse(CPUS)
            os.sched_setaffinity(0, serving if CLIENT == "serving" else every - serving)
        try:
            sip = ("127.0.0.1", daemon.sip)
            measured = asyncio.run(phases(daemon.base, sip, token, bodies, daemon.log, floor=floor))
        finally:
            os.sched_setaffinity(0, every)
    notable = [
        line
        for line in daemon.log.read_text(errors="replace").splitlines()
        if any(mark in line for mark in NOTABLE_MARKS)
    ]
    for line in notable[:NOTABLE]:
        print("  daemon:", line[:300])
    if len(notable) > NOTABLE:
        print(f"  daemon: ... {len(notable) - NOTABLE} more")
    return measured


def main(workers: list[int], mb: int, count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="cnamd-upload-bench-") as tmp:
        where = Path(tmp)
        bodies = []
        for n in range(count):
            path = where / f"upload{n}.csv"
            path.write_bytes(csv_body(mb, n))
            bodies.append(path)
        if WARM:
            warm = where / "warm.csv"  # over the inline limit: the bulk workers start
            warm.write_bytes(csv_body(1, 99)[:100_000].rsplit(b"\n", 1)[0] + b"\n")
            bodies.insert(0, warm)
        for n in workers:
            rounds = [sitting(n, bodies, where) for _ in range(ROUNDS)]
            if ROUNDS > 1:
                pooled(n, rounds)


def pooled(workers: int, rounds: list[Phases]) -> None:
    """Each round's p99 during the uploads over its idle p99, and the same over all the
    rounds' samples together: the idle p99 moves from one daemon start to the next."""

    def p99(samples: Samples, seen: bool) -> float:
        return statistics.quantiles([s[2] if seen else s[1] for s in samples], n=100)[98]

    print(f"--workers {workers}, {len(rounds)} rounds: p99 during the uploads over idle p99")
    for kind, at in (("dip", 0), ("lookup", 1)):
        for seen in (False, True):
            each = [p99(r[at + 2], seen) / p99(r[at], seen) for r in rounds]
            idle = [s for r in rounds for s in r[at]]
            busy = [s for r in rounds for s in r[at + 2]]
            print(
                f"  {kind:6} {'seen' if seen else 'on arrival':10}"
                f" per round {', '.join(f'{x:.2f}x' for x in each)};"
                f" median {statistics.median(each):.2f}x;"
                f" pooled {p99(busy, seen) * 1e3:.2f} / {p99(idle, seen) * 1e3:.2f} ms"
                f" = {p99(busy, seen) / p99(idle, seen):.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--mb", type=int, default=10, help="size of each upload, in MB")
    parser.add_argument("--uploads", type=int, default=2, help="uploads sent at once")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds measured idle")
    parser.add_argument("--timeline", action="store_true", help="worst latency per second")
    parser.add_argument(
        "--rounds", type=int, default=1, help="fresh daemons per --workers value, then pooled"
    )
    parser.add_argument(
        "--warm-upload",
        action="store_true",
        help="a 100 kB upload before the idle phase: the bulk workers' start not measured",
    )
    parser.add_argument(
        "--cpus",
        default="",
        help="the daemon's server.cpus (e.g. 0): its serving workers on those CPUs, an embedded"
        " PostgreSQL, the loader and the bulk workers on the others",
    )
    parser.add_argument(
        "--client",
        choices=("anywhere", "serving", "aside"),
        default="anywhere",
        help="with --cpus, where this client runs: anywhere (as the scheduler likes, as without"
        " --cpus), on the serving CPUs (taking their time, which a PBX on another host would not)"
        " or aside (behind PostgreSQL); with serving or aside, the curls run aside",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="the same imports by `cnamd import` into another database of the same"
        " PostgreSQL, which the daemon does not serve: the host's share of the tail",
    )
    parser.add_argument(
        "--dump",
        default="",
        help="a directory: the uploads' answers over the bound written there as windows for"
        " late_ticks/who_ran.py (with the probe's tid line and a perf record of the run)",
    )
    parser.add_argument(
        "--limit-rate",
        default="",
        help="each upload's sending rate, in curl's syntax (e.g. 10M): an upload from another"
        " host, not curl pushing at loopback speed on the cores the daemon serves from",
    )
    args = parser.parse_args()
    print("command:", " ".join(["python", *sys.argv]), flush=True)
    print("PYTHONPATH:", os.environ.get("PYTHONPATH", "(unset)"), flush=True)
    IDLE, TIMELINE, CPUS, WARM = args.idle, args.timeline, args.cpus, args.warm_upload
    CLIENT = args.client
    ROUNDS, FLOOR, LIMIT_RATE, DUMP = args.rounds, args.floor, args.limit_rate, args.dump
    if CPUS and CLIENT != "anywhere":
        aside = sorted(os.sched_getaffinity(0) - parse(CPUS))
        ASIDE = ["taskset", "-c", ",".join(map(str, aside))]
    main(args.workers, args.mb, args.uploads)
