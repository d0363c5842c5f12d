#!/usr/bin/env python3
"""How long starting a child process holds the event loop, by the process's size.

    .venv/bin/python bench/bench_spawn.py [--mb 50 400]

For each size: a process with that many MB touched starts ``true`` three times with
``asyncio.create_subprocess_exec`` on uvloop and on asyncio's own loop, and with
``subprocess.Popen``, and prints how long each call took to return: the time the loop
that made it could run nothing else. uvloop forks the process (its page tables are
copied on the calling thread); ``subprocess.Popen`` uses ``vfork``. Why the loader
child is started with ``Popen`` from a thread (replica/loader.py).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import time

import uvloop


async def spawns() -> list[float]:
    took = []
    for _ in range(3):
        started = time.perf_counter()
        child = await asyncio.create_subprocess_exec("true")
        took.append(time.perf_counter() - started)
        await child.wait()
    return took


def popens() -> list[float]:
    took = []
    for _ in range(3):
        started = time.perf_counter()
        child = subprocess.Popen(["true"])
        took.append(time.perf_counter() - started)
        child.wait()
    return took


def main(sizes: list[int]) -> None:
    for mb in sizes:
        held = bytearray(mb * 2**20)
        for i in range(0, len(held), 4096):  # resident, so the fork has tables to copy
            held[i] = 1
        for name, took in (
            ("uvloop create_subprocess_exec", uvloop.run(spawns())),
            ("asyncio create_subprocess_exec", asyncio.run(spawns())),
            ("subprocess.Popen", popens()),
        ):
            print(f"{mb:5d} MB  {name:32} median {statistics.median(took) * 1e3:6.2f} ms")
        del held


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, nargs="+", default=[50, 400])
    main(parser.parse_args().mb)
