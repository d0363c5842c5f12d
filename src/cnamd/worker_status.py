"""Workers and their supervisor: the heartbeat up, the supervisor's view back down.

A worker's own /readyz cannot see a frozen sibling; the supervisor can. Each
worker's heartbeat (``heartbeat``) carries the change id its cache has applied; the
supervisor compares it with the host's cache (which follows the database
itself) and writes what it sees every half second. /readyz and /metrics,
answered by any worker, report it, so a probe or a scrape that reaches a
healthy worker does not hide a frozen one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STALE_AFTER = 5.0  # seconds: an older status means the supervisor itself is stuck
HEARTBEAT_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One worker as the supervisor sees it. ``change_id`` None: still starting."""

    index: int
    pid: int
    change_id: int | None
    lag: float
    restarts: int

    def keeps_up(self, max_lag: float) -> bool:
        """Started, and not behind the host's cache for more than ``max_lag`` seconds."""
        return self.change_id is not None and self.lag <= max_lag


@dataclass(frozen=True, slots=True)
class HostStatus:
    """The whole host: the host cache's change id and every worker against it."""

    written_at: float  # wall clock
    head: int
    max_lag: float
    workers: tuple[WorkerView, ...]

    def problems(self, now: float) -> list[str]:
        """Why the daemon is not ready, as /readyz says it (empty: all is well)."""
        age = now - self.written_at
        if age > STALE_AFTER:
            return [f"supervisor status is {age:.0f} s old"]
        found = []
        for worker in self.workers:
            if worker.keeps_up(self.max_lag):
                continue
            if worker.change_id is None:
                found.append(f"worker {worker.index} is starting")
            else:
                found.append(
                    f"worker {worker.index} is {worker.lag:.1f} s behind the host's cache"
                    f" (change {worker.change_id} of {self.head})"
                )
        return found

    def exposition(self) -> bytes:
        """Prometheus text lines for the host and its workers, appended to /metrics."""
        lines = [
            *_family(
                "cnamd_host_cache_change_id",
                "gauge",
                "Change id applied by the host's cache (the supervisor's).",
                [("", str(self.head))],
            ),
            *_family(
                "cnamd_worker_lag_seconds",
                "gauge",
                "How long a worker's cache has been behind the host's cache.",
                [(_worker(w), f"{w.lag:.3f}") for w in self.workers],
            ),
            *_family(
                "cnamd_worker_ready",
                "gauge",
                "1 when a worker has started and keeps up with the host's cache.",
                [(_worker(w), str(int(w.keeps_up(self.max_lag)))) for w in self.workers],
            ),
            *_family(
                "cnamd_worker_restarts_total",
                "counter",
                "Restarts of a worker slot (it died, fell silent or fell behind).",
                [(_worker(w), str(w.restarts)) for w in self.workers],
            ),
        ]
        return ("\n".join(lines) + "\n").encode()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostStatus:
        workers = tuple(WorkerView(**w) for w in data["workers"])
        return cls(data["written_at"], data["head"], data["max_lag"], workers)


def _worker(view: WorkerView) -> str:
    return f'{{worker="{view.index}"}}'


def _family(name: str, kind: str, text: str, samples: list[tuple[str, str]]) -> list[str]:
    """One metric family in the text exposition format: HELP, TYPE, then its samples."""
    return [
        f"# HELP {name} {text}",
        f"# TYPE {name} {kind}",
        *(f"{name}{labels} {value}" for labels, value in samples),
    ]


def write_status(path: Path, status: HostStatus) -> None:
    """Replace ``path`` atomically (readers see the old file or the new, never half)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(status.to_json()))
    os.replace(tmp, path)


def read_status(path: Path) -> HostStatus | None:
    """The last status written, or None when there is none (yet) or it is unreadable."""
    try:
        return HostStatus.from_json(json.loads(path.read_bytes()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class LagWatch:
    """How long each worker has been behind the host's cache.

    Remembers when the head passed each change id, so a worker at id ``w`` has
    been behind since the first moment the head was past ``w``.
    """

    def __init__(self) -> None:
        self._passed: deque[tuple[float, int]] = deque()  # (monotonic time, head), rising

    def head_at(self, head: int, now: float) -> None:
        if not self._passed or head > self._passed[-1][1]:
            self._passed.append((now, head))
        elif head < self._passed[-1][1]:  # a reload onto another database's log
            self._passed.clear()
            self._passed.append((now, head))

    def lag(self, change_id: int, now: float) -> float:
        """Seconds since the head first went past ``change_id`` (0: not behind)."""
        for at, head in self._passed:
            if head > change_id:
                return now - at
        return 0.0

    def forget_before(self, change_id: int) -> None:
        """Drop what no worker at or past ``change_id`` can need (keeps the newest)."""
        while len(self._passed) > 1 and self._passed[1][1] <= change_id:
            self._passed.popleft()


async def heartbeat(fd: int, progress: Callable[[], int | None]) -> None:
    """In a worker: tell the supervisor we are alive, and the change id our cache has
    applied (``progress``; None: not caught up yet), until cancelled or orphaned."""
    while True:
        change_id = progress()
        try:
            os.write(fd, b"-\n" if change_id is None else b"%d\n" % change_id)
        except BlockingIOError:
            pass
        except OSError:  # the supervisor is gone: stop serving
            os.kill(os.getpid(), signal.SIGTERM)
            return
        await asyncio.sleep(HEARTBEAT_INTERVAL)
