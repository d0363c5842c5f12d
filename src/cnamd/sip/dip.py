"""The SIP dip: one request in, one stateless response out (DESIGN.md "The SIP dip").

Pure apart from the injected ``CallerNames`` and clock: bytes in, bytes out; a dip
whose name must come from an upstream source (``NameKind.PENDING``) is answered
later, through the ``late`` callback the transport passes in.
No logging and no exceptions on the hot path (STYLE habits 8 and 11).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from cnamd import metrics
from cnamd.errors import ConfigError
from cnamd.lookup import CallerNames, NameAnswer, NameKind
from cnamd.sip.message import (
    CALL_ID,
    CRLF,
    CSEQ,
    E_RESPONSE,
    FROM,
    PAI,
    PRIVACY,
    REQUIRE,
    RPID,
    NameAddr,
    Request,
    is_common_shape,
    is_token,
    parse_name_addr,
    parse_request,
    quote,
    render_response,
    response_destination,
    split_uri,
    unquote,
)

NUMBER_SOURCES = ("identity", "request-uri")
TRANSPORTS = ("udp", "tcp", "tls")
METHOD_LABELS = ("INVITE", "ACK", "CANCEL", "OPTIONS", "BYE", "REGISTER", "other")
RESPONSE_CODES = {
    200: b"OK",
    302: b"Moved Temporarily",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    416: b"Unsupported URI Scheme",
    420: b"Bad Extension",
    483: b"Too Many Hops",
    503: b"Service Unavailable",
    505: b"Version Not Supported",
}
DROP_REASONS = (
    "unparseable",
    "response",
    "denied",
    "internal",
    "oversize",
    "framing",
    "overload",
    "send",
)
# Final: compiled, a Final module constant is a C static, any other a dict lookup per use.
ALLOW: Final = b"Allow: INVITE, ACK, CANCEL, OPTIONS\r\n"
ACCEPT: Final = b"Accept: application/sdp\r\n"
ANONYMOUS_URI: Final = b"<sip:anonymous@anonymous.invalid>"  # RFC 3323 §4.1.1.3
_PRIVACY_HIDE: Final = frozenset((b"id", b"user", b"header"))  # RFC 3323 §4.2, RFC 3325 §9.3
_RPID_PRIVACY_HIDE: Final = frozenset((b"full", b"name", b"uri"))
_E_INVALID_NUMBER: Final = b"invalid calling number"


@dataclass(frozen=True, slots=True)
class DipSettings:
    """How the dip answers; validated here, mapped one-to-one from ``sip.*`` settings.

    number_source: ``identity`` (P-Asserted-Identity, then Remote-Party-ID,
        then From) or ``request-uri`` (the Request-URI user is the caller and
        the To user the called party).
    miss_reply: ``404``, or ``302`` (a redirect without a name).
    invalid_reply: ``400`` or ``404`` for a calling number that cannot be read.
    deny_reply: ``403``, or ``drop`` to stay silent to sources outside the ACL.
    to_tag_prefix/to_tag_secret: the To-tag is the prefix plus a keyed hash
        of the request, so retransmissions get the same one without state.
    retry_after: seconds in the Retry-After of a 503.
    honor_maddr: send UDP answers to a Via ``maddr`` (RFC 3261 §18.2.2);
        off by default, as it lets a forged request aim answers anywhere.
    """

    number_source: str = "identity"
    miss_reply: str = "404"
    invalid_reply: str = "400"
    anonymous_name: str = "Anonymous"
    deny_reply: str = "403"
    server_header: str = "cnamd/0.1"
    to_tag_prefix: str = "cnamd"
    to_tag_secret: bytes = b""
    retry_after: int = 5
    honor_maddr: bool = False

    def __post_init__(self) -> None:
        choices = (
            ("number_source", self.number_source, NUMBER_SOURCES),
            ("miss_reply", self.miss_reply, ("404", "302")),
            ("invalid_reply", self.invalid_reply, ("400", "404")),
            ("deny_reply", self.deny_reply, ("403", "drop")),
        )
        for field, value, allowed in choices:
            if value not in allowed:
                raise ConfigError(f"must be one of {', '.join(allowed)}", field=f"sip.{field}")
        if not self.to_tag_prefix or not is_token(self.to_tag_prefix.encode()):
            raise ConfigError("must be a non-empty SIP token", field="sip.to_tag_prefix")
        if len(self.to_tag_secret) > 64:
            raise ConfigError("at most 64 bytes", field="sip.to_tag_secret")
        if not 0 < self.retry_after < 86400:
            raise ConfigError("must be 1..86399 seconds", field="sip.retry_after")
        if not self.server_header.isprintable() or not self.server_header.isascii():
            raise ConfigError("must be printable ASCII", field="sip.server_header")


Answer = tuple[bytes, tuple[str, int]]
Tracer = Callable[[bytes, tuple[str, int], str, Answer | None], None]
#: sends an answer that came later than its request (upstream): data, destination
Late = Callable[[bytes, tuple[str, int]], None]


class Dip:
    """Answer SIP requests statelessly: INVITE dips, OPTIONS, CANCEL, ACK, the rest 405.

    ``answer()`` returns the response and the address it goes to (RFC 3261
    §18.2.2), or None to send nothing. Set ``available = False`` to answer
    every request with 503 + Retry-After (e.g. while the cache is loading).
    """

    def __init__(
        self,
        settings: DipSettings,
        names: CallerNames,
        *,
        limiter: _Limiter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.names = names
        self.clock = clock
        self.available = True
        #: called with (request, source, transport, answer) after each message when set:
        #: the sampled SIP request log (``sip.log_sample``); None costs one test per message
        self.trace: Tracer | None = None
        self._quoted: dict[str, bytes] = {}
        # Pre-bound metric children (habit 8).
        # Requests and responses are tallied in plain ints (metrics.Tally) and added to
        # their pre-bound children by metrics.flush_tallies(), which the transports call
        # every second: a prometheus_client inc() takes a lock and costs ~0.4 us.
        self._requests = {
            t: {m.encode(): metrics.Tally(metrics.SIP_REQUESTS.labels(m, t)) for m in METHOD_LABELS}
            for t in TRANSPORTS
        }
        self._responses = {
            code: metrics.Tally(metrics.SIP_RESPONSES.labels(str(code))) for code in RESPONSE_CODES
        }
        self.dropped = {
            reason: metrics.Tally(metrics.SIP_DROPPED.labels(reason)) for reason in DROP_REASONS
        }
        self._ratelimited = metrics.Tally(metrics.RATELIMITED.labels("sip"))
        self._anonymous_lookups = metrics.Tally(metrics.LOOKUPS.labels("sip", "anonymous", "none"))
        self.configure(settings, limiter)

    def configure(self, settings: DipSettings, limiter: _Limiter | None) -> None:
        """Take new settings and rate limiter (SIGHUP): every field derived from them is
        rebuilt here, synchronously between two messages, so none is answered half-way."""
        self.settings = settings
        self.limiter = limiter
        self._identity = settings.number_source == "identity"
        self._miss_302 = settings.miss_reply == "302"
        self._invalid_400 = settings.invalid_reply == "400"
        self._deny_403 = settings.deny_reply == "403"
        self._honor_maddr = settings.honor_maddr
        self._tail = (
            b"Server: " + settings.server_header.encode() + b"\r\nContent-Length: 0\r\n\r\n"
        )
        self._status = {
            code: b"SIP/2.0 %d %s\r\n" % (code, text) for code, text in RESPONSE_CODES.items()
        }
        self._tag_prefix = b";tag=" + settings.to_tag_prefix.encode() + b"-"
        self._tag_seed = zlib.crc32(settings.to_tag_secret)
        self._retry_after = b"Retry-After: %d\r\n" % settings.retry_after
        self._limited_retry_after = (
            b"Retry-After: %d\r\n" % limiter.retry_after if limiter is not None else b""
        )
        self._anonymous = (
            b"Contact: " + quote(settings.anonymous_name) + b" <",
            b">\r\nP-Asserted-Identity: "
            + quote(settings.anonymous_name)
            + b" "
            + ANONYMOUS_URI
            + CRLF,
        )

    def handle(
        self, data: bytes, source: tuple[str, int], transport: str, late: Late | None = None
    ) -> bytes | None:
        """The response to one message, or None (dropped, absorbed ACK, keep-alive)."""
        answer = self.answer(data, source, transport, late)
        return None if answer is None else answer[0]

    def answer(
        self, data: bytes, source: tuple[str, int], transport: str, late: Late | None = None
    ) -> Answer | None:
        """The response to one message and where to send it, or None.

        ``late`` sends an INVITE's answer that has to wait for an upstream source
        (None is returned now); without it such a dip is answered as a miss."""
        try:
            answer = self._answer(data, source, transport, late)
        except Exception:  # a bug, not a peer's fault: never let it kill the transport
            self.dropped["internal"].inc()
            return None
        trace = self.trace
        if trace is not None:
            trace(data, source, transport, answer)
        return answer

    def answer_udp(self, data: bytes, source: tuple[str, int]) -> Answer | None:
        """``answer()`` for a datagram, without late answers (``UdpFront`` has them)."""
        return self.answer(data, source, "udp")

    def refuse(
        self, data: bytes, source: tuple[str, int], transport: str, code: int, reason: bytes = b""
    ) -> bytes | None:
        """A ``code`` (400 or 503) answer to a message the transport will not process, when
        it carries enough to be answered; 503 carries Retry-After."""
        if code not in RESPONSE_CODES:
            code = 400
        try:
            req = parse_request(data)
            if req.via is None or req.method == b"ACK":
                return None
            extra = self._retry_after if code == 503 else b""
            if reason:
                extra += b'Warning: 399 cnamd "' + reason.replace(b'"', b"'") + b'"\r\n'
            return self._reply(req, source, transport, code, extra)[0]
        except Exception:
            self.dropped["internal"].inc()
            return None

    def _answer(
        self, data: bytes, source: tuple[str, int], transport: str, late: Late | None
    ) -> Answer | None:
        if not data or (data[0] in {10, 13} and not data.strip(b"\r\n")):
            return None  # keep-alive (RFC 5626 §4.4.1 CRLFs)
        by_method = self._requests.get(transport) or self._requests["udp"]
        if data[:4] == b"ACK " and is_common_shape(data):
            # RFC 3261 §17.2.1, as below; half of a dip's messages, so a well-formed
            # one is counted without building its Request (~0.6 us of every dip).
            by_method[b"ACK"].n += 1
            return None
        req = parse_request(data)
        if req.via is None:
            self.dropped["response" if req.error is E_RESPONSE else "unparseable"].inc()
            return None
        method = req.method
        (by_method.get(method) or by_method[b"other"]).n += 1
        if method == b"ACK":
            return None  # RFC 3261 §17.2.1: the ACK to a non-2xx answer ends here
        ip = source[0]
        if not self.names.admit(ip):
            return self._deny(req, source, transport)
        limiter = self.limiter
        if limiter is not None and not limiter.allow(ip, self.clock()):
            self._ratelimited.inc()
            return self._reply(req, source, transport, 503, self._limited_retry_after)
        if not req:
            warning = b'Warning: 399 cnamd "' + req.error + b'"\r\n'
            return self._reply(req, source, transport, req.status, warning)
        if not self.available:
            return self._reply(req, source, transport, 503, self._retry_after)
        if req.max_forwards == 0 and method != b"OPTIONS":
            return self._reply(req, source, transport, 483)  # RFC 3261 §16.3 item 2
        require = req.headers[REQUIRE]
        if require is not None and method != b"CANCEL":
            return self._reply(req, source, transport, 420, _unsupported(require))
        if method == b"INVITE":
            return self._dip(req, source, transport, late)
        if method == b"OPTIONS":
            return self._reply(req, source, transport, 200, ALLOW + ACCEPT)
        if method == b"CANCEL":
            return self._reply(req, source, transport, 200)
        return self._reply(req, source, transport, 405, ALLOW)

    def _dip(
        self, req: Request, source: tuple[str, int], transport: str, late: Late | None
    ) -> Answer | None:
        """INVITE: find the calling identity, ask the directory, redirect with the name."""
        headers = req.headers
        from_addr = req.from_addr
        assert from_addr is not None  # a valid request has a From
        rpid_privacy: bytes | None = None
        identity: NameAddr | None = None
        if self._identity:
            value = headers[PAI]
            if value is not None:
                identity = parse_name_addr(value)
            if identity is None:
                value = headers[RPID]
                if value is not None:
                    identity = parse_name_addr(value)
                    if identity is not None:
                        rpid_privacy = identity.param(b"privacy")
            if identity is None:
                identity = from_addr
            _, user, host = split_uri(identity.uri)
            called = split_uri(req.uri)[1]
            display = identity.display
            if identity is from_addr:
                identity = None  # From is checked for anonymity below only beside PAI/RPID
        else:
            _, user, host = split_uri(req.uri)
            called = b"" if req.to_addr is None else split_uri(req.to_addr.uri)[1]
            display = b""

        privacy = headers[PRIVACY]
        if (
            (privacy is not None and _hides_identity(privacy))
            or (rpid_privacy is not None and rpid_privacy.lower() in _RPID_PRIVACY_HIDE)
            or (
                (display or not user or user[0] > 0x39 or host[-8:].lower() == b".invalid")
                and _is_anonymous(user, host, display)
            )
            or (identity is not None and _is_anonymous_addr(from_addr))
        ):
            self._anonymous_lookups.inc()
            head, tail = self._anonymous
            return self._reply(req, source, transport, 302, head + req.uri + tail)

        answer = self.names.caller_name(
            user.decode("utf-8", "replace"), called.decode("utf-8", "replace"), source[0]
        )
        if answer.kind is NameKind.PENDING:
            if late is not None:
                self._later(req, source, transport, answer, user=user, host=host, late=late)
                return None
            answer = NameAnswer(NameKind.MISS, number=answer.number)
        return self._named(req, source, transport, answer, user=user, host=host)

    def _later(
        self,
        req: Request,
        source: tuple[str, int],
        transport: str,
        pending: NameAnswer,
        *,
        user: bytes,
        host: bytes,
        late: Late,
    ) -> None:
        """Ask upstream; the answer (or the miss at the front's deadline) leaves by ``late``."""

        def deliver(final: NameAnswer) -> None:
            try:
                out = self._named(req, source, transport, final, user=user, host=host)
                if out is not None:
                    late(out[0], out[1])
            except Exception:  # a bug, not a peer's fault
                self.dropped["internal"].inc()

        self.names.later(pending, deliver)

    def _named(
        self,
        req: Request,
        source: tuple[str, int],
        transport: str,
        answer: NameAnswer,
        *,
        user: bytes,
        host: bytes,
    ) -> Answer | None:
        """The 302 with the name, or the miss, invalid or denied answer."""
        kind = answer.kind
        if kind is NameKind.HIT:
            name = self._quote(answer.name)
            number = (answer.number or user.decode("utf-8", "replace")).encode()
            pai = b"<sip:" + number + b"@" + host + b">" if host else b"<tel:" + number + b">"
            extra = b"".join(
                (
                    b"Contact: ",
                    name,
                    b" <",
                    req.uri,
                    b">\r\nP-Asserted-Identity: ",
                    name,
                    b" ",
                    pai,
                    CRLF,
                )
            )
            return self._reply(req, source, transport, 302, extra)
        if kind is NameKind.MISS:
            if self._miss_302:
                return self._reply(req, source, transport, 302, b"Contact: <" + req.uri + b">\r\n")
            return self._reply(req, source, transport, 404)
        if kind is NameKind.INVALID:
            if self._invalid_400:
                warning = b'Warning: 399 cnamd "' + _E_INVALID_NUMBER + b'"\r\n'
                return self._reply(req, source, transport, 400, warning)
            return self._reply(req, source, transport, 404)
        return self._deny(req, source, transport)

    def _deny(self, req: Request, source: tuple[str, int], transport: str) -> Answer | None:
        if self._deny_403:
            return self._reply(req, source, transport, 403)
        self.dropped["denied"].inc()
        return None

    def _quote(self, name: str) -> bytes:
        quoted = self._quoted.get(name)
        if quoted is None:
            if len(self._quoted) >= 4096:
                self._quoted.clear()
            quoted = self._quoted[name] = quote(name)
        return quoted

    def _reply(
        self, req: Request, source: tuple[str, int], transport: str, code: int, extra: bytes = b""
    ) -> Answer:
        via = req.via
        assert via is not None  # only answerable requests get here
        to_tag = b""
        to_addr = req.to_addr
        if to_addr is not None and (not to_addr.params or to_addr.param(b"tag") is None):
            to_tag = self._to_tag(req)  # RFC 3261 §8.2.6.2
        data = render_response(
            self._status[code],
            via.reply_form(source[0].encode(), source[1]),
            req,
            to_tag=to_tag,
            extra=extra,
            tail=self._tail,
        )
        self._responses[code].n += 1
        if transport != "udp" or via.rport or (not via.maddr and via.port == source[1]):
            return data, source
        return data, response_destination(via, source, transport, honor_maddr=self._honor_maddr)

    def _to_tag(self, req: Request) -> bytes:
        """Prefix + CRC of Call-ID, From (with its tag), top Via (with its branch) and CSeq,
        seeded by the secret, like Kamailio's sl: a retransmission gets the same tag, and
        nothing is remembered."""
        headers = req.headers
        via = req.via
        key = b"\x00".join(
            (
                headers[CALL_ID] or b"",
                headers[FROM] or b"",
                via.raw if via else b"",
                headers[CSEQ] or b"",
            )
        )
        return self._tag_prefix + b"%08x" % zlib.crc32(key, self._tag_seed)


class UdpFront:
    """The UDP pump's callback for one socket: ``Dip.answer`` over UDP, with late
    (upstream) answers sent from that same socket by ``send``."""

    def __init__(self, dip: Dip, send: Late) -> None:
        self.dip = dip
        self.send = send

    def answer(self, data: bytes, source: tuple[str, int]) -> Answer | None:
        return self.dip.answer(data, source, "udp", self.send)


class _Limiter(Protocol):
    """What the dip needs of a rate limiter (``TokenBucket``, ``SharedBucket``)."""

    @property
    def retry_after(self) -> int:
        """Seconds until a refused source has a token again."""
        ...

    def allow(self, source: str, now: float) -> bool: ...


def _hides_identity(privacy: bytes) -> bool:
    """RFC 3323 §4.2 / RFC 3325 §9.3: ``id``, ``user`` or ``header`` privacy requested."""
    for value in privacy.replace(b",", b";").split(b";"):
        if value.strip().lower() in _PRIVACY_HIDE:
            return True
    return False


def _is_anonymous(user: bytes, host: bytes, display: bytes) -> bool:
    """RFC 3323 §4.1.1.3 anonymous caller: user or display name "anonymous", or the
    ``anonymous.invalid`` host."""
    return (
        user.lower() == b"anonymous"
        or host.lower() == b"anonymous.invalid"
        or (bool(display) and unquote(display).strip().lower() == b"anonymous")
    )


def _is_anonymous_addr(addr: NameAddr) -> bool:
    _, user, host = split_uri(addr.uri)
    return _is_anonymous(user, host, addr.display)


def _unsupported(require: bytes) -> bytes:
    """RFC 3261 §8.2.2.3: a 420 lists the required option tags in Unsupported."""
    tags = [t.strip() for t in require.split(b",")]
    tags = [t for t in tags if is_token(t)]
    return b"Unsupported: " + b", ".join(tags) + CRLF if tags else b""
