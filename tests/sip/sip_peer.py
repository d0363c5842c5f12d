"""The independent SIP peer for tests: requests written out by hand, responses read
with aiosipua's parser (never cnamd's own) plus a few plain string helpers."""

from __future__ import annotations

from dataclasses import dataclass

from aiosipua import SipMessage, SipResponse

CRLF = "\r\n"


def request(
    method: str = "INVITE",
    uri: str = "sip:+12125550001@127.0.0.1:5060",
    *,
    via: str = "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0",
    from_: str | None = "<sip:+492216698712@127.0.0.1>;tag=1SIPpTag001",
    to: str | None = "<sip:+12125550001@127.0.0.1:5060>",
    call_id: str | None = "1-123@127.0.0.1",
    cseq: str | None = None,
    max_forwards: str | None = "70",
    extra: tuple[str, ...] = (),
    body: str = "",
    content_length: str | None = None,
) -> bytes:
    """A request as a UAC would write it; None leaves a header out."""
    lines = [f"{method} {uri} SIP/2.0"]
    if via:
        lines.append(f"Via: {via}")
    if from_ is not None:
        lines.append(f"From: {from_}")
    if to is not None:
        lines.append(f"To: {to}")
    if call_id is not None:
        lines.append(f"Call-ID: {call_id}")
    lines.append(f"CSeq: {cseq if cseq is not None else '1 ' + method}")
    if max_forwards is not None:
        lines.append(f"Max-Forwards: {max_forwards}")
    lines.extend(extra)
    lines.append(f"Content-Length: {content_length if content_length is not None else len(body)}")
    return (CRLF.join(lines) + CRLF + CRLF + body).encode()


@dataclass
class Reply:
    """A response as the peer read it."""

    status: int
    reason: str
    raw: bytes
    message: SipResponse

    def all(self, name: str) -> list[str]:
        return self.message.headers.get(name)

    def one(self, name: str) -> str:
        values = self.all(name)
        assert len(values) == 1, f"{name}: {values!r}"
        return values[0]

    def has(self, name: str) -> bool:
        return bool(self.all(name))

    def raw_vias(self) -> list[str]:
        """Via header lines exactly as sent (aiosipua splits comma lists)."""
        text = self.raw.decode()
        return [
            line.split(":", 1)[1].strip()
            for line in text.split(CRLF)
            if line.lower().startswith("via:")
        ]


def parse_reply(data: bytes | None) -> Reply:
    assert data is not None, "expected an answer, got none"
    assert data.endswith(b"\r\n\r\n"), data
    message = SipMessage.parse(data)
    assert isinstance(message, SipResponse), data
    assert message.headers.get_first("Content-Length") == "0"
    return Reply(message.status_code, message.reason_phrase, data, message)


def display_name(value: str) -> str:
    """The display name of a name-addr value, quotes removed and quoted-pairs resolved."""
    value = value.strip()
    assert value.startswith('"'), value
    out, i = [], 1
    while value[i] != '"':
        if value[i] == "\\":
            i += 1
        out.append(value[i])
        i += 1
    return "".join(out)


def uri_of(value: str) -> str:
    """The URI between the angle brackets of a name-addr value."""
    return value[value.index("<") + 1 : value.index(">")]


def param(value: str, name: str) -> str | None:
    """A header parameter after the URI (``;name=value``), None when absent."""
    tail = value[value.index(">") + 1 :] if ">" in value else value.partition(";")[2]
    for part in tail.split(";"):
        key, _, val = part.partition("=")
        if key.strip().lower() == name:
            return val.strip()
    return None
