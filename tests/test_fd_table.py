"""The serving process's descriptor table, grown before it serves (fd_table.py).

Each check runs in a fresh interpreter with a second thread, as a worker has: the
table's size is the process's own (``FDSize`` in /proc), and the growth that stalls
a loop is the one of a process whose table is shared with threads.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from cnamd import fd_table
from cnamd.settings import load

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="FDSize is in Linux's /proc")

PROBE = textwrap.dedent(
    """
    import json, os, resource, socket, sys, threading
    from cnamd import fd_table

    def size():
        with open("/proc/self/status") as status:
            return next(int(l.split()[1]) for l in status if l.startswith("FDSize:"))

    threading.Thread(target=threading.Event().wait, daemon=True).start()
    if len(sys.argv) > 2:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), hard))
    kept = os.open(os.devnull, os.O_RDONLY)  # a descriptor the growth must leave alone
    before = size()
    top = fd_table.grow(int(sys.argv[1]))
    grown = size()
    opened = [socket.socket() for _ in range(min(1000, top - 16))]
    after_sockets = size()
    os.fstat(kept)  # still open
    open_now = len(os.listdir("/proc/self/fd"))
    print(json.dumps({"before": before, "top": top, "grown": grown,
                      "after_sockets": after_sockets, "open_now": open_now}))
    """
)


def _probe(*args: int) -> dict[str, int]:
    ran = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    found: dict[str, int] = json.loads(ran.stdout)
    return found


def test_the_table_is_grown_once_and_opening_connections_then_does_not_grow_it() -> None:
    found = _probe(4096)
    assert found["before"] < 4096 <= found["grown"]
    assert found["top"] == 4095
    # a thousand sockets later the table is the one grown at start: no growth, no wait
    assert found["after_sockets"] == found["grown"]
    # the probe descriptor went again: the sockets, the thread's, the kept one, stdio
    assert found["open_now"] < 1100


def test_the_growth_stops_at_the_soft_descriptor_limit() -> None:
    found = _probe(100_000, 600)
    assert found["top"] == 599
    assert 600 <= found["grown"] < 100_000


def test_the_capacity_covers_every_connection_cap_a_worker_has() -> None:
    defaults = load(environ={})
    assert fd_table.capacity(defaults) == (
        defaults.http.max_connections
        + defaults.sip.tcp_max_connections
        + defaults.database.pool_max
        + fd_table.OWN
    )
    source = {"name": "p", "kind": "http-json", "url": "http://127.0.0.1:1/{e164}"}
    chained = load(
        environ={},
        overrides=[
            "upstream.sources=" + json.dumps([source | {"max_concurrency": 40}]),
            "http.max_connections=100",
            "sip.tcp_max_connections=50",
        ],
    )
    assert fd_table.capacity(chained) == 100 + 50 + 40 + chained.database.pool_max + fd_table.OWN
    no_sip = load(environ={}, overrides=["sip.listen=", "http.max_connections=100"])
    assert fd_table.capacity(no_sip) == 100 + no_sip.database.pool_max + fd_table.OWN
