"""The full load's digest, beside the stream (hosts of _PARALLEL_DIGEST_CPUS or more) or
after it (smaller hosts): either way it describes the very snapshot streamed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from cnamd.replica import loader
from cnamd.store.entries import served_digest

INSERT = (
    "INSERT INTO cnam_entries (scope, key, is_prefix, name, approval, approved_at)"
    " VALUES ('global', $1, false, $2, 'approved', now())"
)


@pytest.mark.parametrize("parallel_from", [1, 1 << 16], ids=["beside", "after"])
async def test_the_snapshot_and_its_digest_agree_under_concurrent_writes(
    demo_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parallel_from: int
) -> None:
    monkeypatch.setattr(loader, "_PARALLEL_DIGEST_CPUS", parallel_from)
    conns = [await asyncpg.connect(demo_url) for _ in range(3)]
    stream, digest, writer = conns
    await writer.executemany(INSERT, [(f"+1555{i:07d}", f"Before {i}") for i in range(5000)])
    before = await served_digest(writer)
    writing = asyncio.Event()
    stop = asyncio.Event()

    async def write() -> int:
        written = 0
        while not stop.is_set():
            await writer.execute(INSERT, f"+1666{written:07d}", f"During {written}")
            written += 1
            writing.set()
        return written

    try:
        path = tmp_path / "cache.snapshot"
        writes = asyncio.ensure_future(write())
        await asyncio.wait_for(writing.wait(), 10)
        # a count that differs from the digest's raises in build_snapshot itself
        count = await loader.build_snapshot(stream, digest, path, "test")
        stop.set()
        written = await writes
        cache, info = loader.open_snapshot(path)
        try:
            assert count == len(cache) == info["count"]
            assert before.count < count < before.count + written + 1
        finally:
            cache.close()
        # and with nothing written since, the same figures as the database's
        count = await loader.build_snapshot(stream, digest, path, "test")
        now = await served_digest(writer)
        cache, info = loader.open_snapshot(path)
        cache.close()
        assert (info["count"], info["hash_xor"], info["last_change_id"]) == (
            now.count,
            now.hash_xor,
            now.last_change_id,
        )
    finally:
        stop.set()
        for conn in conns:
            await conn.close()
