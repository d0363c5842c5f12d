"""BulkWorkers: processes that parse bulk uploads, away from the serving event loop.

Processes, not threads, because the parsing is pure Python and holds the GIL
(bench/bench_loop_lag.py); see http/cnam_csv.py for the figures.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import ParamSpec, TypeVar

from cnamd import cpus

__all__ = ["BulkWorkers", "exit_with"]

P = ParamSpec("P")
R = TypeVar("R")
#: the workers' nice value: serving (SIP dips, lookups) comes before bulk parsing
NICE = 10


def exit_with(parent: int) -> None:
    """A pool worker's initializer: exit once ``parent``, the process that made the
    pool, is gone (not this process's parent with a forkserver: ``cnamd import``).

    The workers of a killed process would otherwise wait forever on a queue whose
    other end they hold themselves: a serving worker SIGKILLed after an upload left
    its bulk workers running, holding the daemon's output open.
    """

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _yield_the_cpu(parent: int) -> None:
    """A worker's initializer: at NICE, where the spawning thread could not set it, and
    off the serving CPUs when ``server.cpus`` keeps some (cpus.py); gone with ``parent``."""
    if os.getpriority(os.PRIO_PROCESS, 0) < NICE:
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
    cpus.step_aside()
    exit_with(parent)


def _ready() -> None:
    """A no-op a new worker runs once, so that all are started before the first block."""


class BulkWorkers(Executor):
    """A pool of ``workers`` processes, started on first use and kept for later uploads.

    Spawned, so they inherit no sockets; a pool broken by a killed worker is
    replaced at the next start.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._starting = asyncio.Lock()  # two first uploads at once start one pool

    async def start(self) -> None:
        """Start the workers if they are not running, from a thread of their own.

        Spawning one holds the calling thread ~50 ms (measured on the loaded
        2-core VM): the event loop would stall that long for each. On Linux
        the thread lowers its own priority first, so that the workers start
        at NICE and their interpreter start-up already yields to serving.
        """
        async with self._starting:
            # _broken: set by the pool when a worker died (killed, out of memory)
            if self._pool is None or self._pool._broken:
                with ThreadPoolExecutor(1, thread_name_prefix="bulk-spawn") as spawner:
                    await asyncio.get_running_loop().run_in_executor(spawner, self._start)

    def _start(self) -> None:
        if sys.platform == "linux":  # a Linux thread has its own nice value; children inherit it
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        # and its own CPUs: the workers' interpreter start-up (~0.2 s of CPU each) then
        # runs off the serving CPUs too, not only what follows their initializer
        cpus.step_aside()
        pool = ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_yield_the_cpu,
            initargs=(os.getpid(),),
        )
        futures = [pool.submit(_ready) for _ in range(self.workers)]
        old, self._pool = self._pool, pool
        if old is not None:
            old.shutdown(wait=False)
        for future in futures:
            future.result()

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        if self._pool is None:
            raise BrokenProcessPool("the CSV workers are not started")
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)
