"""The processes that parse uploads: started once, at low priority, replaced when one dies."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures.process import BrokenProcessPool

import psutil

from cnamd.bulk_workers import NICE, BulkWorkers


def _children() -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process().children()
        if "multiprocessing.spawn" in " ".join(p.cmdline())
        and "resource_tracker" not in " ".join(p.cmdline())
    ]


async def test_workers_start_once_below_the_serving_priority_and_replace_a_killed_one() -> None:
    workers = BulkWorkers(2)
    try:
        await asyncio.gather(workers.start(), workers.start())  # two first uploads at once
        first = _children()
        assert len(first) == 2
        assert all(p.nice() >= NICE for p in first)
        assert os.getpriority(os.PRIO_PROCESS, 0) < NICE  # this process is untouched
        assert await asyncio.wrap_future(workers.submit(os.getpid)) in {p.pid for p in first}
        first[0].kill()
        first[0].wait(10)
        for _ in range(100):  # the pool notices the death on its own thread
            try:
                await asyncio.wrap_future(workers.submit(os.getpid))
            except BrokenProcessPool:
                break
            await asyncio.sleep(0.05)
        await workers.start()
        pid = await asyncio.wrap_future(workers.submit(os.getpid))
        assert pid not in {p.pid for p in first}
    finally:
        workers.shutdown()
