"""Open-loop SIP dip and HTTP lookup clients that time each answer twice: when the
kernel put it in the client's socket (``SO_TIMESTAMPNS``), and when the client's
event loop got to it.

On a 2-core host the client shares the cores with the daemon and its PostgreSQL.
While an import keeps them busy, the client itself waits for a core, and an answer
that arrived on time sits in its socket until then: "seen" then measures the
client's own scheduling, which a PBX on another host would not add. "Arrival" is
the daemon's latency as the wire had it (bench/README.md, "Answers timed on
arrival"). Written on sockets, not aiohttp's client: aiohttp does not pass on the
kernel's timestamps (ancillary data of ``recvmsg``).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time

from cnamd.sip.dip_client import build_invite

#: Linux's SO_TIMESTAMPNS (the "old" 64-bit timespec form); Python's socket module lacks it
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)

#: (sent at, on perf_counter; latency on arrival; latency as the loop saw it), in seconds
Sample = tuple[float, float, float]


def _arrival(ancdata: list[tuple[int, int, bytes]]) -> float | None:
    """The kernel's receive time of the data just read (CLOCK_REALTIME seconds)."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = _TIMESPEC.unpack(data[: _TIMESPEC.size])
            return seconds + nanoseconds / 1e9
    return None


def _stamped(sock: socket.socket) -> socket.socket:
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setblocking(False)
    return sock


class Dips:
    """INVITEs over UDP, each matched to its final answer by Call-ID."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.sock = _stamped(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        self.sock.bind(("127.0.0.1", 0))
        self.local = self.sock.getsockname()
        self.sent: dict[bytes, tuple[float, float]] = {}  # Call-ID: perf_counter, time
        self.samples: list[Sample] = []
        asyncio.get_running_loop().add_reader(self.sock, self._readable)

    def send(self) -> None:
        invite = build_invite("+492216698712", "+15550100", self.server, self.local, "udp")
        call_id = invite.split(b"Call-ID: ", 1)[1].split(b"\r\n", 1)[0]
        self.sent[call_id] = (time.perf_counter(), time.time())
        self.sock.sendto(invite, self.server)

    def _readable(self) -> None:
        while True:
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(65535, _ANCILLARY)
            except BlockingIOError:
                return
            now = time.time()
            if data[8:9] == b"1":  # provisional
                continue
            call_id = data.split(b"\r\nCall-ID: ", 1)[-1].split(b"\r\n", 1)[0]
            sent = self.sent.pop(call_id, None)
            if sent is not None:
                arrived = _arrival(ancdata) or now
                self.samples.append((sent[0], arrived - sent[1], now - sent[1]))

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock)
        self.sock.close()


class _Connection:
    """One keep-alive HTTP/1.1 connection with at most one request in flight."""

    def __init__(self, address: tuple[str, int], pool: Lookups) -> None:
        self.sock = _stamped(socket.create_connection(address))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pool = pool
        self.buffer = bytearray()
        self.sent = (0.0, 0.0)
        self.answer: asyncio.Future[tuple[int, float, float]] | None = None
        asyncio.get_running_loop().add_reader(self.sock, self._readable)

    def request(self, data: bytes) -> asyncio.Future[tuple[int, float, float]]:
        self.answer = asyncio.get_running_loop().create_future()
        self.sent = (time.perf_counter(), time.time())
        self.sock.send(data)  # ~100 bytes into an empty socket buffer: sent whole
        return self.answer

    def _readable(self) -> None:
        try:
            data, ancdata, _flags, _addr = self.sock.recvmsg(65536, _ANCILLARY)
        except BlockingIOError:
            return
        now = time.time()
        if not data:
            self.close()
            self.pool.lost(self)
            if self.answer is not None and not self.answer.done():
                self.answer.set_exception(ConnectionError("the daemon closed the connection"))
            return
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = bytes(self.buffer[:head_end]).decode("latin-1").lower()
        length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
        if len(self.buffer) < head_end + 4 + length:
            return
        status = int(head[9:12])
        del self.buffer[: head_end + 4 + length]
        arrived = _arrival(ancdata) or now
        answer, self.answer = self.answer, None
        if answer is not None and not answer.done():
            answer.set_result((status, arrived - self.sent[1], now - self.sent[1]))
        self.pool.idle.append(self)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock)
        self.sock.close()


class Lookups:
    """GET requests over a pool of keep-alive connections, one request on each at a time."""

    def __init__(self, address: tuple[str, int], path: str) -> None:
        self.address = address
        self.request = f"GET {path} HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n\r\n".encode()
        self.idle: list[_Connection] = []
        self.all: set[_Connection] = set()
        self.samples: list[Sample] = []

    async def lookup(self) -> None:
        conn = self.idle.pop() if self.idle else self._open()
        started = time.perf_counter()
        status, arrival, seen = await conn.request(self.request)
        assert status == 200, status
        self.samples.append((started, arrival, seen))

    def _open(self) -> _Connection:
        conn = _Connection(self.address, self)
        self.all.add(conn)
        return conn

    def lost(self, conn: _Connection) -> None:
        self.all.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)

    def close(self) -> None:
        for conn in self.all:
            conn.close()
        self.all.clear()
        self.idle.clear()
