"""RFC 4475 torture messages: no exception, every valid one answered, every invalid
one refused with 400 (505 for the version) or dropped."""

from __future__ import annotations

from pathlib import Path

import pytest
from memory_names import MemoryNames
from prometheus_client import REGISTRY
from sip_peer import parse_reply

from cnamd.sip import Dip, DipSettings
from cnamd.sip.message import StreamFramer

DATA = Path(__file__).parent / "data"


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for line in (DATA / "expected.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, section, expect, *_ = line.split()
            cases.append((name, section, expect))
    return cases


CASES = _cases()


def _internal() -> float:
    return REGISTRY.get_sample_value("cnamd_sip_dropped_total", {"reason": "internal"}) or 0.0


def test_all_49_messages_are_here() -> None:
    assert len(CASES) == 49
    assert {p.stem for p in DATA.glob("*.dat")} == {name for name, _, _ in CASES}


@pytest.mark.parametrize(("name", "section", "expect"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_torture_message(name: str, section: str, expect: str, transport: str) -> None:
    data = (DATA / f"{name}.dat").read_bytes()
    # Calling parties here are names, not numbers: a miss rather than a 400 keeps
    # "answered" distinct from "rejected".
    dip = Dip(DipSettings(invalid_reply="404"), MemoryNames())
    before = _internal()
    if transport == "tcp":
        framer = StreamFramer(max_header=16384, max_body=16384)
        frames = framer.feed(data)
        if framer.error:
            assert expect == "reject", (section, framer.error)
            return
        data = frames[0] if frames else data
    response = dip.handle(data, ("192.0.2.77", 5060), transport)
    assert _internal() == before
    if expect == "drop":
        assert response is None
    elif expect == "reject":
        if response is not None:
            assert parse_reply(response).status in (400, 505), (section, response)
    else:
        reply = parse_reply(response)
        assert reply.status not in (400, 505), (section, response)
