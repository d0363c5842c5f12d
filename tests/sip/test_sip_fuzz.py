"""Property tests: whatever bytes arrive, no exception escapes and every answer is a
well-formed SIP response (read by the independent peer) or nothing."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from memory_names import MemoryNames
from mutations import SEEDS, mutated
from prometheus_client import REGISTRY
from sip_peer import parse_reply

from cnamd.sip import Dip, DipSettings
from cnamd.sip.dip import RESPONSE_CODES
from cnamd.sip.message import StreamFramer, parse_request

DIP = Dip(DipSettings(), MemoryNames())
DIP_DROP = Dip(
    DipSettings(deny_reply="drop", miss_reply="302", number_source="request-uri"),
    MemoryNames(denied={"10.0.0.1"}),
)


def _internal() -> float:
    return REGISTRY.get_sample_value("cnamd_sip_dropped_total", {"reason": "internal"}) or 0.0


def _check(data: bytes) -> None:
    before = _internal()
    for dip in (DIP, DIP_DROP):
        for source in (("127.0.0.1", 5061), ("10.0.0.1", 5060), ("::1", 5062)):
            for transport in ("udp", "tcp"):
                answer = dip.answer(data, source, transport)
                if answer is not None:
                    reply = parse_reply(answer[0])
                    assert reply.status in RESPONSE_CODES
                    host, port = answer[1]
                    assert isinstance(host, str) and 0 < port < 65536
    assert _internal() == before, data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_never_raise_and_answers_are_well_formed(data: bytes) -> None:
    _check(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_messages_never_raise_and_answers_are_well_formed(data: bytes) -> None:
    _check(data)


@settings(max_examples=300, deadline=None)
@given(mutated())
def test_parse_result_is_falsy_exactly_when_it_carries_an_error(data: bytes) -> None:
    req = parse_request(data)
    assert bool(req) == (req.error == b"")
    if req:
        assert req.via is not None and req.method and req.uri


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(SEEDS[:6]), min_size=1, max_size=5), st.data())
def test_stream_framing_is_independent_of_segment_boundaries(
    messages: list[bytes], data: st.DataObject
) -> None:
    stream = b"\r\n\r\n".join(messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    framer = StreamFramer()
    frames: list[bytes] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        frames += framer.feed(stream[start:cut])
        start = cut
    assert [f for f in frames if f] == messages
    assert framer.buffered() == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.integers(1, 64))
def test_stream_framer_memory_stays_bounded(noise: bytes, chunk: int) -> None:
    framer = StreamFramer(max_header=1024, max_body=512)
    for i in range(0, len(noise), chunk):
        framer.feed(noise[i : i + chunk])
        assert framer.buffered() <= 1024 + 512 + 4 + chunk
