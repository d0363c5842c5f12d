"""Upstream sources (issue #17), by hand; two parts.

``dip``: in process, one INVITE through ``Dip.answer_udp`` and the real lookup, for
callers named by the local global directory and for callers named by held upstream
answers (``cache/upstream.py``: ``upstream`` from a per-process dict, ``mapped`` from
the host's held-answers file, as workers now hold them): what a dip answered from the
upstream scope costs beside a local one, and the memory per held upstream answer.

``burst``: a real daemon (``cnamd serve --workers 1``, its own database) whose one
upstream source is a local HTTP provider answering every number after 200 ms. N
distinct unknown numbers are asked over HTTP at once, while local hits are dipped over
UDP at a steady rate: the local dips' failures and latency, the provider's peak
concurrency (the source's ``max_concurrency``), how long until every answer is held,
the rows stored and the transactions PostgreSQL committed meanwhile.

``control``: the burst's daemon and local dips for S seconds (default 41, a burst's
length) with nothing asked upstream: how many of this machine's timers run late with
no burst at all, to read the burst's loop lag against.

``callers``: the dip's question alone (``DirectoryCallers.caller_name``) at N names
and N held answers mapped from a file, random numbers: what the upstream scope adds
at a realistic size.

Reproduce:
    .venv/bin/python bench/bench_upstream.py dip [N]
    .venv/bin/python bench/bench_upstream.py callers [N]
    .venv/bin/python bench/bench_upstream.py burst [N] [CONCURRENCY] [plain] [pinned]
    .venv/bin/python bench/bench_upstream.py control [S] [pinned]

``plain`` asks ``/v1/lookup/+1414...`` as a PBX would, which the connection front
answers (waiting for upstream there); without it the ``+`` is sent as ``%2B``, which
the front leaves to aiohttp and the application (the figures before 2026-12-04).

``pinned`` keeps CPU 0 for the daemon's worker (``server.cpus = "0"``: its embedded
PostgreSQL and loader go to the other CPUs) and moves this process, the callers and
the provider, to the other CPUs, as PBXs and a provider on other hosts would be. On a
2-core machine this process otherwise wakes up on the worker's core at each answer and
takes it: ``perf sched`` put 3.5-5 ms of a late timer's window in such waits.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import loop_lag_reading
import psutil
from demo_daemon import demo

from cnamd.cache.contexts import Contexts
from cnamd.cache.directory import Directory
from cnamd.cache.held_file import HeldFile, write_held
from cnamd.cache.trie import CacheBuilder, lookup_result
from cnamd.cache.upstream import UpstreamAnswers
from cnamd.callers import DirectoryCallers
from cnamd.model import ContextRows, Digest, LookupResult, Scope
from cnamd.ratelimit import TokenBucket
from cnamd.sip import Dip, DipSettings

INVITE = (
    "INVITE sip:+12125550001@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-{i}-0;rport\r\n"
    "From: <sip:{n}@127.0.0.1>;tag=1SIPpTag00{i}\r\n"
    "To: <sip:+12125550001@127.0.0.1:5060>\r\n"
    "Call-ID: {i}-1@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: 0\r\n\r\n"
)


def per_item_us(fn: object, items: list[bytes], passes: int = 7) -> list[float]:
    call = fn  # type: ignore[assignment]
    times = []
    for _ in range(passes):
        started = time.perf_counter()
        for item in items:
            call(item, ("127.0.0.1", 5061))  # type: ignore[operator]
        times.append((time.perf_counter() - started) / len(items) * 1e6)
    return sorted(times)


def global_names(numbers: list[str]) -> Directory:
    """A Directory naming ``numbers`` in the global scope, with names as varied as the
    upstream answers' (the dip caches quoted names)."""
    builder = CacheBuilder()
    for number in numbers:
        builder.add(Scope.GLOBAL, 0, number, f"Local {number[-4:]}")
    directory = Directory()
    directory.install(
        builder.build(),
        Contexts(ContextRows([], [], [], [], []), ["0.0.0.0/0"]),
        Digest(0, 0, 0),
        stale=False,
    )
    return directory


def bench_dip(count: int) -> None:
    local = [f"+1212{i:07d}" for i in range(count)]
    remote = [f"+1313{i:07d}" for i in range(count)]
    directory = global_names(local)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    far = time.time() + 86400
    rows = [(n, f"Upstream {n[-4:]}", "bench", far) for n in remote]
    held = UpstreamAnswers()
    held.replace(rows)
    per_entry = (tracemalloc.get_traced_memory()[0] - before) / count
    tracemalloc.stop()
    # the same answers mapped from the host's file (cache/held_file.py), as workers hold them
    scratch = Path(tempfile.mkdtemp()) / "cache.snapshot.upstream"
    write_held(scratch, rows, base_id="bench", last_change_id=0)
    mapped = UpstreamAnswers()
    mapped.use_file(HeldFile.open(scratch))
    scratch.unlink()
    dip = Dip(DipSettings(), DirectoryCallers(directory, held), limiter=TokenBucket(1e6, 1e6))
    from_file = Dip(
        DipSettings(), DirectoryCallers(directory, mapped), limiter=TokenBucket(1e6, 1e6)
    )
    local_invites = [INVITE.format(i=i, n=n).encode() for i, n in enumerate(local)]
    remote_invites = [INVITE.format(i=i, n=n).encode() for i, n in enumerate(remote)]
    assert b"Local 0000" in (dip.answer_udp(local_invites[0], ("127.0.0.1", 5061)) or (b"",))[0]
    assert b"Upstream" in (dip.answer_udp(remote_invites[0], ("127.0.0.1", 5061)) or (b"",))[0]
    assert (
        b"Upstream" in (from_file.answer_udp(remote_invites[0], ("127.0.0.1", 5061)) or (b"",))[0]
    )
    rounds = []
    for _ in range(3):  # alternate, so drift on a shared machine hits all alike
        rounds.append(("local", per_item_us(dip.answer_udp, local_invites)))
        rounds.append(("upstream", per_item_us(dip.answer_udp, remote_invites)))
        rounds.append(("mapped", per_item_us(from_file.answer_udp, remote_invites)))
    for kind in ("local", "upstream", "mapped"):
        best = [r[0] for k, r in rounds if k == kind]
        medians = [r[3] for k, r in rounds if k == kind]
        print(f"{kind:9} INVITE: best {min(best):.2f} us, medians {[round(m, 2) for m in medians]}")
    print(f"held upstream answer: {per_entry:.0f} B each at {count} (tracemalloc)")


def bench_callers(count: int, sample: int = 200_000) -> None:
    """The dip's question alone (``DirectoryCallers.caller_name``, no SIP parsing) at
    ``count`` global names and as many held answers from the host's file: random
    numbers of each, best of 3 passes, alternated three times."""
    import random

    local = [f"+1212{i:07d}" for i in range(count)]
    remote = [f"+4413{i:08d}" for i in range(count)]
    directory = global_names(local)
    far = time.time() + 86400
    scratch = Path(tempfile.mkdtemp()) / "cache.snapshot.upstream"
    rows = [(n, f"Up {n[-4:]}", "bench", far) for n in remote]
    write_held(scratch, rows, base_id="b", last_change_id=0)
    held = UpstreamAnswers()
    held.use_file(HeldFile.open(scratch))
    scratch.unlink()
    callers = DirectoryCallers(directory, held)
    sample = min(sample, count)
    picks = {"local": random.sample(local, sample), "upstream": random.sample(remote, sample)}
    for _ in range(3):
        for kind, numbers in picks.items():
            best = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                for number in numbers:
                    callers.caller_name(number, "+12125550001", "127.0.0.1")
                best = min(best, (time.perf_counter() - started) / sample * 1e6)
            print(f"{kind:9} caller_name at {count:,}: best {best:.3f} us", flush=True)
    # the parts of an upstream answer's question, each less the loop's own cost
    ctx = directory.contexts.source_context("127.0.0.1")

    def best_us(part: Callable[[str], object], numbers: list[str]) -> float:
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for number in numbers:
                part(number)
            best = min(best, (time.perf_counter() - started) / len(numbers) * 1e6)
        return best

    alone = best_us(lambda n: None, picks["local"])
    print(f"the parts, each less the loop's own {alone:.3f} us:")
    for label, part, numbers in (
        ("local scopes, a hit", lambda n: directory.resolve(n, ctx), picks["local"]),
        ("local scopes, a miss", lambda n: directory.resolve(n, ctx), picks["upstream"]),
        ("held table probe (name_of)", held.name_of, picks["upstream"]),
        ("LookupResult(...)", lambda n: LookupResult(n, n, Scope.UPSTREAM), picks["upstream"]),
        ("lookup_result(...)", lambda n: lookup_result(n, n, Scope.UPSTREAM), picks["upstream"]),
    ):
        print(f"  {label:28} {best_us(part, numbers) - alone:.3f} us", flush=True)


# --- burst ---------------------------------------------------------------------------


class SlowProvider:
    """Answers every /cnam/{number} after ``delay`` s; tracks the peak in flight."""

    def __init__(self, delay: float) -> None:
        from aiohttp import web

        self.delay = delay
        self.inflight = self.peak = self.asked = 0
        self.peers: set[object] = set()  # the client ends it saw: connections opened
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def cnam(request: web.Request) -> web.Response:
            self.asked += 1
            if request.transport is not None:
                self.peers.add(request.transport.get_extra_info("peername"))
            self.inflight += 1
            self.peak = max(self.peak, self.inflight)
            await asyncio.sleep(self.delay)
            self.inflight -= 1
            return web.json_response({"name": "Burst " + request.match_info["number"][-4:]})

        async def serve() -> None:
            app = web.Application()
            app.router.add_get("/cnam/{number}", cnam)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = runner.addresses[0][1]
            ready.set()
            await asyncio.Event().wait()

        threading.Thread(target=lambda: self.loop.run_until_complete(serve()), daemon=True).start()
        ready.wait(10)


def bench_burst(
    count: int, concurrency: int, plus: str = "%2B", hold: float = 0.0, *, pinned: bool = False
) -> None:
    """A burst of `count` unknown numbers beside 500 local dips a second.

    With `count` 0 the same daemon and local dips run for `hold` seconds with nothing
    asked upstream: the control that says how late this machine's timers are anyway.
    `pinned`: the worker on CPU 0, this process (callers and provider) on the others.
    """
    every = os.sched_getaffinity(0)
    if pinned and (0 not in every or len(every) < 2):
        sys.exit("pinned needs CPU 0 and one more")
    provider = SlowProvider(0.2)
    work = Path(tempfile.mkdtemp(prefix="cnamd-bench-upstream-"))
    source = {
        "name": "slow",
        "kind": "http-json",
        "url": f"http://127.0.0.1:{provider.port}/cnam/{{e164}}",
        "max_concurrency": concurrency,
        "timeout": 30,
    }
    with demo(
        work,
        1,
        *("--snapshot", str(work / "snap")),  # after demo()'s own: this one counts
        *("--set", "upstream.sources=" + json.dumps([source])),
        *("--set", "upstream.http_deadline=60"),
        *(("--set", "server.cpus=0") if pinned else ()),
    ) as daemon:
        if pinned:  # every thread of this process, the provider's included, off CPU 0
            for task in os.listdir("/proc/self/task"):
                os.sched_setaffinity(int(task), every - {0})
        asyncio.run(
            _burst(
                daemon.base,
                daemon.sip,
                count,
                provider,
                work,
                plus=plus,
                pid=daemon.proc.pid,
                hold=hold,
            )
        )
    # what the daemon said above info, during the burst: a warning there is a finding
    for line in (work / "daemon.log").read_text(errors="replace").splitlines():
        if "level=warning" in line or "level=error" in line:
            print("  daemon:", line[:300])


async def _burst(
    base: str,
    sip: int,
    count: int,
    provider: SlowProvider,
    work: Path,
    *,
    plus: str,
    pid: int,
    hold: float,
) -> None:
    import aiohttp
    import asyncpg

    db = await asyncpg.connect(f"postgresql://postgres@/postgres?host={work / 'pgdata'}")  # stats
    commits0 = await db.fetchval("SELECT sum(xact_commit) FROM pg_stat_database")
    stop = asyncio.Event()
    latencies: list[float] = []
    failures = 0
    failed: dict[str, int] = {}  # what each failure was: a status line, or "no answer in 1 s"

    async def local_dips() -> None:  # 500 dips/s of a demo (local) name over UDP
        nonlocal failures
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect(("127.0.0.1", sip))
        i = 0
        while not stop.is_set():
            data = INVITE.format(i=i, n="+492216698712").encode()
            started = time.perf_counter()
            await loop.sock_sendall(sock, data)
            try:
                async with asyncio.timeout(1):
                    answer = await loop.sock_recv(sock, 65535)
                latencies.append(time.perf_counter() - started)
                if not answer.startswith(b"SIP/2.0 302"):
                    failures += 1
                    line = answer.split(b"\r\n", 1)[0].decode(errors="replace")
                    failed[line] = failed.get(line, 0) + 1
            except TimeoutError:
                failures += 1
                failed["no answer in 1 s"] = failed.get("no answer in 1 s", 0) + 1
            i += 1
            await asyncio.sleep(0.002)
        sock.close()

    worker = psutil.Process(pid)  # --workers 1: the process that serves
    dipper = asyncio.create_task(local_dips())
    await asyncio.sleep(0.2)
    cpu0, at0 = sum(worker.cpu_times()[:2]), time.perf_counter()
    await asyncio.sleep(1)
    lag0 = await loop_lag_reading.buckets(base)
    cpu1 = sum(worker.cpu_times()[:2])
    steal0 = _steal()
    started = time.perf_counter()
    began = time.monotonic()  # CLOCK_MONOTONIC: late_ticks/ stamps the daemon's ticks on it
    dips_rate = (cpu1 - cpu0) / (started - at0)  # CPU seconds per second of local dips alone
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
        numbers = iter(range(count))

        async def ask() -> int:  # one connection's requests, one after the other
            named = 0
            for i in numbers:
                async with session.get(f"{base}/v1/lookup/{plus}1414{i:07d}") as response:
                    named += response.status == 200
            return named

        # the connector's 200 connections, each asking the next number: the same load as
        # 10,000 gathered requests queued for 200 connections, without the bench's own
        # process holding 10,000 coroutines whose collections take the cores from the daemon
        if count:
            named = sum(await asyncio.gather(*(ask() for _ in range(200))))
        else:
            named = 0
            await asyncio.sleep(hold)
    answered = time.perf_counter() - started
    cpu2 = sum(worker.cpu_times()[:2])
    steal = {cpu: ticks - steal0.get(cpu, 0) for cpu, ticks in _steal().items()}
    stored = writes = 0
    while stored < count and time.perf_counter() - started < answered + 30:
        stored, writes = await _stored(work)
        await asyncio.sleep(0.1)
    all_stored = time.perf_counter() - started
    stop.set()
    await dipper
    lag = loop_lag_reading.described(lag0, await loop_lag_reading.buckets(base))
    commits = await db.fetchval("SELECT sum(xact_commit) FROM pg_stat_database") - commits0
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        sip_metrics = [
            line
            for line in (await response.text()).splitlines()
            if line.startswith(("cnamd_sip_dropped_total", "cnamd_sip_responses_total"))
        ]
    await db.close()
    lat = sorted(latencies)
    print(f"{count} distinct unknown numbers, provider 200 ms, max_concurrency {provider.peak}:")
    print(
        f"  named over HTTP: {named}; all answered in {answered:.1f} s;"
        f" all stored {all_stored:.1f} s"
    )
    print(
        f"  provider asked {provider.asked} times over {len(provider.peers)} connections,"
        f" peak in flight {provider.peak}"
    )
    print(
        f"  rows stored {stored} in {writes} write transactions;"
        f" PostgreSQL commits meanwhile {commits} (all databases, pings and polls included)"
    )
    print(
        f"  local dips during the burst: {len(lat)} answered, {failures} failed;"
        f" p50 {statistics.median(lat) * 1e3:.2f} ms, p99 {lat[int(len(lat) * 0.99)] * 1e3:.2f} ms,"
        f" max {lat[-1] * 1e3:.2f} ms"
    )
    per_number = (cpu2 - cpu1 - dips_rate * answered) / max(count, 1)
    print(
        f"  the worker's CPU: {cpu2 - cpu1:.2f} s in the burst, {dips_rate * 100:.1f}% of a core"
        f" for the local dips alone before it"
        + (f": about {per_number * 1e6:.0f} us per number asked" if count else "")
    )
    if failed:
        print(f"  the failures: {failed}")
    print(f"  the worker's {lag}; the burst began at {began:.6f} (CLOCK_MONOTONIC)")
    if steal:  # a VM's vCPU not run by its host: the guest sees its task running meanwhile
        ticks = os.sysconf("SC_CLK_TCK")
        print(
            "  time the VM's host took from each CPU meanwhile (steal):",
            ", ".join(f"{cpu} {1e3 * n / ticks:.0f} ms" for cpu, n in sorted(steal.items())),
        )
    print("  the daemon's SIP counters:", "; ".join(sip_metrics))


def _steal() -> dict[str, int]:
    """Each CPU's steal time in clock ticks (``/proc/stat``), {} where there is none."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return {}
    return {
        fields[0]: int(fields[8])
        for fields in (line.split() for line in lines)
        if fields[0].startswith("cpu") and fields[0] != "cpu" and len(fields) > 8
    }


async def _stored(work: Path) -> tuple[int, int]:
    """Rows stored, and the transactions that wrote them (their change-log rows' xacts)."""
    import asyncpg

    conn = await asyncpg.connect(f"postgresql://postgres@/cnamd?host={work / 'pgdata'}")
    try:
        rows = await conn.fetchval("SELECT count(*) FROM upstream_answers")
        writes = await conn.fetchval(
            "SELECT count(DISTINCT xact) FROM change_log WHERE kind = 'upstream'"
        )
        return int(rows), int(writes)
    finally:
        await conn.close()


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "dip"
    if what == "dip":
        bench_dip(int(sys.argv[2]) if len(sys.argv) > 2 else 100000)
    elif what == "callers":
        bench_callers(int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000)
    elif what == "control":  # the burst's daemon and local dips, nothing asked upstream
        numbers = [a for a in sys.argv[2:] if a != "pinned"]
        bench_burst(0, 50, hold=float(numbers[0]) if numbers else 41.0, pinned="pinned" in sys.argv)
    else:
        words = {"plain", "pinned"}
        numbers = [a for a in sys.argv[2:] if a not in words]
        bench_burst(
            int(numbers[0]) if numbers else 2000,
            int(numbers[1]) if len(numbers) > 1 else 50,
            "+" if "plain" in sys.argv else "%2B",
            pinned="pinned" in sys.argv,
        )
