"""Start-up's objects kept out of the collector's full passes (collector.py).

Each check runs in a fresh interpreter: freezing pytest's own heap would keep every
test's garbage cycles made before it for the rest of the run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import gc, json, weakref
    import aiohttp, phonenumbers  # a serving process's kind of start-up heap
    from cnamd import collector, server

    class Cycle:
        def __init__(self):
            self.me = self

    garbage = weakref.ref(Cycle())  # freed only by a collection: settle() must not freeze it
    tracked = len(gc.get_objects())
    frozen = collector.settle()
    walked = len(gc.get_objects())  # what a full pass walks now (the frozen are not in it)
    print(json.dumps({
        "tracked": tracked,
        "frozen": frozen,
        "walked": walked,
        "garbage_kept": garbage() is not None,
    }))
    """
)


def test_settle_freezes_the_heap_after_collecting_its_garbage() -> None:
    run = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    seen = json.loads(run.stdout)
    assert seen["tracked"] > 20_000  # the imports' functions, classes and modules
    assert seen["frozen"] >= seen["tracked"] * 0.9
    # a full pass after it walks a few hundred objects, not the start-up heap
    assert seen["walked"] < seen["tracked"] // 20
    assert not seen["garbage_kept"]  # the cycle was collected first, not kept forever
