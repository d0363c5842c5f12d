"""Binding the listeners: per-worker UDP sockets when the kernel can steer, else one."""

from __future__ import annotations

import logging
import socket

import pytest

from cnamd.errors import ConfigError
from cnamd.listeners import ListenSpec, bind_all
from cnamd.settings import Settings, from_layer
from cnamd.sip import transport
from test_daemon import free_port


def _settings(port: int, steering: str = "random") -> Settings:
    return from_layer(
        {
            "http": {"listen": f"127.0.0.1:{free_port()}"},
            "sip": {"listen": [f"127.0.0.1:{port}"], "udp_steering": steering},
        }
    )


def _close(bound: list[tuple[ListenSpec, socket.socket]]) -> None:
    for _spec, sock in bound:
        sock.close()


@pytest.mark.parametrize(("steering", "workers"), [("random", 1), ("shared", 3)])
def test_one_udp_socket_every_worker_reads(steering: str, workers: int) -> None:
    bound = bind_all(_settings(free_port(), steering), workers)
    try:
        udp = [spec for spec, _ in bound if spec.kind == "sip-udp"]
        assert [spec.worker for spec in udp] == [-1]
        assert all(spec.serves(0) and spec.serves(2) for spec in udp)
    finally:
        _close(bound)


@pytest.mark.skipif(transport._steer is None, reason="pure build: no steering")
def test_random_steering_gives_each_worker_its_own_udp_socket() -> None:
    bound = bind_all(_settings(free_port()), 3)
    try:
        udp = [spec for spec, _ in bound if spec.kind == "sip-udp"]
        assert [spec.worker for spec in udp] == [0, 1, 2]
        assert [spec.serves(1) for spec in udp] == [False, True, False]
        assert ListenSpec.from_key(udp[1].key) == udp[1]
        tcp = [spec for spec, _ in bound if spec.kind != "sip-udp"]
        assert {spec.worker for spec in tcp} == {-1}  # TCP and HTTP stay shared
    finally:
        _close(bound)


def test_without_steering_the_workers_share_one_socket_and_a_warning_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(transport, "_steer", None)  # a build or kernel that cannot steer
    with caplog.at_level(logging.WARNING, logger="cnamd.listeners"):
        bound = bind_all(_settings(free_port()), 2)
    try:
        assert [spec.worker for spec, _ in bound if spec.kind == "sip-udp"] == [-1]
        assert "steering unavailable" in caplog.text
    finally:
        _close(bound)


def test_a_taken_udp_port_is_a_config_error_naming_the_field() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        for workers in (1, 2):
            with pytest.raises(ConfigError) as failure:
                bind_all(_settings(port), workers)
            assert failure.value.field == "sip.listen"
