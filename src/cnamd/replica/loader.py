"""Full cache loads, built in a child process and handed over as a snapshot file.

Building in the serving process would stall every lookup: marisa-trie's build
holds the GIL (~20 s at 10M entries). So a child process streams the served
names from PostgreSQL in one REPEATABLE READ snapshot (one binary COPY, parsed
in C by ``cache/_builder.c``; the digest on a second connection in the
same exported snapshot), builds, and writes a snapshot file (temp file, fsync,
rename); the serving process maps that file (its pages shared with every other
worker) and catches up from the change id recorded in it. The child's heap dies
with it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from cnamd import cpus, logs
from cnamd.cache import held_file
from cnamd.cache.snapshot import map_sections, write_sections
from cnamd.cache.trie import CacheBuilder, NameCache
from cnamd.errors import SnapshotError, StoreUnavailable
from cnamd.settings import LogSettings
from cnamd.store import entries, upstream
from cnamd.store.contexts import load_context_rows
from cnamd.store.pool import connect_once

log = logging.getLogger("cnamd.replica.loader")  # also when run as __main__

SPEC_ENV = "CNAMD_LOADER"
META_FORMAT = 2  # 2: contexts carry API keys
EXIT_UNREACHABLE = 2
_PROGRESS_EVERY = 5.0
# With fewer CPUs the digest waits for the stream: the two database backends and this
# process's parsing side by side took every core of a 2-core host, and the dips' p99
# during a pair of 10 MB uploads went from about 1.7 to 3.5 ms (bench/README.md,
# "One import at a time"); in series a reload takes longer, the serving does not wait.
_PARALLEL_DIGEST_CPUS = 4


def read_meta(meta: bytes) -> dict[str, Any]:
    """The snapshot's metadata: change id, digest and who-asks rows; SnapshotError if off."""
    try:
        info: dict[str, Any] = json.loads(meta)
        if info.get("format") != META_FORMAT:
            raise SnapshotError(f"unknown metadata format {info.get('format')!r}")
        for field in ("last_change_id", "count", "hash_xor", "contexts"):
            if field not in info:
                raise SnapshotError(f"metadata lacks {field}")
    except (ValueError, AttributeError) as exc:
        raise SnapshotError(f"unreadable metadata: {exc}") from exc
    return info


def tail_path(path: Path) -> Path:
    """Where the overlay written since the base at ``path`` was built is kept."""
    return path.with_name(path.name + ".tail")


def open_snapshot(path: Path) -> tuple[NameCache, dict[str, Any]]:
    """Map a snapshot, bring it forward with its tail, read the metadata of both.

    The tail (``tail_path``) is the host loader's overlay over this very base
    (same ``base_id``), refreshed every few seconds: a worker or a restart
    that maps the base starts seconds behind the database, not a full load
    behind. A tail of another base (the base was replaced since) is ignored.
    SnapshotError (nothing left mapped) if the base is not sound.
    """
    cache, meta = NameCache.open(path)
    try:
        info = read_meta(meta)
    except SnapshotError:
        cache.close()
        raise
    tail = tail_path(path)
    if not tail.exists():
        return cache, info
    try:
        snapshot = map_sections(tail)
    except SnapshotError as exc:
        log.warning("snapshot tail refused", extra={"path": str(tail), "reason": exc.reason})
        return cache, info
    try:
        tail_info = read_meta(bytes(snapshot.view(b"META")))
        base_id = info.get("base_id")
        if (
            base_id is not None
            and tail_info.get("base_id") == base_id
            and tail_info["last_change_id"] > info["last_change_id"]
        ):
            cache.replace_overlay(snapshot.view(b"PEND"), tail)
            info = {**info, **tail_info}
    except SnapshotError as exc:
        # the overlay may be half replayed: start again from the base alone
        log.warning("snapshot tail refused", extra={"path": str(tail), "reason": exc.reason})
        cache.close()
        snapshot.close()
        return open_base(path)
    snapshot.close()
    return cache, info


def open_base(path: Path) -> tuple[NameCache, dict[str, Any]]:
    """Map a snapshot without its tail; SnapshotError (nothing left mapped) if off."""
    cache, meta = NameCache.open(path)
    try:
        return cache, read_meta(meta)
    except SnapshotError:
        cache.close()
        raise


def save_tail(path: Path, records: bytes, info: dict[str, Any]) -> None:
    """Write overlay ``records`` and ``info`` (change id, digest, contexts) as the tail of
    the base at ``path`` (temp file, fsync, rename); ``info`` names that base's ``base_id``."""
    meta = json.dumps({"format": META_FORMAT, **info}).encode()
    write_sections(tail_path(path), [(b"PEND", memoryview(records)), (b"META", memoryview(meta))])


def snapshot_usable(path: Path) -> bool:
    """True when ``path`` holds a snapshot that maps and carries readable metadata."""
    if not path.exists():
        return False
    try:
        cache, _info = open_snapshot(path)
    except SnapshotError:
        return False
    cache.close()
    return True


async def build_snapshot(
    conn: asyncpg.Connection, digest_conn: asyncpg.Connection, path: Path, cause: str
) -> int:
    """Stream every served name in one snapshot, build, write ``path``; the entry count.

    The digest (a count and an md5 per row, seconds at 10M) runs on ``digest_conn``
    in the same exported snapshot: while ``conn`` streams when the loader may use
    _PARALLEL_DIGEST_CPUS, after the stream on a smaller host.
    """
    started = time.monotonic()
    next_progress = started + _PROGRESS_EVERY
    builder = CacheBuilder()

    async def take(chunk: bytes) -> None:  # a bytearray in fact: add_copy takes both
        nonlocal next_progress
        builder.add_copy(chunk)
        if time.monotonic() >= next_progress:
            next_progress += _PROGRESS_EVERY
            log.info("cache load in progress", extra={"entries": len(builder), "cause": cause})

    async with conn.transaction(isolation="repeatable_read", readonly=True):
        snapshot = await entries.export_snapshot(conn)
        async with digest_conn.transaction(isolation="repeatable_read", readonly=True):
            await entries.share_snapshot(digest_conn, snapshot)
            digesting = None
            if cpus.usable() >= _PARALLEL_DIGEST_CPUS:
                digesting = asyncio.ensure_future(entries.digest_now(digest_conn))
            try:
                rows = await load_context_rows(conn)
                held = await upstream.load_live(conn) if held_file.available() else None
                await entries.copy_served(conn, take)
                digest = await (digesting or entries.digest_now(digest_conn))
            finally:
                if digesting is not None and not digesting.done():
                    digesting.cancel()
                    await asyncio.gather(digesting, return_exceptions=True)
    streamed = time.monotonic()
    cache = builder.build()
    count = len(cache)
    if count != digest.count:  # pragma: no cover - one snapshot cannot disagree with itself
        raise RuntimeError(f"streamed {count} entries, the snapshot counted {digest.count}")
    built = time.monotonic()
    base_id = uuid.uuid4().hex
    meta = {
        "format": META_FORMAT,
        # names this base: a tail (open_snapshot) applies to the base it was written over
        "base_id": base_id,
        "last_change_id": digest.last_change_id,
        "count": digest.count,
        "hash_xor": digest.hash_xor,
        "contexts": rows.to_json(),
        # for cnamd_cache_last_full_load_timestamp_seconds after a warm start
        "built_at": time.time(),
        "load_seconds": round(time.monotonic() - started, 3),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    if held is not None:  # before the base: a process that maps the new base finds its answers
        held_file.write_held(
            held_file.held_path(path), held, base_id=base_id, last_change_id=digest.last_change_id
        )
    cache.save(path, json.dumps(meta).encode())
    cache.close()
    log.info(
        "cache load built",
        extra={
            "entries": count,
            "cause": cause,
            "stream_seconds": round(streamed - started, 3),
            "build_seconds": round(built - streamed, 3),
            "write_seconds": round(time.monotonic() - built, 3),
        },
    )
    return count


#: the loader child's nice value (main() says why)
LOADER_NICE = 5


async def load_in_child(
    url: str, path: Path, *, connect_timeout: float, log_settings: LogSettings, cause: str
) -> None:
    """Run ``build_snapshot`` in a child process; StoreUnavailable if it could not finish."""
    spec = {
        "url": url,
        "path": str(path),
        "connect_timeout": connect_timeout,
        "cause": cause,
        "log": {"level": log_settings.level, "format": log_settings.format},
    }
    env = dict(os.environ)
    env[SPEC_ENV] = json.dumps(spec)
    # the child's own (zero) gauges must not join a worker's merged metrics
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    # subprocess.Popen in a thread, not the loop's create_subprocess_exec: uvloop's
    # forks this process, and the fork copies its page tables on the loop's thread (3-6 ms
    # at 50 MB resident, 18-24 ms at 400 MB), a stall on every reload of a process that
    # serves (--workers 1); Popen's vfork takes under 0.3 ms whatever the size
    # (bench/bench_spawn.py; bench/README.md, "A reload's spawn"). The wait is a thread's.
    spawning = asyncio.ensure_future(
        asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-m", "cnamd.replica.loader"],
            env=env,
            stdin=subprocess.DEVNULL,
        )
    )
    child: subprocess.Popen[bytes] | None = None
    try:
        child = await asyncio.shield(spawning)
        code = await asyncio.to_thread(child.wait)
    except asyncio.CancelledError:
        if child is None:  # cancelled while it started: it runs all the same
            child = await spawning
        child.kill()
        await asyncio.to_thread(child.wait)
        raise
    if code == EXIT_UNREACHABLE:
        raise StoreUnavailable("the cache load could not reach the database", field="database.url")
    if code != 0:
        raise StoreUnavailable(f"the cache load failed (loader exit code {code})")


async def _child(spec: dict[str, Any]) -> int:
    conns: list[asyncpg.Connection] = []
    try:
        try:
            for _ in range(2):  # the stream's and the digest's
                conns.append(await connect_once(spec["url"], spec["connect_timeout"]))
        except StoreUnavailable as exc:
            log.error("cache load: database unreachable", extra={"reason": exc.reason})
            return EXIT_UNREACHABLE
        try:
            await build_snapshot(conns[0], conns[1], Path(spec["path"]), spec["cause"])
        except (
            OSError,
            ValueError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            SnapshotError,
        ) as exc:
            log.error("cache load failed", extra={"reason": f"{type(exc).__name__}: {exc}"})
            return 1
    finally:
        for conn in conns:
            await conn.close()
    return 0


def main() -> None:
    """Entry of the loader child (``python -m cnamd.replica.loader``, spec in the environment)."""
    # Behind the workers for the CPU: a reload after a big import ran beside them at the
    # same weight and stalled their dips by 0.1-0.5 s on a busy host (bench/README.md,
    # "CSV uploads beside dips and lookups"); lookups are answered from the old cache
    # meanwhile, so a slower load only delays when the import's names are served.
    os.setpriority(os.PRIO_PROCESS, 0, max(LOADER_NICE, os.getpriority(os.PRIO_PROCESS, 0)))
    cpus.step_aside()  # server.cpus: off the serving cores
    spec = json.loads(os.environ[SPEC_ENV])
    logs.configure(LogSettings(**spec["log"]))
    sys.exit(asyncio.run(_child(spec)))


if __name__ == "__main__":
    main()
