"""Seed requests and a hypothesis strategy that damages them: the SIP fuzz tests' inputs."""

from __future__ import annotations

from pathlib import Path

from hypothesis import strategies as st
from sip_peer import request

SEEDS = [
    request(),
    request("OPTIONS", "sip:ping@127.0.0.1"),
    request("CANCEL"),
    request("ACK", to="<sip:x@y>;tag=1"),
    request(extra=('P-Asserted-Identity: "x" <sip:+492216698712@c>', "Privacy: id")),
    request(via="SIP/2.0/UDP [::1]:5061;rport;branch=z9hG4bK1", body="v=0\r\n"),
] + [p.read_bytes() for p in sorted((Path(__file__).parent / "data").glob("*.dat"))]

SPECIAL = [
    b"\r\n",
    b"\r\n\r\n",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b'"',
    b"\\",
    b" ",
    b"\t",
    b"%",
    b"=",
    b"@",
    b"\x00",
    b"\xff",
    b"SIP/2.0",
    b"Via: ",
    b"0",
    b"99999999999",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "special", "dup_line"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 20))]
        elif kind == "special":
            data[pos:pos] = draw(st.sampled_from(SPECIAL))
        else:
            lines = bytes(data).split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)
