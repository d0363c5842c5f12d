"""Cores kept for serving (``server.cpus``): the serving workers on them, the rest aside.

On a host shared with its PostgreSQL, two concurrent 10 MB imports took PostgreSQL
to more than a core, and the dips and lookups waited for one: their p99 went from
about 1.5 ms idle to 5-11 ms, though the imports' parsing was already off the
serving loop (bench/README.md, "Cores kept for serving"). Nice values and the
scheduler's slices did not change that; keeping the serving workers' cores free of
the imports' work did. With ``server.cpus`` set, the process that starts the
daemon splits the CPUs it may run on into the serving set and the others
(``plan``), and each process takes its side as it starts: a serving worker
``serve_here``, the bulk workers and the loader ``step_aside``, an embedded
PostgreSQL and its backends ``step_aside_tree`` (backends forked later inherit it).
The split travels in the environment, so that processes spawned by other
processes (a worker's bulk workers) find it. A PostgreSQL that cnamd does not start
is the operator's to place (systemd's ``CPUAffinity=``).
"""

from __future__ import annotations

import logging
import os

import psutil

from cnamd.errors import ConfigError
from cnamd.settings import Settings, parse_cpus

log = logging.getLogger(__name__)

#: "SERVING/ASIDE" as ``plan`` decided them, for the processes the daemon starts
SPLIT_ENV = "CNAMD_CPU_SPLIT"


def _text(cpus: frozenset[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))


def plan(setting: str) -> None:
    """Decide the split for this daemon (its first process, before it starts any other).

    ConfigError when ``setting`` names a CPU this process may not run on; a split
    that leaves nothing aside pins nothing (a warning says so)."""
    os.environ.pop(SPLIT_ENV, None)
    if not setting:
        return
    serving = parse_cpus(setting)
    allowed = frozenset(os.sched_getaffinity(0))
    if not serving <= allowed:
        raise ConfigError(
            f"server.cpus names CPUs this process may not run on: "
            f"{_text(serving - allowed)} (it may run on {_text(allowed)})"
        )
    aside = allowed - serving
    if not aside:
        log.warning(
            "server.cpus leaves no CPU for the rest; nothing is pinned",
            extra={"cpus": _text(serving)},
        )
        return
    os.environ[SPLIT_ENV] = f"{_text(serving)}/{_text(aside)}"
    log.info("cores kept for serving", extra={"serving": _text(serving), "aside": _text(aside)})


def worker_count(settings: Settings) -> int:
    """The daemon's serving workers: ``server.workers``, or one per CPU when it is 0."""
    return settings.server.workers or os.cpu_count() or 1


def usable() -> int:
    """How many CPUs this process may run on (its affinity, where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def for_background() -> int:
    """CPUs background work (the bulk workers) may take without taking serving's: the
    aside set when ``server.cpus`` splits them, else all this process may use but one."""
    split = _split()
    if split is not None:
        return len(split[1])
    return max(1, usable() - 1)


def _split() -> tuple[frozenset[int], frozenset[int]] | None:
    value = os.environ.get(SPLIT_ENV)
    if not value:
        return None
    serving, _, aside = value.partition("/")
    return parse_cpus(serving), parse_cpus(aside)


def serve_here() -> None:
    """A serving worker: on the serving CPUs (its threads and children follow)."""
    split = _split()
    if split is not None:
        os.sched_setaffinity(0, split[0])


def step_aside() -> None:
    """A bulk worker or the loader: off the serving CPUs."""
    split = _split()
    if split is not None:
        os.sched_setaffinity(0, split[1])


def step_aside_tree(pid: int) -> None:
    """``pid`` and the processes it has started so far (an embedded PostgreSQL's
    postmaster and its background processes) off the serving CPUs."""
    split = _split()
    if split is None:
        return
    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    except psutil.Error:
        return  # it ended meanwhile
    for member in members:
        try:
            for thread in member.threads():
                os.sched_setaffinity(thread.id, split[1])
        except (psutil.NoSuchProcess, ProcessLookupError):
            continue  # it ended meanwhile
        except (psutil.AccessDenied, PermissionError):
            log.warning(
                "cannot move a PostgreSQL process off the serving CPUs",
                extra={"pid": member.pid},
            )
