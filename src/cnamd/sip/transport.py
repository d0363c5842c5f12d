"""Move SIP bytes over UDP, TCP and TLS; the ``Dip`` decides everything else.

Sockets are bound once (by the supervisor) and adopted here, so worker
processes can share them. Memory and descriptors stay bounded whatever a peer
sends: a datagram is answered at once; a stream buffers at most one capped
message, which must arrive whole within ``message_timeout`` of its first byte
(a sender trickling bytes cannot hold a connection); connections over the cap
are closed as they are accepted, idle ones after ``idle_timeout``; and a peer
that does not read its answers stops being read. Datagrams the kernel drops
on a full receive buffer are counted from the socket's own drop counter.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import socket
import ssl as ssl_module
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from cnamd import metrics, turn_budget
from cnamd.errors import ConfigError
from cnamd.sip.dip import Dip, UdpFront
from cnamd.sip.message import PING, StreamFramer

DEFAULT_RCVBUF = 8 * 1024 * 1024
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux; lifts the rmem_max cap for root
PONG = b"\r\n"  # RFC 5626 §4.4.1

try:
    from cnamd.sip._udp import pump as _c_pump
    from cnamd.sip._udp import steer_randomly as _c_steer

    _pump: Callable[..., tuple[int, int]] | None = _c_pump
    _steer: Callable[[int, int], None] | None = _c_steer
except ImportError:  # no C compiler (CNAMD_PURE_PYTHON) or not Linux: uvloop's transport
    _pump = None
    _steer = None

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """Caps for one TCP/TLS listener; memory per connection <= max_header + max_body."""

    max_header: int = 16384
    max_body: int = 16384
    idle_timeout: float = 120.0
    max_connections: int = 1024
    write_buffer: int = 256 * 1024  # stop reading a peer whose answers pile up past this
    tls_handshake_timeout: float = 10.0
    message_timeout: float = 10.0  # from a message's first byte to its last

    def __post_init__(self) -> None:
        if self.max_header < 512 or self.max_body < 0:
            raise ConfigError("max_header >= 512 and max_body >= 0", field="sip.tcp")
        if self.idle_timeout <= 0 or self.max_connections < 1 or self.write_buffer < 1024:
            raise ConfigError(
                "idle_timeout > 0, max_connections >= 1, write_buffer >= 1024", field="sip.tcp"
            )
        if self.message_timeout <= 0:
            raise ConfigError("must be > 0", field="sip.tcp_message_timeout")


def split_hostport(address: str, default_port: int = 5060) -> tuple[str, int]:
    """``"127.0.0.1:5060"``, ``"[::1]:5060"``, ``"::1"`` or ``"host"`` -> (host, port)."""
    text = address.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"bad address {address!r}", field="sip.listen")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ConfigError(f"bad address {address!r}", field="sip.listen")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"bad port in {address!r}", field="sip.listen")
    return host, int(port_text)


def _family(host: str) -> socket.AddressFamily:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_INET  # a name: resolved by bind() as IPv4


def _v6only(sock: socket.socket, dual_stack: bool) -> None:
    if sock.family == socket.AF_INET6:
        # Off only when asked: "::" and "0.0.0.0" can then both be listed as listeners.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)


def bind_udp(
    host: str,
    port: int,
    *,
    rcvbuf: int = DEFAULT_RCVBUF,
    dual_stack: bool = False,
    reuseport: bool = False,
) -> socket.socket:
    """A bound, non-blocking UDP socket with a large receive buffer.

    The kernel caps SO_RCVBUF at net.core.rmem_max; as root, SO_RCVBUFFORCE
    lifts that cap, otherwise the capped size is kept. Check the result with
    ``receive_buffer_size``. ``reuseport`` joins the address's SO_REUSEPORT
    group (``bind_udp_group``).
    """
    sock = socket.socket(_family(host), socket.SOCK_DGRAM)
    try:
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        _v6only(sock, dual_stack)
        if rcvbuf > 0:
            set_receive_buffer(sock, rcvbuf)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def bind_udp_group(
    host: str, port: int, count: int, *, rcvbuf: int = DEFAULT_RCVBUF, dual_stack: bool = False
) -> list[socket.socket]:
    """``count`` UDP sockets on one address, one per worker, each datagram steered to one
    of them at random (``_udp.steer_randomly``); OSError where that is unavailable.

    Why not one socket all workers share: each datagram then wakes every worker
    polling it, and all but one find nothing, a cost that grows with the number
    of workers (on 2 cores it is within the benchmark's noise, bench/README.md).
    Why not plain SO_REUSEPORT: the kernel hashes the sender's address and port
    to one socket, so one SBC would load one worker; random steering spreads
    even one source.
    """
    if _steer is None:
        raise OSError(errno.ENOPROTOOPT, "random UDP steering needs the C extension on Linux")
    if port == 0:
        raise ValueError("a steered group needs a fixed port")
    group: list[socket.socket] = []
    try:
        for _ in range(count):
            group.append(bind_udp(host, port, rcvbuf=rcvbuf, dual_stack=dual_stack, reuseport=True))
        _steer(group[0].fileno(), count)
    except BaseException:
        for sock in group:
            sock.close()
        raise
    return group


def set_receive_buffer(sock: socket.socket, size: int) -> int:
    """Ask for ``size`` bytes of receive buffer (forced past rmem_max when allowed); return
    what the kernel granted (Linux reports twice the requested bookkeeping size)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EINVAL, errno.ENOPROTOOPT):
            raise
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return receive_buffer_size(sock)


def receive_buffer_size(sock: socket.socket) -> int:
    """The socket's current SO_RCVBUF, as the kernel reports it."""
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)  # Linux >= 4.12
_MEMINFO_DROPS = 8  # SK_MEMINFO_DROPS: the u32 sk_drops, as /proc/net/udp's "drops"


def kernel_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel has dropped on ``sock`` since it was made (a full receive
    buffer, mostly), a u32 that wraps; None where the kernel does not say."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * (_MEMINFO_DROPS + 1))
    except OSError:
        return _proc_drops(sock)
    if len(raw) < 4 * (_MEMINFO_DROPS + 1):
        return _proc_drops(sock)
    return int(struct.unpack_from("=I", raw, 4 * _MEMINFO_DROPS)[0])


def _proc_drops(sock: socket.socket) -> int | None:
    """The "drops" column of /proc/net/udp{,6} for the socket's inode (older kernels)."""
    try:
        inode = str(os.fstat(sock.fileno()).st_ino)
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            with open(table) as lines:
                for line in lines:
                    fields = line.split()
                    if len(fields) > 12 and fields[9] == inode:
                        return int(fields[12])
    except (OSError, ValueError):
        pass
    return None


def bind_tcp(
    host: str, port: int, *, backlog: int = 1024, dual_stack: bool = False
) -> socket.socket:
    """A bound, listening, non-blocking TCP socket (SO_REUSEADDR, not SO_REUSEPORT)."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _v6only(sock, dual_stack)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


METRICS_FLUSH_INTERVAL = 1.0


async def _flush_metrics(
    serving: Callable[[], bool], also: Callable[[], None] | None = None
) -> None:
    """Move the hot-path tallies (the dip's and its lookups') into the metrics every
    second while the listener serves, after calling ``also`` (off the hot path)."""
    try:
        while serving():
            await asyncio.sleep(METRICS_FLUSH_INTERVAL)
            if also is not None:
                also()
            metrics.flush_tallies()
    finally:
        if also is not None:
            also()
        metrics.flush_tallies()


class SipDatagramProtocol(asyncio.DatagramProtocol):
    """One datagram in, at most one out, synchronously: the loop for builds without
    the C pump (``_udp.c``), through uvloop's datagram transport."""

    def __init__(self, listener: UdpListener) -> None:
        self._listener = listener
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if len(addr) != 2:  # IPv6: (host, port, flowinfo, scope_id)
            addr = (addr[0], addr[1])
        listener = self._listener
        try:
            answer = listener._answer(data, addr)
        except Exception:
            listener._failed()
            return
        if answer is None or self._transport is None:
            return
        if answer[1] == addr:  # equal, not the same: a compiled dip rebuilds the tuple
            self._transport.sendto(answer[0], addr)
        else:
            listener._send_elsewhere(*answer)

    def error_received(self, exc: Exception) -> None:
        """ICMP errors from earlier answers (port unreachable): nothing to do statelessly."""


# Datagrams answered per wake-up before the event loop runs its other work (HTTP, feed).
UDP_BUDGET = 256


class UdpListener:
    """Answers SIP on one bound UDP socket until ``close()``.

    With the C pump (``_udp.c``, Linux) a burst of datagrams costs one recvmmsg
    and one sendmmsg; without it, uvloop's datagram transport serves. Every
    second the socket's kernel drop counter goes into
    ``cnamd_sip_dropped_total{reason="kernel"}``, when ``count_kernel_drops``
    (one reader of a socket several workers share counts it).
    """

    def __init__(self, sock: socket.socket, dip: Dip, *, count_kernel_drops: bool = True) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._dip = dip
        # late (upstream) answers leave from this socket, as the caller expects
        self._answer = UdpFront(dip, self._send_elsewhere).answer
        self._transport: asyncio.DatagramTransport | None = None
        self._closed = False
        self._loop = asyncio.get_running_loop()
        # from now on: a restarted worker's predecessor counted the drops before it
        self._kernel_seen = kernel_drops(sock) if count_kernel_drops else None
        self._kernel_dropped = metrics.SIP_DROPPED.labels("kernel")
        self._flusher = self._loop.create_task(
            _flush_metrics(lambda: not self._closed, self.count_kernel_drops)
        )

    async def start(self) -> None:
        if _pump is None:
            self._transport, _ = await self._loop.create_datagram_endpoint(
                lambda: SipDatagramProtocol(self), sock=self._sock
            )
        else:
            self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        assert _pump is not None
        try:
            _, refused = _pump(self._fd, self._answer, self._send_elsewhere, UDP_BUDGET)
        except Exception:
            self._failed()
            return
        if refused:
            self._dip.dropped["send"].n += refused

    def count_kernel_drops(self) -> None:
        """Add the datagrams the kernel dropped since the last call to the metric."""
        seen = self._kernel_seen
        if seen is None or self._sock.fileno() < 0:
            return
        now = kernel_drops(self._sock)
        if now is None:
            return
        self._kernel_seen = now
        if now != seen:
            self._kernel_dropped.inc((now - seen) % (1 << 32))

    def _failed(self) -> None:
        """A bug in a callback, not a peer's doing: count it, log it, keep serving."""
        self._dip.dropped["internal"].inc()
        log.exception("SIP UDP answer failed")

    def _send_elsewhere(self, data: bytes, address: tuple[str, int]) -> None:
        """An answer for another address than the source (a Via port without rport)."""
        host = address[0]
        try:
            # Numeric only: a name would block the loop on DNS (and a request names it).
            socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
            self._sock.sendto(data, address)
        except OSError:
            self._dip.dropped["send"].inc()

    def pause(self) -> None:
        """Stop reading (shutdown's drain); the answers of dips parked on upstream still
        leave from the socket until ``close()``."""
        if self._transport is not None:
            pause_reading = getattr(self._transport, "pause_reading", None)
            if pause_reading is not None:
                with contextlib.suppress(RuntimeError, NotImplementedError):
                    pause_reading()
        else:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._fd)

    def close(self) -> None:
        """Stop answering and close the socket (this process's copy of it)."""
        if self._closed:
            return
        self._closed = True
        self._flusher.cancel()
        self.count_kernel_drops()
        if self._transport is not None:
            self._transport.close()
        else:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._fd)
            close_quietly(self._sock)


async def serve_udp(
    sock: socket.socket, dip: Dip, *, count_kernel_drops: bool = True
) -> UdpListener:
    """Answer SIP over an already bound UDP socket; ``close()`` the listener to stop."""
    listener = UdpListener(sock, dip, count_kernel_drops=count_kernel_drops)
    await listener.start()
    return listener


class _Connections:
    """Shared state of one stream listener."""

    __slots__ = ("count", "dip", "flusher", "limits", "timed_out", "transport_name", "turn")

    def __init__(self, dip: Dip, limits: StreamLimits, transport_name: str) -> None:
        self.turn = turn_budget.of_running_loop()  # the loop's share of a turn, for its fronts
        self.dip = dip
        self.limits = limits
        self.transport_name = transport_name
        self.count = 0
        self.flusher: asyncio.Task[None] | None = None
        self.timed_out = metrics.SIP_DROPPED.labels("message_timeout")


class SipStreamProtocol(asyncio.Protocol):
    """One TCP/TLS connection: frame by Content-Length, answer each message in order.

    One timer per connection closes it at the earlier of two deadlines: idle
    (no complete message for ``idle_timeout``) and the message deadline (a
    message begun ``message_timeout`` ago and not yet whole).

    The messages of one read are answered for at most the loop's share of a turn
    (turn_budget.py): a peer that writes 2,000 INVITEs at once held the loop for
    20-30 ms, and every UDP dip and timer behind them. Past the share the rest wait,
    in order, for the next turn, and the connection is not read from meanwhile.
    """

    def __init__(self, shared: _Connections) -> None:
        self._shared = shared
        limits = shared.limits
        self._framer = StreamFramer(limits.max_header, limits.max_body)
        self._transport: asyncio.Transport | None = None
        self._peer: tuple[str, int] = ("", 0)
        self._last = 0.0  # when the last message (or ping) completed
        self._begun = 0.0  # when the message now buffered began; 0 when none is
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._late = self._send_late
        self._queued: list[bytes] = []  # messages read, put off to a later turn
        self._writing_paused = False

    def _send_late(self, data: bytes, _destination: tuple[str, int]) -> None:
        """An answer that waited for an upstream source: on this connection, if still open."""
        transport = self._transport
        if transport is not None and not self._closing and not transport.is_closing():
            transport.write(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        shared = self._shared
        shared.count += 1
        self._transport = transport
        if shared.count > shared.limits.max_connections:
            # closed at accept, not held until it speaks: the cap bounds descriptors
            shared.dip.dropped["overload"].inc()
            self._closing = True
            transport.abort()
            return
        peer = transport.get_extra_info("peername")
        self._peer = (str(peer[0]), int(peer[1])) if peer else ("", 0)
        transport.set_write_buffer_limits(high=shared.limits.write_buffer)
        loop = asyncio.get_running_loop()
        self._last = loop.time()
        self._timer = loop.call_at(self._last + shared.limits.idle_timeout, self._check_timers)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or self._closing:
            return
        framer = self._framer
        frames = framer.feed(data)
        if frames or framer.buffered():
            self._progress(bool(frames))
        if self._queued:  # a turn's share ran out: these wait behind the rest
            self._queued += frames
        else:
            self._answer(frames)
        if not self._queued:
            self._end_if_unframed()

    def _answer(self, frames: list[bytes]) -> None:
        """Answer ``frames`` in order until the turn's share runs out; queue the rest for
        the next turn, reading nothing meanwhile. The answers leave in one write: one send
        syscall for a pipelining peer's whole burst instead of one per answer."""
        transport = self._transport
        assert transport is not None
        shared = self._shared
        dip = shared.dip
        name = shared.transport_name
        turn = shared.turn
        out: list[bytes] = []
        done = 0
        for frame in frames:
            if turn.spent():
                break
            done += 1
            if frame == PING:
                out.append(PONG)
                continue
            response = dip.handle(frame, self._peer, name, self._late)
            if response is not None:
                out.append(response)
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        if done < len(frames):
            if not self._queued:
                transport.pause_reading()
            self._queued = frames[done:]
            asyncio.get_running_loop().call_soon(self._resume)
        elif self._queued:
            self._queued = []
            if not self._writing_paused:
                transport.resume_reading()

    def _resume(self) -> None:
        """This connection's turn: answer what was put off, then read again."""
        transport = self._transport
        if transport is None or self._closing or transport.is_closing():
            return
        self._answer(self._queued)
        if not self._queued:
            self._end_if_unframed()

    def _end_if_unframed(self) -> None:
        """After the last message before a framing error: answer 400 and close."""
        framer = self._framer
        if framer.error:
            dip = self._shared.dip
            reason = "framing" if framer.error.startswith(b"bad") else "oversize"
            dip.dropped[reason].inc()
            name = self._shared.transport_name
            self._reject(dip.refuse(framer.rejected, self._peer, name, 400, framer.error))

    def _reject(self, response: bytes | None) -> None:
        """Answer (when the message could be answered) and close the connection."""
        transport = self._transport
        self._closing = True
        if transport is None:
            return
        if response is not None:
            transport.write(response)
        transport.close()
        # A peer that never reads would keep the answer (and the socket) forever.
        asyncio.get_running_loop().call_later(5.0, transport.abort)

    def _progress(self, completed: bool) -> None:
        """After a segment: note a completed message, and start the deadline of a message
        begun in this segment (the timer is moved earlier only when it would be late)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if completed:
            self._last = now
        if not self._framer.buffered():
            self._begun = 0.0
        elif completed or not self._begun:
            self._begun = now
            deadline = now + self._shared.limits.message_timeout
            timer = self._timer
            if timer is not None and timer.when() > deadline:
                timer.cancel()
                self._timer = loop.call_at(deadline, self._check_timers)

    def _check_timers(self) -> None:
        """Close the connection at its idle or message deadline; else wait for the next."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        limits = self._shared.limits
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._begun and now - self._begun >= limits.message_timeout:
            self._shared.timed_out.inc()
            transport.abort()
            return
        if now - self._last >= limits.idle_timeout:
            transport.abort()
            return
        due = self._last + limits.idle_timeout
        if self._begun:
            due = min(due, self._begun + limits.message_timeout)
        self._timer = loop.call_at(due, self._check_timers)

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._transport is not None and not self._closing and not self._queued:
            self._transport.resume_reading()  # else once the queue is answered

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._shared.count -= 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None


async def serve_tcp(
    sock: socket.socket,
    dip: Dip,
    *,
    ssl: ssl_module.SSLContext | None = None,
    limits: StreamLimits | None = None,
) -> asyncio.Server:
    """Answer SIP over an already listening TCP socket, with TLS when ``ssl`` is given.

    Close the returned server (``close()`` then ``await wait_closed()``) to stop.
    """
    limits = limits or StreamLimits()
    shared = _Connections(dip, limits, "tcp" if ssl is None else "tls")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SipStreamProtocol(shared),
        sock=sock,
        ssl=ssl,
        ssl_handshake_timeout=limits.tls_handshake_timeout if ssl is not None else None,
    )
    shared.flusher = loop.create_task(_flush_metrics(server.is_serving))
    return server


def close_quietly(sock: socket.socket) -> None:
    """Close a socket, ignoring errors (for shutdown paths)."""
    with contextlib.suppress(OSError):
        sock.close()
