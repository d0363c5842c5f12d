"""Per-source limits that hold across worker processes: one shared table per limit.

A source's requests reach every worker (UDP is steered at random, HTTP shares
one listening socket), so a table per process would let it make workers x
the limit. The supervisor creates a ``LimitRegion`` (a memfd mapping) before
it spawns the workers and hands each its descriptor; every worker meters
sources in the same tables (``_buckets.c``: GCRA with one compare-and-swap per
request). A single process (``--workers 1``) creates its own.

Built without the C extension (``CNAMD_PURE_PYTHON``), each process keeps a
``TokenBucket`` of its own and the limit applies per worker, as logged.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import tempfile
from typing import Protocol

from cnamd.ratelimit import TokenBucket

try:
    from cnamd._buckets import SharedBucket
except ImportError:  # no C compiler: per-process buckets
    SharedBucket = None  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)

#: the limits with a table in the region, in order; "upstream": which worker asks an
#: upstream source for a number (a bucket of one token per number, upstream/chain.py)
TABLES = ("sip", "auth", "upstream")
SLOTS = 65536  # sources remembered per table (16 bytes each)
_HEADER = struct.Struct("=8sIIQQ")  # magic, tables, slots, seed0, seed1
_MAGIC = b"CNMDLIM1"
_TABLE_START = 4096


class RateLimiter(Protocol):
    """A per-source token bucket: ``TokenBucket`` (one process) or ``SharedBucket``."""

    @property
    def rate(self) -> float: ...
    @property
    def burst(self) -> float: ...
    @property
    def retry_after(self) -> int: ...

    def allow(self, source: str, now: float) -> bool:
        """Take one token for ``source`` at ``now`` (monotonic seconds); False when empty."""
        ...

    def available(self, source: str, now: float) -> float:
        """Tokens ``source`` holds at ``now``, without taking one."""
        ...

    def retune(self, rate: float, burst: float) -> None:
        """New limits (SIGHUP) for every source, keeping what each has spent."""
        ...


def region_size(slots: int) -> int:
    return _TABLE_START + len(TABLES) * slots * 16


class LimitRegion:
    """The shared tables of one host's workers, mapped from an inheritable descriptor."""

    def __init__(self, fd: int, mapping: mmap.mmap, slots: int, seeds: tuple[int, int]) -> None:
        self.fd = fd
        self._mapping = mapping
        self.slots = slots
        self._seeds = seeds
        self._buckets: dict[str, RateLimiter] = {}
        self.shared = SharedBucket is not None

    @classmethod
    def create(cls, slots: int = SLOTS) -> LimitRegion:
        """A new region with empty tables and a fresh random seed for the source hash."""
        if slots < 8 or slots & (slots - 1):
            raise ValueError("slots must be a power of 2 >= 8")
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("cnamd-limits")
        else:  # not Linux: an unlinked file serves the same
            with tempfile.TemporaryFile() as file:
                fd = os.dup(file.fileno())
        try:
            os.ftruncate(fd, region_size(slots))
            mapping = mmap.mmap(fd, region_size(slots))
        except OSError:
            os.close(fd)
            raise
        seed0, seed1 = struct.unpack("=QQ", os.urandom(16))
        _HEADER.pack_into(mapping, 0, _MAGIC, len(TABLES), slots, seed0, seed1)
        return cls(fd, mapping, slots, (seed0, seed1))

    @classmethod
    def attach(cls, fd: int) -> LimitRegion:
        """The region the supervisor created, from the descriptor it passed down."""
        size = os.fstat(fd).st_size
        if size < _HEADER.size:
            raise ValueError("not a limits region: too small")
        mapping = mmap.mmap(fd, size)
        magic, tables, slots, seed0, seed1 = _HEADER.unpack_from(mapping, 0)
        if magic != _MAGIC or tables != len(TABLES) or size != region_size(slots):
            mapping.close()
            raise ValueError("not a limits region of this version")
        return cls(fd, mapping, slots, (seed0, seed1))

    def bucket(self, table: str, rate: float, burst: float) -> RateLimiter:
        """The limiter of ``table`` (one of ``TABLES``) with this process's rate and burst;
        asked again (SIGHUP), the same one retuned: every source keeps its debt."""
        bucket = self._buckets.get(table)
        if bucket is not None:
            bucket.retune(rate, burst)
        elif SharedBucket is None:
            bucket = self._buckets[table] = TokenBucket(rate, burst, self.slots)
        else:
            offset = _TABLE_START + TABLES.index(table) * self.slots * 16
            bucket = SharedBucket(self._mapping, offset, self.slots, *self._seeds, rate, burst)
            self._buckets[table] = bucket
        return bucket

    def close(self) -> None:
        """Unmap and close the descriptor; the buckets handed out stop working."""
        for bucket in self._buckets.values():
            if SharedBucket is not None and isinstance(bucket, SharedBucket):
                bucket.release()
        self._buckets.clear()
        self._mapping.close()
        os.close(self.fd)


def warn_if_per_process(region: LimitRegion, workers: int) -> None:
    """Say so when limits cannot be shared and several workers run."""
    if not region.shared and workers > 1:
        log.warning(
            "per-source limits apply per worker (built without the C extension)",
            extra={"workers": workers},
        )
