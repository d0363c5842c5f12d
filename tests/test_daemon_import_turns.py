"""An import's turn in a real ``cnamd serve --workers 2`` while it serves dips and lookups.

The worker whose upload holds the turn (store/imports.py, ``IMPORT_TURN``) is SIGKILLed
while another worker's upload waits behind it. The turn is a session lock, so it goes
with the killed worker's database connection: the waiting upload is imported and
answered, the killed one is stored whole or not at all, the supervisor replaces the
worker (which answers 503 until caught up), the killed worker's bulk workers exit, and no
dip or lookup meanwhile gets another error status."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator

import asyncpg
import psutil
import pytest

from cnamd.store.embedded import EmbeddedPostgres
from import_turns import a_turn_held, waiting_for_a_turn
from ops_daemon import Daemon, ServingClients, eventually, http_get, serving
from test_daemon import partner_key

pytestmark = pytest.mark.timeout(180)

IMPORT = "/api/partner/enterprise/demo/cnam-import"
BIG = 100_000  # rows: seconds of parsing, merging and reloading, time to kill its worker


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with serving(
        tmp_path_factory.mktemp("import-turns"),
        workers=2,
        # the uploads are transactions too large to apply live: loaded whole, as 10 MB are
        args=("--set", "cache.compact_threshold=1000"),
    ) as started:
        yield started


def csv(area: int, rows: int) -> bytes:
    lines = (f"+1{area}{2000000 + i:07d},Turn {area} {i}\n" for i in range(rows))
    return ("phone,name\n" + "".join(lines)).encode()


class Upload:
    """One upload on a connection of its own, and the worker that accepted it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.port: int = writer.get_extra_info("sockname")[1]
        self.reply: asyncio.Task[bytes] | None = None

    def worker(self, daemon: Daemon) -> int:
        """The worker process holding the other end (bounded: until it is accepted)."""
        found: list[int] = []

        def accepted() -> bool:
            for pid in daemon.workers():
                try:
                    conns = psutil.Process(pid).net_connections(kind="tcp")
                except psutil.NoSuchProcess:
                    continue
                if any(c.raddr and c.raddr.port == self.port for c in conns):
                    found.append(pid)
                    return True
            return False

        eventually(accepted, 10, "the upload's connection accepted by a worker")
        return found[0]

    def send(self, token: str, body: bytes) -> None:
        head = (
            f"POST {IMPORT} HTTP/1.1\r\nHost: cnamd\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: text/csv\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        self.reply = asyncio.ensure_future(self._read())

    async def _read(self) -> bytes:
        try:
            return await self.reader.read()  # to the end: Connection: close
        except ConnectionError:
            return b""
        finally:
            self.writer.close()


async def _upload_on(daemon: Daemon, avoid: int | None = None) -> tuple[Upload, int]:
    """A connection accepted by a worker other than ``avoid`` (bounded: 40 tries)."""
    for _ in range(40):
        upload = Upload(*await asyncio.open_connection("127.0.0.1", daemon.http_port))
        worker = upload.worker(daemon)
        if worker != avoid:
            return upload, worker
        upload.writer.close()
    raise AssertionError("every connection went to the same worker")


def test_a_worker_killed_holding_the_import_turn_passes_it_on(daemon: Daemon) -> None:
    token = partner_key(daemon)  # type: ignore[arg-type]  # ops_daemon.Daemon: same data_dir
    clients = ServingClients(daemon)
    orphans: list[psutil.Process] = []  # the killed worker's bulk workers, and the like
    clients.start()
    try:

        async def scene() -> tuple[bytes, bytes, int, int, int]:
            pg = EmbeddedPostgres(daemon.data_dir)  # the daemon's, joined as a second user
            admin = await asyncpg.connect(await pg.start())
            try:
                first, victim = await _upload_on(daemon)
                first.send(token, csv(303, BIG))
                await a_turn_held(admin)
                second, _ = await _upload_on(daemon, avoid=victim)
                second.send(token, csv(304, 2000))
                await waiting_for_a_turn(admin, 1)
                orphans.extend(psutil.Process(victim).children(recursive=True))
                os.kill(victim, signal.SIGKILL)
                assert first.reply is not None and second.reply is not None
                answered = await asyncio.wait_for(second.reply, 60)
                cut = await asyncio.wait_for(first.reply, 10)
                stored = [
                    await admin.fetchval(
                        "SELECT count(*) FROM cnam_entries WHERE key LIKE $1", f"+1{area}%"
                    )
                    for area in (303, 304)
                ]
                return answered, cut, stored[0], stored[1], victim
            finally:
                await admin.close()
                await pg.stop()  # left running for the daemon

        answered, cut, first_stored, second_stored, victim = asyncio.run(scene())
        daemon.replaced(victim, 2)
    finally:
        clients.stop()
    assert answered.startswith(b"HTTP/1.1 200 "), answered[:300]
    report = json.loads(answered.split(b"\r\n\r\n", 1)[1])
    assert (report["inserted"], report["rejected"]) == (2000, 0), report
    assert cut == b"", cut[:300]  # its worker died before it answered
    assert first_stored in (0, BIG)  # whole or nothing
    assert second_stored == 2000

    # served by both workers once the replacement has caught up (each lookup to either)
    def served_by_both() -> bool:
        for _ in range(20):
            status, body = http_get(daemon.base + "/v1/lookup/+13042001999?tenant=demo")
            if (status, b"Turn 304 1999" in body) != (200, True):
                return False
        return True

    eventually(served_by_both, 30, "the second upload served by both workers")
    # meanwhile the legitimate clients got no error status (the killed worker's own
    # connections broke, and are counted by their exceptions' names)
    statuses = {status for status in clients.statuses if isinstance(status, int)}
    assert statuses == {200}, clients.statuses
    # the replacement answers 503 until it has caught up, as designed (README, "Fresh
    # snapshots"); nothing else
    assert set(clients.answered) <= {302, 503} and clients.answered[302], clients.answered
    # and the killed worker's children went with it, not left holding the daemon's output
    assert orphans, "the upload's worker had started its bulk workers"
    eventually(lambda: not any(p.is_running() for p in orphans), 10, "its children gone")
