"""The dip's behaviour, bytes in and bytes out; answers read by the independent peer."""

from __future__ import annotations

import pytest
from memory_names import MemoryNames
from prometheus_client import REGISTRY
from sip_peer import display_name, param, parse_reply, request, uri_of

from cnamd import metrics
from cnamd.errors import ConfigError
from cnamd.sip import Dip, DipSettings, TokenBucket

SRC = ("127.0.0.1", 5061)


def make(**settings: object) -> tuple[Dip, MemoryNames]:
    names = MemoryNames()
    return Dip(DipSettings(**settings), names), names  # type: ignore[arg-type]


def ask(data: bytes, dip: Dip | None = None, source: tuple[str, int] = SRC, transport: str = "udp"):
    dip = dip or make()[0]
    return parse_reply(dip.handle(data, source, transport))


def sample(name: str, **labels: str) -> float:
    metrics.flush_tallies()  # the dip tallies in plain ints between flushes
    return REGISTRY.get_sample_value(name, labels) or 0.0


# INVITE dip -------------------------------------------------------------------------------


def test_known_caller_gets_302_with_name_in_contact_and_pai() -> None:
    reply = ask(request())
    assert (reply.status, reply.reason) == (302, "Moved Temporarily")
    contact = reply.one("Contact")
    assert display_name(contact) == "John Doe"
    assert uri_of(contact) == "sip:+12125550001@127.0.0.1:5060"  # the original Request-URI
    pai = reply.one("P-Asserted-Identity")
    assert display_name(pai) == "John Doe"
    assert uri_of(pai) == "sip:+492216698712@127.0.0.1"


def test_display_name_quotes_and_backslashes_are_escaped() -> None:
    reply = ask(request(from_="<sip:+4930123456@example.com>;tag=a"))
    contact = reply.one("Contact")
    assert contact.startswith('"Dr. \\"Quote\\" \\\\ Backslash" <')
    assert display_name(contact) == 'Dr. "Quote" \\ Backslash'


def test_unknown_caller_gets_404() -> None:
    reply = ask(request(from_="<sip:+15550000000@example.com>;tag=a"))
    assert (reply.status, reply.reason) == (404, "Not Found")
    assert not reply.has("Contact")


def test_unknown_caller_gets_302_without_name_when_miss_reply_is_302() -> None:
    dip, _ = make(miss_reply="302")
    reply = ask(request(from_="<sip:+15550000000@example.com>;tag=a"), dip)
    assert reply.status == 302
    assert reply.one("Contact") == "<sip:+12125550001@127.0.0.1:5060>"


def test_pai_beats_remote_party_id_beats_from() -> None:
    dip, names = make()
    extra = (
        'P-Asserted-Identity: "x" <sip:+492216698712@carrier.example>',
        "Remote-Party-ID: <sip:+15550000001@x>;party=calling",
    )
    reply = ask(request(from_="<sip:+15550000002@x>;tag=a", extra=extra), dip)
    assert names.calls[-1][0] == "+492216698712"
    assert uri_of(reply.one("P-Asserted-Identity")) == "sip:+492216698712@carrier.example"


def test_remote_party_id_is_used_when_there_is_no_pai() -> None:
    dip, names = make()
    extra = ("Remote-Party-ID: <sip:+492216698712@x>;party=calling;screen=yes",)
    assert ask(request(from_="<sip:+1555@x>;tag=a", extra=extra), dip).status == 302
    assert names.calls[-1][0] == "+492216698712"


def test_tel_uri_identity_gives_tel_pai() -> None:
    reply = ask(request(extra=("P-Asserted-Identity: <tel:+492216698712>",)))
    assert uri_of(reply.one("P-Asserted-Identity")) == "tel:+492216698712"


def test_calling_and_called_are_percent_decoded_user_parts_without_parameters() -> None:
    dip, names = make()
    data = request(
        uri="sip:%2B12125550001;npdi@127.0.0.1;user=phone",
        from_="<sip:%2B492216698712;rn=x@127.0.0.1;user=phone>;tag=a",
    )
    assert ask(data, dip).status == 302
    assert names.calls[-1] == ("+492216698712", "+12125550001", "127.0.0.1")


def test_national_number_is_passed_raw_for_the_directory_to_normalize() -> None:
    dip, names = make()
    assert ask(request(from_="<sip:02216698712@pbx>;tag=a"), dip).status == 302
    assert names.calls[-1][0] == "02216698712"


def test_number_source_request_uri_asks_for_the_request_uri_user() -> None:
    dip, names = make(number_source="request-uri")
    reply = ask(request(uri="sip:+492216698712@cnam.example"), dip)
    assert reply.status == 302
    assert names.calls[-1][:2] == ("+492216698712", "+12125550001")


@pytest.mark.parametrize(
    "privacy", ["id", "user", "header", "header;id", "critical; ID", "none,id"]
)
def test_privacy_request_gets_the_anonymous_name(privacy: str) -> None:
    dip, names = make(anonymous_name="Withheld")
    reply = ask(request(extra=(f"Privacy: {privacy}",)), dip)
    assert reply.status == 302
    assert display_name(reply.one("Contact")) == "Withheld"
    assert uri_of(reply.one("P-Asserted-Identity")) == "sip:anonymous@anonymous.invalid"
    assert names.calls == []


def test_privacy_none_reveals_the_name() -> None:
    reply = ask(request(extra=("Privacy: none",)))
    assert display_name(reply.one("Contact")) == "John Doe"


@pytest.mark.parametrize(
    "from_",
    [
        '"Anonymous" <sip:anonymous@anonymous.invalid>;tag=a',
        "<sip:anonymous@example.com>;tag=a",
        "<sip:+492216698712@anonymous.invalid>;tag=a",
        '"anonymous" <sip:+492216698712@example.com>;tag=a',
    ],
)
def test_anonymous_caller_gets_the_anonymous_name(from_: str) -> None:
    reply = ask(request(from_=from_))
    assert reply.status == 302
    assert display_name(reply.one("Contact")) == "Anonymous"


def test_anonymous_from_beside_a_pai_still_hides_the_name() -> None:
    extra = ("P-Asserted-Identity: <sip:+492216698712@carrier>",)
    reply = ask(request(from_='"Anonymous" <sip:anonymous@anonymous.invalid>;tag=a', extra=extra))
    assert display_name(reply.one("Contact")) == "Anonymous"


def test_remote_party_id_privacy_full_gets_the_anonymous_name() -> None:
    extra = ("Remote-Party-ID: <sip:+492216698712@x>;party=calling;privacy=full",)
    reply = ask(request(extra=extra))
    assert display_name(reply.one("Contact")) == "Anonymous"


def test_invalid_calling_number_gets_400_with_a_warning() -> None:
    reply = ask(request(from_="<sip:alice@example.com>;tag=a"))
    assert reply.status == 400
    assert "invalid calling number" in reply.one("Warning")
    assert reply.one("Warning").startswith("399 cnamd ")


def test_invalid_calling_number_gets_404_when_invalid_reply_is_404() -> None:
    dip, _ = make(invalid_reply="404")
    assert ask(request(from_="<sip:alice@example.com>;tag=a"), dip).status == 404


def test_denied_lookup_gets_403() -> None:
    dip, names = make()
    names.deny_numbers.add("+492216698712")
    assert ask(request(), dip).status == 403


def test_source_outside_the_acl_gets_403() -> None:
    dip, names = make()
    names.denied.add("127.0.0.1")
    assert ask(request(), dip).status == 403
    assert names.calls == []


def test_source_outside_the_acl_is_dropped_silently_when_deny_reply_is_drop() -> None:
    dip, names = make(deny_reply="drop")
    names.denied.add("127.0.0.1")
    before = sample("cnamd_sip_dropped_total", reason="denied")
    assert dip.handle(request(), SRC, "udp") is None
    assert sample("cnamd_sip_dropped_total", reason="denied") == before + 1


def test_invite_with_sdp_body_is_answered() -> None:
    body = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    assert ask(request(body=body, extra=("Content-Type: application/sdp",))).status == 302


def test_compact_header_forms_are_understood() -> None:
    data = (
        b"INVITE sip:+12125550001@127.0.0.1 SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKc\r\n"
        b"f: <sip:+492216698712@127.0.0.1>;tag=c\r\n"
        b"t: <sip:+12125550001@127.0.0.1>\r\n"
        b"i: compact@127.0.0.1\r\nCSeq: 7 INVITE\r\nm: <sip:a@127.0.0.1>\r\nl: 0\r\n\r\n"
    )
    reply = ask(data)
    assert reply.status == 302
    assert reply.one("Call-ID") == "compact@127.0.0.1"
    assert reply.one("CSeq") == "7 INVITE"


def test_folded_headers_and_odd_spacing_are_read() -> None:
    data = (
        b"INVITE sip:+12125550001@127.0.0.1 SIP/2.0\r\n"
        b"VIA  : SIP / 2.0 / UDP\r\n  127.0.0.1:5061 ;branch=z9hG4bKf\r\n"
        b"from:\r\n <sip:+492216698712@127.0.0.1>\r\n ;tag=f\r\n"
        b"TO : <sip:+12125550001@127.0.0.1>\r\ncall-id: fold@x\r\ncseq: 0009\r\n INVITE\r\n"
        b"max-forwards: 0068\r\n\r\n"
    )
    assert ask(data).status == 302


def test_bare_lf_line_ends_are_tolerated() -> None:
    assert ask(request().replace(b"\r\n", b"\n")).status == 302


# Copied headers, To-tag, destination ------------------------------------------------------


def test_response_copies_every_via_in_order() -> None:
    data = request(
        extra=(
            "Via: SIP/2.0/UDP proxy2.example.com;branch=z9hG4bK2",
            "Via: SIP/2.0/TCP proxy3.example.com:5070;branch=z9hG4bK3, SIP/2.0/UDP 10.0.0.9",
        )
    )
    vias = ask(data).raw_vias()
    assert vias[1:] == [
        "SIP/2.0/UDP proxy2.example.com;branch=z9hG4bK2",
        "SIP/2.0/TCP proxy3.example.com:5070;branch=z9hG4bK3, SIP/2.0/UDP 10.0.0.9",
    ]


def test_top_via_gets_received_when_sent_by_differs_from_source() -> None:
    reply = ask(request(via="SIP/2.0/UDP pbx.example.com:5061;branch=z9hG4bKr"))
    assert (
        reply.raw_vias()[0] == "SIP/2.0/UDP pbx.example.com:5061;branch=z9hG4bKr;received=127.0.0.1"
    )


def test_top_via_is_unchanged_when_sent_by_is_the_source_address() -> None:
    reply = ask(request(via="SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKs"))
    assert reply.raw_vias()[0] == "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKs"


def test_rport_is_filled_with_the_source_port_and_received_added() -> None:
    reply = ask(
        request(via="SIP/2.0/UDP 127.0.0.1:5061;rport;branch=z9hG4bKp"), source=("127.0.0.1", 40000)
    )
    top = reply.message.headers.get("Via")[0]
    assert param("<x>" + top[top.index(";") :], "rport") == "40000"
    assert param("<x>" + top[top.index(";") :], "received") == "127.0.0.1"
    assert param("<x>" + top[top.index(";") :], "branch") == "z9hG4bKp"


def test_from_call_id_and_cseq_are_copied() -> None:
    data = request(
        from_='"A" <sip:+492216698712@x>;tag=abc', call_id="cid-42@host", cseq="314 INVITE"
    )
    reply = ask(data)
    assert reply.one("From") == '"A" <sip:+492216698712@x>;tag=abc'
    assert reply.one("Call-ID") == "cid-42@host"
    assert reply.one("CSeq") == "314 INVITE"


def test_to_tag_is_added_when_absent() -> None:
    reply = ask(request())
    tag = param(reply.one("To"), "tag")
    assert tag and tag.startswith("cnamd-")
    assert uri_of(reply.one("To")) == "sip:+12125550001@127.0.0.1:5060"


def test_existing_to_tag_is_kept() -> None:
    reply = ask(request(to="<sip:+12125550001@127.0.0.1>;tag=theirs"))
    assert reply.one("To") == "<sip:+12125550001@127.0.0.1>;tag=theirs"


def test_retransmitted_invite_gets_identical_answer() -> None:
    dip, _ = make()
    first = dip.handle(request(), SRC, "udp")
    assert first is not None
    assert dip.handle(request(), SRC, "udp") == first
    assert (
        Dip(DipSettings(), MemoryNames()).handle(request(), SRC, "udp") == first
    )  # another worker


def test_different_transactions_get_different_to_tags() -> None:
    tags = {param(ask(request(call_id=f"c{i}@x")).one("To"), "tag") for i in range(20)} | {
        param(ask(request(via=f"SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK{i}")).one("To"), "tag")
        for i in range(20)
    }
    assert len(tags) == 40


def test_to_tag_depends_on_the_secret() -> None:
    one = ask(request(), make(to_tag_secret=b"a")[0]).one("To")
    two = ask(request(), make(to_tag_secret=b"b")[0]).one("To")
    assert one != two


def test_every_response_carries_server_and_content_length_zero() -> None:
    dip, _ = make(server_header="cnamd/9.9")
    for data in (request(), request("OPTIONS"), request("BYE"), request(cseq="x INVITE")):
        reply = ask(data, dip)
        assert reply.one("Server") == "cnamd/9.9"
        assert reply.raw.endswith(b"Content-Length: 0\r\n\r\n")


def test_answer_goes_to_the_source_when_rport_is_present() -> None:
    dip, _ = make()
    data = request(via="SIP/2.0/UDP 10.1.1.1:5070;rport;branch=z9hG4bKd")
    answer = dip.answer(data, ("192.0.2.7", 33333), "udp")
    assert answer is not None and answer[1] == ("192.0.2.7", 33333)


def test_answer_goes_to_the_source_address_at_the_sent_by_port_without_rport() -> None:
    dip, _ = make()
    data = request(via="SIP/2.0/UDP 10.1.1.1:5070;branch=z9hG4bKd")
    answer = dip.answer(data, ("192.0.2.7", 33333), "udp")
    assert answer is not None and answer[1] == ("192.0.2.7", 5070)


# Other requests ---------------------------------------------------------------------------


def test_options_gets_200_with_allow_and_accept() -> None:
    reply = ask(request("OPTIONS", "sip:ping@127.0.0.1"))
    assert (reply.status, reply.reason) == (200, "OK")
    assert {m.strip() for m in reply.all("Allow")} == {"INVITE", "ACK", "CANCEL", "OPTIONS"}
    assert reply.one("Accept") == "application/sdp"


def test_options_with_max_forwards_zero_is_still_answered_200() -> None:
    assert ask(request("OPTIONS", max_forwards="0")).status == 200


def test_ack_is_absorbed() -> None:
    dip, names = make()
    assert dip.handle(request("ACK", to="<sip:x@y>;tag=cnamd-1"), SRC, "udp") is None
    assert names.calls == []


@pytest.mark.parametrize(
    "extra",
    [(), ("Date: Sat, 13 Nov 2010 23:29:00 GMT",)],  # the C fast path's shape, and the parser's
)
def test_every_well_formed_ack_is_counted_and_absorbed(extra: tuple[str, ...]) -> None:
    dip, names = make()
    before = sample("cnamd_sip_requests_total", method="ACK", transport="tcp")
    dropped = sample("cnamd_sip_dropped_total", reason="unparseable")
    ack = request("ACK", to="<sip:x@y>;tag=cnamd-1", extra=extra)
    assert dip.handle(ack, SRC, "tcp") is None
    assert dip.handle(b"ACK garbage\r\n\r\n", SRC, "tcp") is None
    metrics.flush_tallies()
    assert sample("cnamd_sip_requests_total", method="ACK", transport="tcp") == before + 1
    assert sample("cnamd_sip_dropped_total", reason="unparseable") == dropped + 1
    assert names.calls == []


def test_cancel_gets_200() -> None:
    reply = ask(request("CANCEL"))
    assert reply.status == 200
    assert reply.one("CSeq") == "1 CANCEL"


@pytest.mark.parametrize("method", ["BYE", "REGISTER", "SUBSCRIBE", "MESSAGE", "INFO", "NEWMETHOD"])
def test_other_methods_get_405_with_allow(method: str) -> None:
    reply = ask(request(method))
    assert (reply.status, reply.reason) == (405, "Method Not Allowed")
    assert {m.strip() for m in reply.all("Allow")} == {"INVITE", "ACK", "CANCEL", "OPTIONS"}


def test_max_forwards_zero_gets_483() -> None:
    reply = ask(request(max_forwards="0"))
    assert (reply.status, reply.reason) == (483, "Too Many Hops")


def test_missing_max_forwards_is_tolerated() -> None:
    assert ask(request(max_forwards=None)).status == 302


def test_unknown_required_extension_gets_420_listing_it() -> None:
    reply = ask(request(extra=("Require: foo, bar",)))
    assert reply.status == 420
    assert [t.strip() for t in reply.all("Unsupported")] == ["foo", "bar"]


# Malformed requests -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "name"), [("from_", "From"), ("to", "To"), ("call_id", "Call-ID")]
)
def test_missing_mandatory_header_gets_400_naming_it(field: str, name: str) -> None:
    reply = ask(request(**{field: None}))  # type: ignore[arg-type]
    assert reply.status == 400
    assert f"missing {name} header" in reply.one("Warning")


def test_missing_cseq_gets_400_naming_it() -> None:
    data = request().replace(b"CSeq: 1 INVITE\r\n", b"")
    reply = ask(data)
    assert reply.status == 400 and "missing CSeq header" in reply.one("Warning")


@pytest.mark.parametrize("cseq", ["x INVITE", "1", "-1 INVITE", "2147483648 INVITE", "1 INVITE x"])
def test_bad_cseq_gets_400(cseq: str) -> None:
    reply = ask(request(cseq=cseq))
    assert reply.status == 400 and "bad CSeq header" in reply.one("Warning")


def test_cseq_method_mismatch_gets_400() -> None:
    reply = ask(request(cseq="1 OPTIONS"))
    assert reply.status == 400 and "CSeq method" in reply.one("Warning")


@pytest.mark.parametrize("length", ["abc", "-1", "99", "1 2"])
def test_bad_content_length_gets_400(length: str) -> None:
    reply = ask(request(content_length=length))
    assert reply.status == 400
    warning = reply.one("Warning")
    assert "Content-Length" in warning


def test_duplicate_single_value_header_gets_400() -> None:
    reply = ask(request(extra=("Call-ID: second@x",)))
    assert reply.status == 400 and "duplicate Call-ID header" in reply.one("Warning")


@pytest.mark.parametrize("max_forwards", ["x", "256", "-1"])
def test_bad_max_forwards_gets_400(max_forwards: str) -> None:
    assert ask(request(max_forwards=max_forwards)).status == 400


@pytest.mark.parametrize(
    "start",
    [
        b"INVITE  sip:+1@x SIP/2.0",
        b"INVITE sip:+1@x SIP/2.0 ",
        b"INVITE sip:+1@x",
        b"INVITE <sip:+1@x> SIP/2.0",
        b"INVITE sip:+1@x?Route=%3Csip:x%3E SIP/2.0",
        b"INV\x01TE sip:+1@x SIP/2.0",
    ],
)
def test_bad_start_line_gets_400(start: bytes) -> None:
    data = start + request()[request().index(b"\r\n") :]
    reply = ask(data)
    assert reply.status == 400
    assert reply.has("Warning")


def test_unsupported_sip_version_gets_505() -> None:
    data = request().replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1)
    assert ask(data).status == 505


def test_unknown_request_uri_scheme_gets_416() -> None:
    assert ask(request("OPTIONS", "nobodyknowsthisscheme:totallyopaquecontent")).status == 416


def test_tel_request_uri_is_accepted() -> None:
    assert ask(request(uri="tel:+12125550001")).status == 302


def test_unbalanced_quote_in_from_gets_400() -> None:
    reply = ask(request(from_='"Mr. J. User <sip:+492216698712@x>;tag=a'))
    assert reply.status == 400 and "bad From header" in reply.one("Warning")


def test_message_without_via_is_dropped_and_counted() -> None:
    before = sample("cnamd_sip_dropped_total", reason="unparseable")
    dip, _ = make()
    assert dip.handle(request(via=""), SRC, "udp") is None
    assert sample("cnamd_sip_dropped_total", reason="unparseable") == before + 1


@pytest.mark.parametrize("data", [b"\x00\xff garbage", b"hello\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n"])
def test_garbage_is_dropped_and_counted(data: bytes) -> None:
    before = sample("cnamd_sip_dropped_total", reason="unparseable")
    assert make()[0].handle(data, SRC, "udp") is None
    assert sample("cnamd_sip_dropped_total", reason="unparseable") == before + 1


def test_responses_are_dropped_silently() -> None:
    data = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\r\nCSeq: 1 OPTIONS\r\n\r\n"
    before = sample("cnamd_sip_dropped_total", reason="response")
    assert make()[0].handle(data, SRC, "udp") is None
    assert sample("cnamd_sip_dropped_total", reason="response") == before + 1


@pytest.mark.parametrize("data", [b"\r\n\r\n", b"\r\n", b""])
def test_keepalive_crlf_is_ignored(data: bytes) -> None:
    assert make()[0].handle(data, SRC, "udp") is None


# Protection and availability --------------------------------------------------------------


def test_source_over_its_rate_gets_503_with_retry_after() -> None:
    now = [100.0]
    names = MemoryNames()
    dip = Dip(DipSettings(), names, limiter=TokenBucket(rate=1, burst=2), clock=lambda: now[0])
    before = sample("cnamd_ratelimited_total", front="sip")
    assert [ask(request(), dip).status for _ in range(3)] == [302, 302, 503]
    reply = ask(request(), dip)
    assert reply.status == 503 and reply.one("Retry-After") == "1"
    assert ask(request(), dip, source=("127.0.0.2", 5061)).status == 302  # per source
    now[0] += 1.0
    assert ask(request(), dip).status == 302
    assert sample("cnamd_ratelimited_total", front="sip") == before + 2


def test_unavailable_dip_answers_503_with_retry_after() -> None:
    dip, _ = make(retry_after=30)
    dip.available = False
    reply = ask(request(), dip)
    assert reply.status == 503 and reply.one("Retry-After") == "30"


def test_metrics_count_requests_by_method_and_transport_and_responses_by_code() -> None:
    dip, _ = make()
    req_before = sample("cnamd_sip_requests_total", method="other", transport="tcp")
    resp_before = sample("cnamd_sip_responses_total", code="405")
    dip.handle(request("SUBSCRIBE"), SRC, "tcp")
    unflushed = REGISTRY.get_sample_value("cnamd_sip_responses_total", {"code": "405"}) or 0.0
    assert unflushed == resp_before  # tallied, not yet added
    metrics.flush_tallies()
    assert sample("cnamd_sip_requests_total", method="other", transport="tcp") == req_before + 1
    assert sample("cnamd_sip_responses_total", code="405") == resp_before + 1


def test_a_failing_directory_does_not_escape_and_is_counted() -> None:
    class Broken(MemoryNames):
        def caller_name(self, calling: str, called: str, source_ip: str):  # type: ignore[override]
            raise RuntimeError("boom")

    dip = Dip(DipSettings(), Broken())
    before = sample("cnamd_sip_dropped_total", reason="internal")
    assert dip.handle(request(), SRC, "udp") is None
    assert sample("cnamd_sip_dropped_total", reason="internal") == before + 1


@pytest.mark.parametrize(
    "settings",
    [
        {"number_source": "from"},
        {"miss_reply": "200"},
        {"invalid_reply": "500"},
        {"deny_reply": "ignore"},
        {"to_tag_prefix": "a b"},
        {"retry_after": 0},
        {"to_tag_secret": b"x" * 65},
        {"server_header": "bad\r\nheader"},
    ],
)
def test_bad_settings_are_refused(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        DipSettings(**settings)  # type: ignore[arg-type]
