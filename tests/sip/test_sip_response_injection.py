"""Response header injection: a request must not smuggle header lines into the answer
through values the stateless server echoes (Via, From, To, Call-ID, CSeq)."""

from __future__ import annotations

import pytest
from memory_names import MemoryNames
from sip_peer import request

from cnamd.sip import Dip, DipSettings


@pytest.mark.parametrize(
    "evil",
    [b"x\nContact: <sip:evil@attacker>", b"x\rContact: <sip:evil@attacker>", b"x\n\nbody"],
)
@pytest.mark.parametrize("field", [b"Call-ID: ", b"From: ", b"To: ", b"Via: ", b"CSeq: "])
def test_bare_line_end_in_an_echoed_value_is_never_sent_back(field: bytes, evil: bytes) -> None:
    data = request()
    start = data.index(field) + len(field)
    end = data.index(b"\r\n", start)
    data = data[:start] + data[start:end] + evil + data[end:]
    response = Dip(DipSettings(), MemoryNames()).handle(data, ("127.0.0.1", 5061), "udp")
    assert response is None or b"evil" not in response
    if response is not None:
        assert b"\n" not in response.replace(b"\r\n", b"")
