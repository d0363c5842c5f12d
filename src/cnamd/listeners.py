"""Binding every listening socket, in one place, before any worker starts.

The single-process server and the supervisor both bind here (with the SIP
transport's socket helpers); workers only adopt what they inherit. A UDP
socket gets a large receive buffer: at carrier rates the default ~200 KiB
overflows between two event-loop turns.
"""

from __future__ import annotations

import errno
import logging
import socket
from dataclasses import dataclass

from cnamd.errors import ConfigError
from cnamd.settings import Settings
from cnamd.sip.transport import (
    bind_tcp,
    bind_udp,
    bind_udp_group,
    receive_buffer_size,
    split_hostport,
)

log = logging.getLogger(__name__)

TCP_BACKLOG = 1024
# What a kernel (or a build) without SO_ATTACH_REUSEPORT_CBPF answers.
_NO_STEERING = frozenset((errno.ENOPROTOOPT, errno.EINVAL, errno.EOPNOTSUPP))


@dataclass(frozen=True, slots=True)
class ListenSpec:
    """One socket to bind: kind is http, sip-udp, sip-tcp or sip-tls; ``worker`` is the
    one worker that reads it (a steered UDP group's member), -1 for every worker."""

    kind: str
    address: str
    worker: int = -1

    @property
    def key(self) -> str:
        return f"{self.kind}|{self.address}|{self.worker}"

    @classmethod
    def from_key(cls, key: str) -> ListenSpec:
        kind, address, worker = key.split("|")
        return cls(kind, address, int(worker))

    def serves(self, worker: int) -> bool:
        return self.worker in (-1, worker)


def specs(settings: Settings) -> list[ListenSpec]:
    found = [ListenSpec("http", settings.http.listen)]
    for address in settings.sip.listen:
        found += [ListenSpec("sip-udp", address), ListenSpec("sip-tcp", address)]
    found += [ListenSpec("sip-tls", address) for address in settings.sip.tls_listen]
    return found


def _check_receive_buffer(sock: socket.socket, settings: Settings) -> None:
    got = receive_buffer_size(sock)
    if got < settings.sip.udp_rcvbuf:
        log.warning(
            "udp receive buffer capped by the kernel (raise net.core.rmem_max)",
            extra={"asked": settings.sip.udp_rcvbuf, "got": got},
        )


def bind(spec: ListenSpec, settings: Settings) -> socket.socket:
    host, port = split_hostport(spec.address)
    try:
        if spec.kind == "sip-udp":
            sock = bind_udp(host, port, rcvbuf=settings.sip.udp_rcvbuf)
            _check_receive_buffer(sock, settings)
            return sock
        return bind_tcp(host, port, backlog=TCP_BACKLOG)
    except OSError as exc:
        field = (
            "http.listen"
            if spec.kind == "http"
            else ("sip.tls_listen" if spec.kind == "sip-tls" else "sip.listen")
        )
        raise ConfigError(
            f"cannot listen on {spec.address} ({spec.kind}): {exc.strerror}", field=field
        ) from exc


def bind_all(settings: Settings, workers: int = 1) -> list[tuple[ListenSpec, socket.socket]]:
    """Every socket the settings ask for; all or none (a failure closes what was bound).

    With several workers and ``sip.udp_steering = random``, each SIP UDP address
    gets one socket per worker (``bind_udp_group``); where the kernel cannot
    steer, one shared socket, and a warning.
    """
    bound: list[tuple[ListenSpec, socket.socket]] = []
    try:
        for spec in specs(settings):
            if spec.kind == "sip-udp" and workers > 1 and settings.sip.udp_steering == "random":
                group = _bind_steered(spec, settings, workers)
                if group:
                    bound += group
                    continue
            bound.append((spec, bind(spec, settings)))
    except BaseException:
        for _spec, sock in bound:
            sock.close()
        raise
    return bound


def _bind_steered(
    spec: ListenSpec, settings: Settings, workers: int
) -> list[tuple[ListenSpec, socket.socket]]:
    """One socket per worker on ``spec``'s address, or [] where steering is unavailable."""
    host, port = split_hostport(spec.address)
    try:
        group = bind_udp_group(host, port, workers, rcvbuf=settings.sip.udp_rcvbuf)
    except OSError as exc:
        if exc.errno not in _NO_STEERING:
            raise ConfigError(
                f"cannot listen on {spec.address} (sip-udp): {exc.strerror}", field="sip.listen"
            ) from exc
        log.warning(
            "random UDP steering unavailable; the workers share one socket",
            extra={"address": spec.address, "reason": str(exc)},
        )
        return []
    _check_receive_buffer(group[0], settings)
    return [(ListenSpec(spec.kind, spec.address, i), sock) for i, sock in enumerate(group)]


def adopt(fds: dict[str, int]) -> list[tuple[ListenSpec, socket.socket]]:
    """In a worker: socket objects for the descriptors the supervisor passed down."""
    return [(ListenSpec.from_key(key), socket.socket(fileno=fd)) for key, fd in fds.items()]
