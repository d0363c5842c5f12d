"""http/spool.py: an upload's body in memory up to a batch, then in a file that only the
spool's own thread writes, reads and closes, in order, whatever the loop cancels."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from cnamd.http.spool import READ_BYTES, Spool

BATCH = 64 * 1024


class Watched(Spool):
    """A Spool that notes which thread appends, and can be held in its append (a disk the
    kernel throttles) until ``go`` is set."""

    def __init__(self, where: str | None) -> None:
        super().__init__(where, batch_bytes=BATCH)
        self.appenders: set[int] = set()
        self.go = threading.Event()
        self.go.set()
        self.entered = threading.Event()
        self.appended = 0

    def _append(self, chunks: list[bytes]) -> None:
        self.appenders.add(threading.get_ident())
        self.entered.set()
        self.go.wait(10)
        super()._append(chunks)
        self.appended += sum(map(len, chunks))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def collected(spool: Spool) -> bytes:
    return b"".join([chunk async for chunk in spool.read_back()])


async def test_a_small_body_stays_in_memory_and_starts_no_thread(tmp_path: Path) -> None:
    spool = Watched(str(tmp_path / "not-made"))  # never opened: the body is under a batch
    for chunk in (b"phone,name\n", b"+12135550100,A\n"):
        await spool.write(chunk)
    assert spool.size == 26
    assert await collected(spool) == b"phone,name\n+12135550100,A\n"
    assert spool.appenders == set()
    spool.close()


async def test_a_large_body_is_written_and_read_back_off_the_loop(tmp_path: Path) -> None:
    spool = Watched(str(tmp_path))
    body = b"".join(b"+1213555%04d,Name %d\n" % (i, i) for i in range(40_000))
    assert len(body) > 10 * BATCH
    for start in range(0, len(body), 10_000):  # chunks as a socket gives them
        await spool.write(body[start : start + 10_000])
    assert spool.size == len(body)
    pieces = [chunk async for chunk in spool.read_back()]
    assert b"".join(pieces) == body
    assert max(map(len, pieces)) <= READ_BYTES
    assert spool.appenders and threading.get_ident() not in spool.appenders
    spool.close()


async def test_a_missing_directory_is_an_os_error_of_the_write(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "not-made"), batch_bytes=BATCH)
    with pytest.raises(FileNotFoundError):
        for _ in range(4):
            await spool.write(b"x" * (BATCH // 2))
    spool.close()


async def test_close_after_a_cancelled_write_waits_for_it_on_the_thread(tmp_path: Path) -> None:
    """The loop cancels an upload while the disk holds its write: close returns at once,
    and the file is closed after the write, not under it; no descriptor is left."""
    before = open_fds()
    spool = Watched(str(tmp_path))
    await spool.write(b"a" * BATCH)  # the file is made
    spool.go.clear()
    spool.entered.clear()
    held = asyncio.create_task(spool.write(b"b" * BATCH))
    assert await asyncio.to_thread(spool.entered.wait, 10)  # the thread is in the append
    held.cancel()
    with pytest.raises(asyncio.CancelledError):
        await held
    closing = asyncio.get_running_loop().time()
    spool.close()
    assert asyncio.get_running_loop().time() - closing < 0.5  # did not wait for the disk
    spool.go.set()
    for _ in range(1000):
        if open_fds() == before:
            break
        await asyncio.sleep(0.005)
    assert open_fds() == before
    assert spool.appended == 2 * BATCH  # the held write ended, then the close
