"""The C fast path of the parser (sip/_scan.c) is held to the Python parser.

Whenever the scanner takes a message, the request it yields must equal, field
by field, what the Python parser makes of the same bytes; whatever it leaves
(None), the Python parser reads. It must take the common shapes, or the fast
path would be dead code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mutations import SEEDS, mutated
from sip_peer import request

from cnamd.sip import message

if os.environ.get("CNAMD_PURE_PYTHON"):
    pytest.skip("pure build asked for: no C scanner", allow_module_level=True)
from cnamd.sip._scan import common_shape, content_length, scan

DATA = Path(__file__).parent / "data"


def python_parse(data: bytes) -> message.Request:
    """What the Python parser alone makes of ``data``."""
    end = data.find(b"\r\n\r\n")
    assert end >= 0
    return message._parse(data[:end], data[end + 4 :], False)


def fields(req: message.Request) -> dict[str, Any]:
    out: dict[str, Any] = {
        name: getattr(req, name)
        for name in ("method", "uri", "vias", "headers", "max_forwards", "body", "error", "status")
    }
    out["is_response"] = req.is_response
    via = req.via
    via_fields = ("raw", "base", "transport", "host", "port", "rport", "maddr", "rest")
    out["via"] = via and tuple(getattr(via, n) for n in via_fields)
    for name in ("from_addr", "to_addr"):
        addr = getattr(req, name)
        out[name] = addr and (addr.display, addr.uri, addr.params)
    return out


def assert_same_when_taken(data: bytes) -> bool:
    """True when the scanner took ``data``; then its request equals the Python parser's.

    ``common_shape`` (the dip's check of an ACK) must give the same verdict."""
    taken = scan(data) is not None
    assert common_shape(data) is (True if taken else None), data
    assert message.is_common_shape(data) is taken
    if not taken:
        return False
    fast = message.parse_request(data)
    assert fast, data
    assert fields(fast) == fields(python_parse(data)), data
    return True


COMMON = [
    request(),  # sipp's dip scenario
    request("OPTIONS", "sip:ping@127.0.0.1"),
    request("CANCEL"),
    request("ACK", to="<sip:x@y>;tag=1"),
    request(
        extra=(
            'P-Asserted-Identity: "Jane Roe" <sip:+492216698712@carrier.example>',
            "Remote-Party-ID: <sip:+492216698712@c>;party=calling;privacy=off",
            "Privacy: none",
            "Contact: <sip:sbc@10.0.0.1:5060;transport=udp>",
            "User-Agent: Kamailio",
        )
    ),
    request(from_='"Alice" <sip:alice@example.com>;tag=88sja8x', to="Bob <sip:bob@example.com>"),
    request(via="SIP/2.0/TCP sbc.example.com;branch=z9hG4bK776asdhds;x-id=1"),
    request(body="v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\n", extra=("Content-Type: application/sdp",)),
    request(max_forwards="0"),
    request(max_forwards=None, extra=("Require: 100rel",)),
    # compact forms, any case, and a second Via as a proxy adds it
    b"INVITE sip:+12125550001@h SIP/2.0\r\nv: SIP/2.0/udp h1:5061;branch=z9hG4bK1\r\n"
    b"VIA: SIP/2.0/UDP h0;branch=z9hG4bK0\r\nf: <sip:a@h>;tag=1\r\nt: <sip:b@h>\r\n"
    b"i: c1@h\r\ncseq: 7 INVITE\r\nl: 0\r\n\r\n",
]


@pytest.mark.parametrize("data", COMMON, ids=range(len(COMMON)))
def test_the_common_shapes_are_taken_and_read_as_python_reads_them(data: bytes) -> None:
    assert assert_same_when_taken(data)


LEFT_TO_PYTHON = {
    "folded line": request().replace(b"\r\nCall-ID:", b"\r\n Call-ID:", 1),
    "rport": request(via="SIP/2.0/UDP 127.0.0.1:5061;rport;branch=z9hG4bK1"),
    "received": request(via="SIP/2.0/UDP h;received=10.0.0.1;branch=z9hG4bK1"),
    "maddr": request(via="SIP/2.0/UDP h;maddr=224.0.1.75;branch=z9hG4bK1"),
    "IPv6 sent-by": request(via="SIP/2.0/UDP [::1]:5061;branch=z9hG4bK1"),
    "two via-parms": request(via="SIP/2.0/UDP a;branch=1, SIP/2.0/UDP b;branch=2"),
    "tab": request().replace(b"Call-ID: ", b"Call-ID:\t", 1),
    "bare LF": request().replace(b"\r\nTo:", b"\nTo:", 1),
    "no blank line": request()[:-2],
    "a response": b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=1\r\n\r\n",
    "escaped display name": request(from_='"a\\"b" <sip:a@h>;tag=1'),
    "addr-spec From": request(from_="sip:a@h;tag=1"),
    "two To headers": request(extra=("To: <sip:c@h>",)),
    "Date": request(extra=("Date: Sat, 13 Nov 2010 23:29:00 GMT",)),
    "CSeq method differs": request(cseq="1 OPTIONS"),
    "CSeq too large": request(cseq="2147483648 INVITE"),
    "Max-Forwards too large": request(max_forwards="256"),
    "body shorter than Content-Length": request(content_length="10"),
    "tel: Request-URI": request(uri="tel:+12125550001"),
    "unknown method": request("PUBLISH"),
    "SIP/3.0": request().replace(b" SIP/2.0\r\n", b" SIP/3.0\r\n", 1),
    "non-ASCII": request(extra=("Subject: caf\u00e9",)),
}


@pytest.mark.parametrize("data", LEFT_TO_PYTHON.values(), ids=LEFT_TO_PYTHON.keys())
def test_other_shapes_are_left_to_the_python_parser(data: bytes) -> None:
    assert scan(data) is None


def test_a_longer_content_length_is_cut_as_python_cuts_it() -> None:
    data = request(body="v=0\r\nextra", content_length="5")
    assert assert_same_when_taken(data)
    assert message.parse_request(data).body == b"v=0\r\n"


@pytest.mark.parametrize("path", sorted(DATA.glob("*.dat")), ids=lambda p: p.stem)
def test_rfc4475_messages_read_the_same(path: Path) -> None:
    assert_same_when_taken(path.read_bytes())


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_messages_read_the_same(data: bytes) -> None:
    assert_same_when_taken(data)


PRINTABLE = b" ;,:<>\"=@.+-_/!%*`'~?0123456789aAzZ"


@st.composite
def printable_edits(draw: st.DrawFn) -> bytes:
    """A common-shape request with a few printable edits: most stay readable, many
    stay on the fast path, and each edge of its shape gets probed."""
    data = bytearray(draw(st.sampled_from(COMMON)))
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["replace", "insert", "delete", "case"]))
        if kind == "replace":
            data[pos] = draw(st.sampled_from(PRINTABLE))
        elif kind == "insert":
            chars = draw(st.lists(st.sampled_from(PRINTABLE), min_size=1, max_size=3))
            data[pos:pos] = bytes(chars)
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 3))]
        else:
            data[pos : pos + 8] = bytes(data[pos : pos + 8]).swapcase()
    return bytes(data)


@settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(printable_edits())
def test_printable_edits_read_the_same(data: bytes) -> None:
    assert_same_when_taken(data)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_read_the_same(data: bytes) -> None:
    assert_same_when_taken(data)


def test_the_fuzz_seeds_include_messages_the_scanner_takes() -> None:
    # the mutations above start from these: most must be on the fast path
    assert sum(scan(s) is not None for s in SEEDS) >= 4


def test_non_bytes_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        scan("INVITE")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        common_shape("INVITE")  # type: ignore[arg-type]


HEAD_LINES = [
    b"INVITE sip:a@b SIP/2.0",
    b"Content-Length: 12",
    b"content-length:7",
    b"CONTENT-LENGTH :  0 ",
    b"l: 3",
    b"L:\t42",
    b"Content-Length: 12345678901",
    b"Content-Length: -1",
    b"Content-Length:",
    b"Content-Type: application/sdp",
    b"Call-ID: l: 9",
    b"c: text/plain",
    b" 5",
    b"\t6",
    b"lx: 1",
]


HEAD_EDITS = [b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b"9", b"L"]


@st.composite
def header_blocks(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.sampled_from(HEAD_LINES), min_size=1, max_size=6))
    head = bytearray(b"\r\n".join(lines))
    for _ in range(draw(st.integers(0, 2))):
        pos = draw(st.integers(0, len(head)))
        head[pos:pos] = draw(st.sampled_from(HEAD_EDITS))
    return bytes(head)


@settings(max_examples=3000, deadline=None)
@given(header_blocks())
def test_stream_content_length_reads_as_python_reads_it(head: bytes) -> None:
    fast = content_length(head)
    if fast == -2:  # folded: left to the Python version
        assert b"\r\n " in head or b"\r\n\t" in head
    else:
        assert fast == message._stream_content_length(head), head


@pytest.mark.parametrize("letter", ["p", "u", "t", "x"])
def test_a_one_letter_transport_leaves_the_shared_byte_alone(letter: str) -> None:
    """The scanner upper-cases the Via transport. For one byte CPython hands out a
    shared object (``bytes([c])`` is that one object everywhere in the process):
    writing to it once turned every b"p" into b"P" (the suite's "siP:" failures)."""
    code = ord(letter)  # an int: it cannot be changed behind the test's back
    data = (
        b"INVITE sip:+12125550001@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/" + bytes([code]) + b" 127.0.0.1:5061;branch=z9hG4bK-1\r\n"
        b"From: <sip:+492216698712@127.0.0.1>;tag=1\r\n"
        b"To: <sip:+12125550001@127.0.0.1>\r\n"
        b"Call-ID: 1@127.0.0.1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    taken = scan(data)
    assert taken is not None  # the C path did read it
    assert taken[3][0] == bytes([code - 32])  # upper-cased
    assert bytes([code])[0] == code and data[9] == ord("p")  # "sip:" unchanged
