"""Coverage-guided fuzzing of the SIP parser and dip with atheris (optional; not collected
by pytest). Run: ``.venv/bin/python tests/sip/fuzz_atheris.py -atheris_runs=200000
tests/sip/data`` (the torture messages seed the corpus). Any exception escaping, an
internal-error drop, or an answer that is not a well-formed response is a crash."""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).parent))

with atheris.instrument_imports():
    from cnamd.sip import Dip, DipSettings
    from cnamd.sip.message import StreamFramer, parse_request

from memory_names import MemoryNames

DIP = Dip(DipSettings(), MemoryNames())
SOURCE = ("127.0.0.1", 5061)


def test_one(data: bytes) -> None:
    req = parse_request(data)
    assert bool(req) == (not req.error)
    internal = DIP.dropped["internal"]
    before = internal._value.get()
    for transport in ("udp", "tcp"):
        answer = DIP.answer(data, SOURCE, transport)
        if answer is not None:
            response = answer[0]
            assert response.startswith(b"SIP/2.0 ") and response.endswith(b"\r\n\r\n"), response
            assert b"\n" not in response.replace(b"\r\n", b""), response
    assert internal._value.get() == before, data
    framer = StreamFramer(max_header=2048, max_body=2048)
    for i in range(0, len(data), 7):
        framer.feed(data[i : i + 7])
        assert framer.buffered() <= 2048 + 2048 + 4 + 7


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()
