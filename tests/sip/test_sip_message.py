"""Pure units of the sans-I/O layer: parsing pieces, framing, where answers go."""

from __future__ import annotations

import pytest
from sip_peer import request

from cnamd.sip.message import (
    PING,
    StreamFramer,
    parse_name_addr,
    parse_request,
    parse_via,
    quote,
    response_destination,
    split_uri,
    stream_content_length,
    unquote,
)


def test_valid_request_is_truthy_and_invalid_one_is_falsy_with_its_error() -> None:
    assert parse_request(request())
    bad = parse_request(request(cseq="x INVITE"))
    assert not bad and bad.error == b"bad CSeq header" and bad.status == 400


def test_body_is_cut_at_content_length() -> None:
    req = parse_request(request(body="abcdef", content_length="3"))
    assert req and req.body == b"abc"


@pytest.mark.parametrize(
    ("value", "transport", "host", "port", "rport"),
    [
        (b"SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK1", b"UDP", b"127.0.0.1", 5061, False),
        (b"SIP/2.0/tcp pbx.example.com;rport;branch=z9hG4bK1", b"TCP", b"pbx.example.com", 0, True),
        (b"SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bK1", b"UDP", b"2001:db8::1", 5070, False),
        (b"SIP  /  2.0 / UDP  192.0.2.2 ;  RPORT ; branch = x", b"UDP", b"192.0.2.2", 0, True),
    ],
)
def test_top_via_is_read(
    value: bytes, transport: bytes, host: bytes, port: int, rport: bool
) -> None:
    via = parse_via(value)
    assert via is not None
    assert (via.transport, via.host, via.port, via.rport) == (transport, host, port, rport)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"SIP/2.0/UDP",
        b"SIP/3.0/UDP x",
        b"SIP/2.0/UDP 192.0.2.15;;",
        b"SIP/2.0/UDP x:99999",
        b"SIP/2.0/UDP a b",
    ],
)
def test_malformed_via_is_refused(value: bytes) -> None:
    assert parse_via(value) is None


def test_via_reply_form_drops_stale_received_and_fills_rport() -> None:
    via = parse_via(b"SIP/2.0/UDP h;received=1.2.3.4;rport;branch=z9hG4bK1, SIP/2.0/UDP next")
    assert via is not None
    assert via.reply_form(b"192.0.2.9", 4000) == (
        b"SIP/2.0/UDP h;branch=z9hG4bK1;rport=4000;received=192.0.2.9, SIP/2.0/UDP next"
    )


def test_ipv6_sent_by_equal_to_source_gets_no_received() -> None:
    via = parse_via(b"SIP/2.0/UDP [::1]:5061;branch=z9hG4bK1")
    assert via is not None
    assert via.reply_form(b"::1", 5061) == b"SIP/2.0/UDP [::1]:5061;branch=z9hG4bK1"
    assert via.reply_form(b"0:0::1", 5061) == b"SIP/2.0/UDP [::1]:5061;branch=z9hG4bK1"


@pytest.mark.parametrize(
    ("via", "transport", "honor", "expected"),
    [
        (b"SIP/2.0/UDP 10.0.0.1:5070;rport;branch=z9hG4bK", "udp", False, ("192.0.2.1", 40000)),
        (b"SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK", "udp", False, ("192.0.2.1", 5070)),
        (b"SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK", "udp", False, ("192.0.2.1", 5060)),
        (b"SIP/2.0/UDP 10.0.0.1:5070;maddr=239.1.1.1;branch=z", "udp", True, ("239.1.1.1", 5070)),
        (b"SIP/2.0/UDP 10.0.0.1:5070;maddr=239.1.1.1;branch=z", "udp", False, ("192.0.2.1", 5070)),
        (b"SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bK", "tcp", False, ("192.0.2.1", 40000)),
    ],
)
def test_response_destination_follows_rfc3261_18_2_2(
    via: bytes, transport: str, honor: bool, expected: tuple[str, int]
) -> None:
    top = parse_via(via)
    assert top is not None
    assert response_destination(top, ("192.0.2.1", 40000), transport, honor_maddr=honor) == expected


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (b"sip:+492216698712@h", (b"sip", b"+492216698712", b"h")),
        (b"sip:+4922;npdi;rn=1@h:5060;user=phone", (b"sip", b"+4922", b"h:5060")),
        (b"sips:alice:secret@h", (b"sips", b"alice", b"h")),
        (b"SIP:%2B49@h?x=y", (b"sip", b"+49", b"h")),
        (b"tel:+4922166987;phone-context=x", (b"tel", b"+4922166987", b"")),
        (b"sip:h.example.com", (b"sip", b"", b"h.example.com")),
        (b"mailto:x@y", (b"mailto", b"", b"")),
    ],
)
def test_split_uri(uri: bytes, expected: tuple[bytes, bytes, bytes]) -> None:
    assert split_uri(uri) == expected


@pytest.mark.parametrize(
    ("value", "display", "uri", "tag"),
    [
        (b'"J \\"R\\" \\\\" <sip:j@x>;tag=1', b'"J \\"R\\" \\\\"', b"sip:j@x", b"1"),
        (b"caller<sip:caller@example.com>;tag=323", b"caller", b"sip:caller@example.com", b"323"),
        (b"sip:user@example.com ;  tag  = 19", b"", b"sip:user@example.com", b"19"),
        (b"<sip:a@b>", b"", b"sip:a@b", None),
    ],
)
def test_name_addr_is_split(value: bytes, display: bytes, uri: bytes, tag: bytes | None) -> None:
    addr = parse_name_addr(value)
    assert addr is not None
    assert (addr.display, addr.uri, addr.param(b"tag")) == (display, uri, tag)


@pytest.mark.parametrize(
    "value",
    [
        b'"Mr. J. User <sip:j.user@example.com>',  # RFC 4475 3.1.2.6
        b'"Watson, Thomas" < sip:t.watson@example.org >',  # 3.1.2.14
        b"Bell, Alexander <sip:a.g.bell@example.com>;tag=43",  # 3.1.2.15
        b"sip:user@example.com?Route=%3Csip:sip.example.com%3E",  # 3.1.2.13
        b"<sip:a@b",
        b"",
    ],
)
def test_malformed_name_addr_is_refused(value: bytes) -> None:
    assert parse_name_addr(value) is None


@pytest.mark.parametrize("text", ["John Doe", 'a"b', "a\\b", '\\"', "", "Jürgen"])
def test_quote_round_trips_through_unquote(text: str) -> None:
    assert unquote(quote(text)).decode() == text


def test_quote_drops_line_breaks() -> None:
    assert quote("a\r\nb") == b'"ab"'


# Stream framing ---------------------------------------------------------------------------


def test_framer_cuts_two_messages_in_one_segment() -> None:
    one, two = request(), request("OPTIONS", body="xyz")
    framer = StreamFramer()
    assert framer.feed(one + two) == [one, two]


def test_framer_joins_a_message_split_across_segments() -> None:
    data = request(body="v=0\r\n")
    framer = StreamFramer()
    frames: list[bytes] = []
    for i in range(len(data)):
        frames += framer.feed(data[i : i + 1])
    assert frames == [data]
    assert framer.buffered() == 0


def test_framer_turns_double_crlf_into_ping_and_skips_single_crlf() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [PING]
    assert framer.feed(b"\r\n") == []
    assert framer.feed(b"\r\n") == [PING]
    assert framer.feed(b"\r\n" + request()) == [request()]


def test_framer_refuses_an_oversize_header_section_and_keeps_it_bounded() -> None:
    framer = StreamFramer(max_header=1024)
    framer.feed(b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n")
    for _ in range(100):
        framer.feed(b"X-Filler: " + b"a" * 100 + b"\r\n")
        assert framer.buffered() <= 1024 + 200
    assert framer.error == b"header section too large"
    assert framer.rejected.startswith(b"INVITE") and framer.rejected.endswith(b"\r\n\r\n")
    assert framer.feed(request()) == []


def test_framer_refuses_an_oversize_body() -> None:
    framer = StreamFramer(max_body=10)
    assert framer.feed(request(body="x" * 11)) == []
    assert framer.error == b"body too large"


@pytest.mark.parametrize("length", [b"Content-Length: x", b"Content-Length: 1\r\nl: 2", b"l: -1"])
def test_framer_refuses_bad_or_repeated_content_length(length: bytes) -> None:
    framer = StreamFramer()
    assert framer.feed(b"OPTIONS sip:x SIP/2.0\r\n" + length + b"\r\n\r\n") == []
    assert framer.error == b"bad Content-Length header"


def test_stream_without_content_length_reads_as_empty_body() -> None:
    assert stream_content_length(b"OPTIONS sip:x SIP/2.0\r\nVia: x") == 0
    assert stream_content_length(b"OPTIONS sip:x SIP/2.0\r\nL : 12") == 12
    assert stream_content_length(b"OPTIONS sip:x SIP/2.0\r\nContent-Length:\r\n 7") == 7
