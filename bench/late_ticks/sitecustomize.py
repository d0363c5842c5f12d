"""A probe for the daemon, not part of cnamd: each of ``LoopLag``'s ticks that runs over
3 ms late is written to ``$LATE_TICKS_DIR/ticks-<pid>.txt`` (default ``/tmp``) with its
due and run times on ``CLOCK_MONOTONIC``, the clock ``perf record -k CLOCK_MONOTONIC``
stamps its events with, so ``who_ran.py`` can say what the loop's thread did meanwhile;
so is each of the collector's passes over 1 ms, which ``who_ran.py`` counts in the
thread's own work.

Put this directory on the daemon's ``PYTHONPATH`` (the benches pass their environment
on); every Python process started with it loads this file, and only one that imports
``cnamd.loop_lag`` writes anything.

``LATE_TICKS_BOUND`` (seconds) replaces the 3 ms bound. ``LATE_TICKS_INTERVAL`` (seconds)
replaces the ticks' 20 ms period, so that a hold shorter than 20 ms is always seen (the
daemon's lag histogram then counts these ticks too).
"""

import gc
import importlib.abc
import importlib.machinery
import os
import sys
import threading
import time

BOUND = float(os.environ.get("LATE_TICKS_BOUND", "0.003"))
INTERVAL = os.environ.get("LATE_TICKS_INTERVAL")


def _patch(module):  # type: ignore[no-untyped-def]
    cls = module.LoopLag
    start, tick = cls.start, cls._tick
    path = os.path.join(os.environ.get("LATE_TICKS_DIR", "/tmp"), f"ticks-{os.getpid()}.txt")
    out = open(path, "a")  # noqa: SIM115 - open for the process's life
    due = [0.0]

    def started(self):  # type: ignore[no-untyped-def]
        if INTERVAL:
            self.interval = float(INTERVAL)
        start(self)
        due[0] = time.monotonic() + self.interval
        out.write(f"tid {threading.get_native_id()}\n")
        out.flush()

    def ticked(self):  # type: ignore[no-untyped-def]
        now = time.monotonic()
        if now - due[0] > BOUND:
            wall = time.time()  # py-spy's chrometrace stamps its samples on this clock
            late = now - due[0]
            out.write(f"late {late * 1e3:.2f} ms due {due[0]:.6f} ran {now:.6f} wall {wall:.6f}\n")
            out.flush()
        tick(self)
        due[0] = time.monotonic() + self.interval

    began = [0.0]

    def collected(phase, info):  # type: ignore[no-untyped-def]
        now = time.monotonic()
        if phase == "start":
            began[0] = now
        elif now - began[0] > 0.001:
            out.write(f"gc {info['generation']} from {began[0]:.6f} to {now:.6f}\n")
            out.flush()

    cls.start, cls._tick = started, ticked
    gc.callbacks.append(collected)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        if name != "cnamd.loop_lag":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):  # type: ignore[no-untyped-def]
            run(module)
            _patch(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


sys.meta_path.insert(0, _Finder())
