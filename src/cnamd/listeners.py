"""Binding every listening socket, in one place, before any worker starts.

The single-process server and the supervisor both bind here (with the SIP
transport's socket helpers); workers only adopt what they inherit. A UDP
socket gets a large receive buffer: at carrier rates the default ~200 KiB
overflows between two event-loop turns.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

from cnamd.errors import ConfigError
from cnamd.settings import Settings
from cnamd.sip.transport import bind_tcp, bind_udp, receive_buffer_size, split_hostport

log = logging.getLogger(__name__)

TCP_BACKLOG = 1024


@dataclass(frozen=True, slots=True)
class ListenSpec:
    """One socket to bind: kind is http, sip-udp, sip-tcp or sip-tls."""

    kind: str
    address: str

    @property
    def key(self) -> str:
        return f"{self.kind}|{self.address}"

    @classmethod
    def from_key(cls, key: str) -> ListenSpec:
        kind, _, address = key.partition("|")
        return cls(kind, address)


def specs(settings: Settings) -> list[ListenSpec]:
    found = [ListenSpec("http", settings.http.listen)]
    for address in settings.sip.listen:
        found += [ListenSpec("sip-udp", address), ListenSpec("sip-tcp", address)]
    found += [ListenSpec("sip-tls", address) for address in settings.sip.tls_listen]
    return found


def bind(spec: ListenSpec, settings: Settings) -> socket.socket:
    host, port = split_hostport(spec.address)
    try:
        if spec.kind == "sip-udp":
            sock = bind_udp(host, port, rcvbuf=settings.sip.udp_rcvbuf)
            got = receive_buffer_size(sock)
            if got < settings.sip.udp_rcvbuf:
                log.warning(
                    "udp receive buffer capped by the kernel (raise net.core.rmem_max)",
                    extra={"asked": settings.sip.udp_rcvbuf, "got": got},
                )
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


def bind_all(settings: Settings) -> list[tuple[ListenSpec, socket.socket]]:
    """Every socket the settings ask for; all or none (a failure closes what was bound)."""
    bound: list[tuple[ListenSpec, socket.socket]] = []
    try:
        for spec in specs(settings):
            bound.append((spec, bind(spec, settings)))
    except BaseException:
        for _spec, sock in bound:
            sock.close()
        raise
    return bound


def adopt(fds: dict[str, int]) -> list[tuple[ListenSpec, socket.socket]]:
    """In a worker: socket objects for the descriptors the supervisor passed down."""
    return [(ListenSpec.from_key(key), socket.socket(fileno=fd)) for key, fd in fds.items()]
