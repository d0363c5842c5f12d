#!/usr/bin/env python3
"""Event-loop lag while two 10 MB phone-book CSVs are parsed: on the loop, in threads, in processes.

    .venv/bin/python bench/bench_loop_lag.py [--mb 10] [--uploads 2]

What decided where cnamd parses CSV uploads (http/cnam_csv.py). A probe
task sleeps 1 ms at a time on a uvloop event loop and records how late it
wakes (what a SIP dip or an HTTP lookup waiting on that loop would wait
too) while ``--uploads`` bodies of ``--mb`` MB each are cut into blocks and
staged (``phonebook_csv.Block`` -> ``imports.stage_block``: parse, validate,
encode for COPY), one block after another per upload:
- loop: ``stage_block`` called on the loop between awaits (what a handler
  without an executor does);
- thread: ``asyncio.to_thread`` per block;
- process: the daemon's ``BulkWorkers`` pool (2 processes, started beforehand).
No database: only the parsing's effect on the loop is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator
from concurrent.futures import Executor, ThreadPoolExecutor

import uvloop

from cnamd.bulk_workers import BulkWorkers
from cnamd.phonebook_csv import read_blocks
from cnamd.store.imports import stage_block


def body(mb: int, seed: int) -> bytes:
    rows = ["phone,name\n"]
    size, i = 0, 0
    while size < mb * 10**6:
        row = f"+1{212 + seed}{5550000 + i % 10**7:07d},Name {i}\n"
        rows.append(row)
        size += len(row)
        i += 1
    return "".join(rows).encode()


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    for at in range(0, len(data), 65536):
        yield data[at : at + 65536]
        await asyncio.sleep(0)


async def upload(data: bytes, executor: Executor | None) -> int:
    loop = asyncio.get_running_loop()
    staged = 0
    async for block in read_blocks(chunks(data)):
        if executor is None:
            _, count, _ = stage_block(block, "US", 15)
            await asyncio.sleep(0)
        else:
            _, count, _ = await loop.run_in_executor(executor, stage_block, block, "US", 15)
        staged += count
    return staged


async def probe(stop: asyncio.Event, lags: list[float]) -> None:
    while not stop.is_set():
        start = time.perf_counter()  # uvloop's loop.time() counts whole milliseconds
        await asyncio.sleep(0.001)
        lags.append(time.perf_counter() - start - 0.001)


async def measure(mode: str, bodies: list[bytes], executor: Executor | None) -> None:
    stop = asyncio.Event()
    lags: list[float] = []
    task = asyncio.create_task(probe(stop, lags))
    started = time.perf_counter()
    if mode == "idle":
        await asyncio.sleep(2)
        staged = 0
    else:
        staged = sum(await asyncio.gather(*(upload(b, executor) for b in bodies)))
    took = time.perf_counter() - started
    stop.set()
    await task
    q = statistics.quantiles(lags, n=100)
    print(
        f"{mode:8} lag p50 {q[49] * 1e3:6.2f} ms  p99 {q[98] * 1e3:6.2f} ms"
        f"  max {max(lags) * 1e3:6.1f} ms  ({len(lags)} probes, {staged} rows in {took:.1f} s)",
        flush=True,
    )


async def main(mb: int, uploads: int) -> None:
    bodies = [body(mb, n) for n in range(uploads)]
    await measure("idle", bodies, None)
    await measure("loop", bodies, None)
    with ThreadPoolExecutor(2) as threads:
        await measure("thread", bodies, threads)
    workers = BulkWorkers(2)
    try:
        await workers.start()
        await measure("process", bodies, workers)
    finally:
        workers.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=10)
    parser.add_argument("--uploads", type=int, default=2)
    args = parser.parse_args()
    print(f"command: {' '.join([sys.executable.rsplit('/', 1)[-1], *sys.argv])}")
    uvloop.run(main(args.mb, args.uploads))
