"""The serving process's file-descriptor table, grown once before it serves.

Linux grows a process's descriptor table by doubling (256, 512, 1024, ...) as
descriptors are opened, and never shrinks it. In a process with threads (a worker
has its executor's and libuv's) each growth waits for an RCU grace period
(``expand_fdtable`` calls ``synchronize_rcu`` when the table is shared), and the
thread that opened the descriptor, the event loop's, waits with it: 6-23 ms a step
on the 2-core VM of bench/README.md ("The descriptor table's growth"). So a burst of
connections that first took a worker past 256, 512 or 1,024 descriptors stalled its
whole loop. Growing the table at start-up to what the worker may hold moves those
waits before the first request. The memory is 8 bytes per slot: 128 KiB for the
default caps.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import resource

from cnamd.settings import Settings

__all__ = ["capacity", "grow"]

log = logging.getLogger("cnamd.fd_table")

#: the process's own descriptors beside its connections: listeners, the database feed,
#: pipes, mapped files, spooled uploads, log files
OWN = 256


def capacity(settings: Settings) -> int:
    """Descriptors a worker may hold at its caps: HTTP and SIP TCP/TLS connections,
    requests in flight to upstream sources, the database pool, and its own."""
    sip = settings.sip
    sip_streams = sip.tcp_max_connections if sip.listen or sip.tls_listen else 0
    upstream = sum(source.max_concurrency for source in settings.upstream.sources)
    return settings.http.max_connections + sip_streams + upstream + settings.database.pool_max + OWN


def grow(slots: int) -> int:
    """Grow this process's descriptor table to hold ``slots`` descriptors (at most the
    soft ``RLIMIT_NOFILE``); the highest descriptor number it now holds without growing.

    One descriptor is duplicated to the lowest free number at or above the target
    (``F_DUPFD`` never replaces one in use, where ``dup2`` would) and closed again.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = slots - 1 if soft == resource.RLIM_INFINITY else min(slots, soft) - 1
    if top < 1:
        return 0
    probe = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        high = fcntl.fcntl(probe, fcntl.F_DUPFD_CLOEXEC, top)
    except OSError as exc:  # every number from top up is taken: the table is that big
        log.debug("descriptor table not grown", extra={"slots": slots, "reason": str(exc)})
        return top
    finally:
        with contextlib.suppress(OSError):
            os.close(probe)
    os.close(high)
    return high
