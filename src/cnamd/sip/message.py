"""Sans-I/O SIP: parse a request lazily, frame a stream, serialize a response.

Only what a stateless redirect server needs is read (RFC 3261 §7, §18.3, §20);
every other header is skipped unparsed. A parse result carries its own error
and is falsy when invalid (STYLE habit 11): nothing here raises on bad input.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from cnamd.sip._scan import Scanned
try:
    from cnamd.sip._scan import common_shape as _c_common_shape
    from cnamd.sip._scan import content_length as _c_content_length
    from cnamd.sip._scan import scan as _c_scan

    _scan: Callable[[bytes], Scanned | None] | None = _c_scan
    _common_shape: Callable[[bytes], bool | None] | None = _c_common_shape
    _content_length: Callable[[bytes], int] | None = _c_content_length
except ImportError:  # built without a C compiler (CNAMD_PURE_PYTHON): Python reads everything
    _scan = None
    _common_shape = None
    _content_length = None

# Final: compiled, a Final module constant is a C static, any other a dict lookup per use.
CRLF: Final = b"\r\n"
SIP_VERSION = b"SIP/2.0"
MAX_CSEQ = 2**31  # RFC 3261 §8.1.1.5: the sequence number MUST be less than 2**31
MAX_FORWARDS_LIMIT = 255  # RFC 4475 §3.1.2.4 treats larger values as malformed

# RFC 3261 §25.1 token, and the characters a URI scheme may hold.
TOKEN_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
DIGITS = b"0123456789"
_SCHEME_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-."
_DISPLAY_TOKEN_CHARS = TOKEN_CHARS + b" \t"
_HOST_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.:[]_"
_WS = b" \t"

# Header slots. Slots below _FIRST_REPEATABLE must appear at most once (RFC 4475 §3.3.8).
FROM: Final = 0
TO: Final = 1
CALL_ID: Final = 2
CSEQ: Final = 3
MAX_FORWARDS: Final = 4
CONTENT_LENGTH: Final = 5
DATE: Final = 6
_FIRST_REPEATABLE: Final = 7
PAI: Final = 7
RPID: Final = 8
PRIVACY: Final = 9
REQUIRE: Final = 10
CONTACT: Final = 11
_NSLOTS: Final = 12
_VIA = -2
_SKIP = -1

_SLOT_NAMES: dict[int, tuple[bytes, ...]] = {
    _VIA: (b"via", b"v"),
    FROM: (b"from", b"f"),
    TO: (b"to", b"t"),
    CALL_ID: (b"call-id", b"i"),
    CSEQ: (b"cseq",),
    MAX_FORWARDS: (b"max-forwards",),
    CONTENT_LENGTH: (b"content-length", b"l"),
    DATE: (b"date",),
    PAI: (b"p-asserted-identity",),
    RPID: (b"remote-party-id",),
    PRIVACY: (b"privacy",),
    REQUIRE: (b"require",),
    CONTACT: (b"contact", b"m"),
}
# Common spellings of headers the dip ignores: one dict hit instead of strip+lower+miss.
_IGNORED = (
    b"User-Agent",
    b"Allow",
    b"Supported",
    b"Content-Type",
    b"Expires",
    b"Accept",
    b"Subject",
    b"Route",
    b"Record-Route",
    b"Session-Expires",
    b"Min-SE",
    b"Allow-Events",
    b"Content-Disposition",
    b"Accept-Language",
    b"Accept-Encoding",
    b"Organization",
    b"Diversion",
    b"History-Info",
    b"P-Charging-Vector",
    b"X-Forwarded-For",
    b"c",
    b"k",
    b"s",
)


def _header_map() -> dict[bytes, int]:
    names: dict[bytes, int] = {}
    for slot, spellings in _SLOT_NAMES.items():
        for low in spellings:
            title = b"-".join(part.capitalize() for part in low.split(b"-"))
            for form in (low, low.upper(), title):
                names[form] = slot
    names[b"Call-ID"] = CALL_ID
    names[b"CSeq"] = CSEQ
    names[b"Remote-Party-ID"] = RPID
    for name in _IGNORED:
        names.setdefault(name, _SKIP)
        names.setdefault(name.lower(), _SKIP)
    return names


_NAMES = _header_map()
_FOLD = re.compile(rb"[ \t]*\r\n[ \t]+")
_VIA_SLOW = re.compile(rb"\s*SIP\s*/\s*2\.0\s*/\s*([^\s/;,]+)\s+(.*)", re.S | re.I)
_PCT = re.compile(rb"%([0-9A-Fa-f]{2})")

# Parse errors: the text goes into a ``Warning: 399 cnamd "..."`` header.
E_START = b"bad request line"
E_VERSION = b"unsupported SIP version"
E_METHOD = b"bad method"
E_RURI = b"bad Request-URI"
E_SCHEME = b"unsupported URI scheme"
E_HEADER_LINE = b"malformed header line"
E_VIA = b"bad Via header"
E_CSEQ = b"bad CSeq header"
E_CSEQ_METHOD = b"CSeq method does not match the request method"
E_CONTENT_LENGTH = b"bad Content-Length header"
E_SHORT_BODY = b"body shorter than Content-Length"
E_MAX_FORWARDS = b"bad Max-Forwards header"
E_DATE = b"bad Date header"
E_CONTACT = b"bad Contact header"
E_RESPONSE = b"a response, not a request"
E_NO_HEADERS = b"no header section"
E_BARE_LINE_END = b"bare CR or LF in the header section"
_E_MISSING = {
    FROM: b"missing From header",
    TO: b"missing To header",
    CALL_ID: b"missing Call-ID header",
    CSEQ: b"missing CSeq header",
}
_E_DUPLICATE = {
    FROM: b"duplicate From header",
    TO: b"duplicate To header",
    CALL_ID: b"duplicate Call-ID header",
    CSEQ: b"duplicate CSeq header",
    MAX_FORWARDS: b"duplicate Max-Forwards header",
    CONTENT_LENGTH: b"duplicate Content-Length header",
    DATE: b"duplicate Date header",
}
_E_BAD_ADDRESS = {FROM: b"bad From header", TO: b"bad To header"}


def is_token(value: bytes) -> bool:
    """RFC 3261 §25.1 token: one or more of the token characters."""
    return bool(value) and not value.translate(None, TOKEN_CHARS)


def is_digits(value: bytes) -> bool:
    """One or more ASCII digits (and nothing else: no sign, no space)."""
    return bool(value) and not value.translate(None, DIGITS)


def unescape(value: bytes) -> bytes:
    """Decode RFC 3261 §19.1.2 ``%HH`` escapes; a ``%`` not followed by two hex digits stays."""
    if b"%" not in value:
        return value
    return _PCT.sub(lambda m: bytes((int(m.group(1), 16),)), value)


def unquote(display: bytes) -> bytes:
    """The text of a display name: quotes removed, RFC 3261 §25.1 quoted-pairs resolved."""
    if len(display) >= 2 and display[:1] == b'"' and display[-1:] == b'"':
        inner = display[1:-1]
        if b"\\" not in inner:
            return inner
        out = bytearray()
        i, n = 0, len(inner)
        while i < n:
            c = inner[i]
            if c == 0x5C and i + 1 < n:
                i += 1
                c = inner[i]
            out.append(c)
            i += 1
        return bytes(out)
    return b" ".join(display.split())


def quote(text: str) -> bytes:
    """An RFC 3261 §25.1 quoted-string for ``text``: ``\\`` and ``"`` escaped, CR/LF dropped."""
    if "\r" in text or "\n" in text:
        text = text.replace("\r", "").replace("\n", "")
    return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'


def _closing_quote(value: bytes) -> int:
    """Index of the quote ending the quoted-string opened at ``value[0]``, or -1."""
    i = 1
    while True:
        q = value.find(b'"', i)
        if q < 0:
            return -1
        j = q - 1
        while j >= 1 and value[j] == 0x5C:
            j -= 1
        if (q - 1 - j) % 2 == 0:
            return q
        i = q + 1


class NameAddr:
    """A From/To/Contact-style value split into display name, URI and parameters."""

    __slots__ = ("display", "params", "uri")

    def __init__(self, display: bytes, uri: bytes, params: bytes) -> None:
        self.display = display  # raw: quoted-string, tokens, or empty
        self.uri = uri
        self.params = params  # raw text after the URI: ";tag=...;..."

    def param(self, name: bytes) -> bytes | None:
        """Value of header parameter ``name`` (lowercase), b"" when valueless, None when absent."""
        params = self.params
        if not params:
            return None
        for part in params.split(b";"):
            key, _, value = part.partition(b"=")
            if key.strip(_WS).lower() == name:
                return value.strip(_WS)
        return None


def parse_name_addr(value: bytes) -> NameAddr | None:
    """Split ``name-addr`` / ``addr-spec`` (RFC 3261 §20.10, §25.1); None when malformed.

    Malformed: unbalanced quotes (RFC 4475 §3.1.2.6), LWS inside ``<>``
    (§3.1.2.14), a non-token display name (§3.1.2.15), or an addr-spec whose
    URI holds ``?`` (§3.1.2.13). A second comma-separated value is ignored.
    """
    if not value:
        return None
    first = value[0]
    if first == 0x3C:  # '<': no display name, the common case
        lt = 0
        display = b""
    elif first == 0x22:  # '"': quoted display name
        q = _closing_quote(value)
        if q < 0:
            return None
        lt = value.find(b"<", q)
        if lt < 0 or value[q + 1 : lt].strip(_WS):
            return None
        display = value[: q + 1]
    else:
        lt = value.find(b"<")
        if lt < 0:
            uri, semi, params = value.partition(b";")
            uri = uri.rstrip(_WS)
            if not uri or b"?" in uri or b" " in uri or b"," in uri or b'"' in uri:
                return None
            return NameAddr(b"", uri, semi + params.partition(b",")[0])
        display = value[:lt].rstrip(_WS)
        if display and display.translate(None, _DISPLAY_TOKEN_CHARS):
            return None
    gt = value.find(b">", lt)
    if gt < 0:
        return None
    uri = value[lt + 1 : gt]
    if not uri or uri[0] in _WS or uri[-1] in _WS:
        return None
    params = value[gt + 1 :]
    if params:
        params = params.partition(b",")[0].strip(_WS)
        if params and params[0] != 0x3B:  # ';'
            return None
    return NameAddr(display, uri, params)


def split_uri(uri: bytes) -> tuple[bytes, bytes, bytes]:
    """(scheme, user, host[:port]) of a SIP/SIPS/tel URI; the user unescaped, without
    parameters or password.

    ``sip:+4922166987;npdi@host;user=phone`` -> (b"sip", b"+4922166987", b"host");
    ``tel:+4922166987;phone-context=x`` -> (b"tel", b"+4922166987", b""). Other
    schemes give an empty user.
    """
    if uri[:4] == b"sip:":
        scheme, rest = b"sip", uri[4:]
    else:
        scheme, _, rest = uri.partition(b":")
        scheme = scheme.lower()
        if scheme == b"tel":
            return scheme, unescape(rest.partition(b";")[0]), b""
        if scheme not in {b"sip", b"sips"}:
            return scheme, b"", b""
    at = rest.find(b"@")
    if at < 0:
        return scheme, b"", rest.partition(b";")[0].partition(b"?")[0]
    user = rest[:at]
    host = rest[at + 1 :]
    if user.translate(None, _PLAIN_USER):  # ':' password, ';' user parameters, '%' escapes
        user = unescape(user.partition(b":")[0].partition(b";")[0])
    if host.translate(None, _HOST_CHARS):
        host = host.partition(b";")[0].partition(b"?")[0]
    return scheme, user, host


_PLAIN_USER = bytes(c for c in range(33, 127) if c not in b":;%")


class TopVia:
    """The topmost via-parm: what RFC 3261 §18.2.1/§18.2.2 and RFC 3581 need to answer."""

    raw: bytes = b""  # this via-parm as received, stripped
    base: bytes = b""  # what the response starts from: raw, less any rport/received params
    transport: bytes = b""
    host: bytes = b""  # without brackets for IPv6
    port: int = 0  # 0: absent
    rport: bool = False
    maddr: bytes = b""
    rest: bytes = b""  # further via-parms of the same header line, after the comma

    def reply_form(self, source_ip: bytes, source_port: int) -> bytes:
        """This via-parm as the response carries it: ``received`` (RFC 3261 §18.2.1) and
        ``rport`` (RFC 3581 §4) filled from the packet's source."""
        if self.rport:
            out = b"%s;rport=%d;received=%s" % (self.base, source_port, source_ip)
        elif self.host == source_ip or _same_host(self.host, source_ip):
            out = self.base
        else:
            out = self.base + b";received=" + source_ip
        return out + b", " + self.rest if self.rest else out


def _same_host(host: bytes, source_ip: bytes) -> bool:
    if b":" in host and b":" in source_ip:  # IPv6 text forms differ ("::1" vs "0::1")
        try:
            return ipaddress.ip_address(host.decode()) == ipaddress.ip_address(source_ip.decode())
        except ValueError:
            return False
    return False


# The common shape, matched in one go: no LWS, no comma, non-empty params, and none
# of rport/received/maddr (which need rewriting or a closer look).
_VIA_FAST = re.compile(
    rb"SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9.\-_]+)(?::([0-9]{1,5}))?"
    rb"((?:;(?![Rr][Pp][Oo][Rr][Tt]\b|[Rr][Ee][Cc][Ee][Ii][Vv][Ee][Dd]\b|[Mm][Aa][Dd][Dd][Rr]\b)"
    rb"[^;,\s]+)*)\Z"
)


def parse_via(value: bytes) -> TopVia | None:
    """Parse the first via-parm of a Via header value (RFC 3261 §20.42); None when malformed."""
    via = TopVia()
    m = _VIA_FAST.match(value)
    if m is not None:
        transport, host, port, _ = m.groups()
        via.raw = via.base = value
        via.transport = transport.upper()
        via.host = host
        if port is not None:
            via.port = int(port)
            if not 0 < via.port < 65536:
                return None
        return via
    comma = value.find(b",")
    if comma >= 0:
        via.rest = value[comma + 1 :].strip(_WS)
        value = value[:comma].rstrip(_WS)
    via.raw = value
    if value[:8] == b"SIP/2.0/":
        sp = value.find(b" ", 8)
        if sp < 0:
            return None
        transport = value[8:sp]
        tail = value[sp + 1 :]
    else:
        m = _VIA_SLOW.match(value)
        if m is None:
            return None
        transport, tail = m.group(1), m.group(2)
    if not transport or transport.translate(None, TOKEN_CHARS):
        return None
    semi = tail.find(b";")
    if semi < 0:
        sent_by = tail.strip(_WS)
        params = b""
    else:
        sent_by = tail[:semi].strip(_WS)
        params = tail[semi + 1 :]
    if not sent_by or sent_by.translate(None, _HOST_CHARS):
        return None
    if sent_by[0] == 0x5B:  # '[' IPv6 reference
        end = sent_by.find(b"]")
        if end < 0:
            return None
        host, port = sent_by[1:end], sent_by[end + 1 :]
        if port:
            if port[0] != 0x3A:
                return None
            port = port[1:]
    else:
        host, _, port = sent_by.partition(b":")
    if not host:
        return None
    if port:
        if not port.isdigit() or len(port) > 5 or not 0 < int(port) < 65536:
            return None
        via.port = int(port)
    via.transport = transport = transport.upper()
    via.host = host
    kept = [b"SIP/2.0/" + transport + b" " + sent_by]
    if semi >= 0:
        for raw in params.split(b";"):
            p = raw.strip(_WS)
            if not p:
                return None  # RFC 4475 §3.1.2.1: empty parameter
            key, _, val = p.partition(b"=")
            key = key.rstrip(_WS).lower()
            if key == b"rport":
                via.rport = True
                continue
            if key == b"received":
                continue
            if key == b"maddr":
                via.maddr = val.strip(_WS)
            kept.append(p)
    via.base = b";".join(kept)
    return via


def response_destination(
    via: TopVia, source: tuple[str, int], transport: str, *, honor_maddr: bool = False
) -> tuple[str, int]:
    """Where a response goes (RFC 3261 §18.2.2, RFC 3581 §4), as (host, port).

    Reliable transports answer on the connection the request came in on (its
    peer is ``source``). Over UDP: ``maddr`` if present and honoured (off by
    default: it lets a forged request aim answers at any host); else with
    ``rport`` the source address and port; else the source address (the
    ``received`` value) at the sent-by port, 5060 when absent.
    """
    if transport != "udp":
        return source
    if honor_maddr and via.maddr:
        return via.maddr.decode("ascii", "replace"), via.port or 5060
    if via.rport:
        return source
    port = via.port or 5060
    if port == source[1]:
        return source
    return source[0], port


class Request:
    """A parsed SIP request: the fields a stateless dip reads, raw bytes otherwise.

    Falsy when ``error`` is set; ``status`` is then the code to answer with
    (400, 416 or 505). ``via`` is None when there is no usable top Via, and
    such a message cannot be answered at all (RFC 3261 §18.2.2).
    """

    method: bytes = b""
    uri: bytes = b""
    vias: list[bytes]  # Via header values in order, as received (unfolded, stripped)
    via: TopVia | None = None
    headers: list[bytes | None]  # raw values by slot (FROM, TO, CALL_ID, CSEQ, PAI, ...)
    from_addr: NameAddr | None = None
    to_addr: NameAddr | None = None
    max_forwards: int = -1  # -1: absent (tolerated)
    body: bytes = b""
    is_response: bool = False
    error: bytes = b""
    status: int = 400

    def __bool__(self) -> bool:
        return not self.error

    def header(self, slot: int) -> bytes | None:
        """Raw value of a header slot (FROM, TO, CALL_ID, CSEQ, PAI, ...), None when absent."""
        return self.headers[slot]

    def fail(self, error: bytes, status: int = 400) -> None:
        """Record the first error found; later ones do not overwrite it."""
        if not self.error:
            self.error = error
            self.status = status


# Request-URI characters that need a second look: controls, space, '"', '<', '>', '?', non-ASCII.
_URI_PLAIN = bytes(c for c in range(33, 127) if c not in b'"<>?')
_METHODS = frozenset((b"INVITE", b"ACK", b"CANCEL", b"OPTIONS", b"BYE", b"REGISTER"))
_FOLDED = -3


def _lenient_split(data: bytes) -> tuple[bytes, bytes] | None:
    """Header block and body of a message without CRLFCRLF: bare-LF line ends, or no blank line."""
    end = data.find(b"\n\n")
    if end >= 0:
        head, body = data[:end], data[end + 2 :]
    else:
        head, body = data.rstrip(b"\r\n"), b""
        if not head or head == data:
            return None
    return head.replace(b"\r\n", b"\n").replace(b"\n", CRLF), body


def parse_request(data: bytes) -> Request:
    """Parse one SIP message (a datagram, or one frame of a stream).

    Reads the start line, Via, From, To, Call-ID, CSeq, Max-Forwards,
    Content-Length, Date and the identity headers; validates what RFC 3261 and
    RFC 4475 require of them; skips everything else.
    """
    if _scan is not None:
        scanned = _scan(data)
        if scanned is not None:
            return _request_from_scan(scanned)
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return _parse(data[:end], data[end + 4 :], False)
    split = _lenient_split(data)
    if split is None:
        req = Request()
        req.headers = [None] * _NSLOTS
        req.vias = []
        req.fail(E_NO_HEADERS)
        return req
    return _parse(split[0], split[1], False)


def is_common_shape(data: bytes) -> bool:
    """True if the C fast path reads ``data`` as a valid request, building nothing:
    ``parse_request`` would return a valid Request with a top Via. False when unsure
    (other shapes, or no C extension): parse it."""
    return _common_shape is not None and _common_shape(data) is not None


def _request_from_scan(scanned: Scanned) -> Request:
    """The Request ``_parse`` would build, from the C scanner's fields (a valid message)."""
    method, uri, vias, top, headers, from_parts, to_parts, max_forwards, body = scanned
    req = Request()
    req.method = method
    req.uri = uri
    req.vias = vias
    req.headers = headers
    via = req.via = TopVia()
    via.raw = via.base = vias[0]
    via.transport, via.host, via.port = top
    req.from_addr = NameAddr(*from_parts)
    req.to_addr = NameAddr(*to_parts)
    req.max_forwards = max_forwards
    req.body = body
    return req


def _parse(head: bytes, body: bytes, unfolded: bool) -> Request:
    req = Request()
    values: list[bytes | None] = [None] * _NSLOTS
    vias: list[bytes] = []
    req.headers = values
    req.vias = vias
    lines = head.split(CRLF)
    crlfs = len(lines) - 1
    if head.count(b"\n") != crlfs or head.count(b"\r") != crlfs:
        # A bare CR or LF inside a value would be echoed into the response, where a
        # lenient reader takes it for a line end: response header injection.
        req.fail(E_BARE_LINE_END)
        return req
    start = lines.pop(0)
    if start[:4] == b"SIP/":
        req.is_response = True
        req.fail(E_RESPONSE)
        return req

    get = _NAMES.get
    for line in lines:
        name, colon, text = line.partition(b":")
        slot = get(name)
        if slot is None:
            if line[:1] in _WS and line:
                if unfolded:  # cannot happen: unfolding removed every continuation
                    req.fail(E_HEADER_LINE)
                    continue
                return _parse(_FOLD.sub(b" ", head), body, True)  # RFC 3261 §7.3.1
            if not colon or not name:
                req.fail(E_HEADER_LINE)
                continue
            slot = get(name.rstrip(_WS).lower(), _SKIP)
        if slot < 0:
            if slot == _VIA:
                vias.append(text.strip())
            continue
        text = text.strip()
        old = values[slot]
        if old is None:
            values[slot] = text
        elif slot < _FIRST_REPEATABLE:
            req.fail(_E_DUPLICATE[slot])
        elif slot in {PRIVACY, REQUIRE}:
            values[slot] = old + b"," + text

    if vias:
        via = req.via = parse_via(vias[0])
        if via is None:
            req.fail(E_VIA)
    else:
        req.fail(E_VIA)

    # Start line: Method SP Request-URI SP SIP-Version (RFC 3261 §7.1), single spaces.
    parts = start.split(b" ")
    if len(parts) == 3:
        method, uri, version = parts
        req.method = method
        req.uri = uri
        if version != SIP_VERSION and version.upper() != SIP_VERSION:
            if version[:4].upper() == b"SIP/" and version[4:5].isdigit():
                req.fail(E_VERSION, 505)
            else:
                req.fail(E_START)
        if method not in _METHODS and (not method or method.translate(None, TOKEN_CHARS)):
            req.fail(E_METHOD)
        if uri[:4] != b"sip:" or not uri[4:] or uri.translate(None, _URI_PLAIN):
            _check_request_uri(req, uri)
    else:
        req.fail(E_START)
        if is_token(parts[0]):
            req.method = parts[0]

    value: bytes | None = values[FROM]
    if value is None:
        req.fail(_E_MISSING[FROM])
    else:
        req.from_addr = addr = parse_name_addr(value)
        if addr is None:
            req.fail(_E_BAD_ADDRESS[FROM])
    value = values[TO]
    if value is None:
        req.fail(_E_MISSING[TO])
    else:
        req.to_addr = addr = parse_name_addr(value)
        if addr is None:
            req.fail(_E_BAD_ADDRESS[TO])
    if values[CALL_ID] is None:
        req.fail(_E_MISSING[CALL_ID])

    value = values[CSEQ]
    if value is None:
        req.fail(_E_MISSING[CSEQ])
    else:
        cseq = value.split()
        if len(cseq) != 2 or not cseq[0].isdigit() or len(cseq[0]) > 10 or int(cseq[0]) >= MAX_CSEQ:
            req.fail(E_CSEQ)
        elif cseq[1] != req.method and req.method:
            req.fail(E_CSEQ_METHOD)

    value = values[MAX_FORWARDS]
    if value is not None:
        if value.isdigit() and len(value) <= 10 and int(value) <= MAX_FORWARDS_LIMIT:
            req.max_forwards = int(value)
        else:
            req.fail(E_MAX_FORWARDS)

    value = values[CONTENT_LENGTH]
    if value is not None:
        if not value.isdigit() or len(value) > 10:
            req.fail(E_CONTENT_LENGTH)
        else:
            length = int(value)
            if length != len(body):
                if length > len(body):
                    req.fail(E_SHORT_BODY)  # RFC 3261 §18.3, RFC 4475 §3.1.2.2
                else:
                    body = body[:length]  # the rest of a datagram is discarded (§18.3)
    req.body = body

    value = values[DATE]
    if value is not None and not value.endswith(b" GMT"):
        req.fail(E_DATE)  # RFC 3261 §20.17: rfc1123-date in GMT only
    value = values[CONTACT]
    if value is not None and value[:1] != b"<" and b"<" not in value and b"?" in value:
        req.fail(E_CONTACT)  # RFC 3261 §20.10: such a URI needs name-addr form
    return req


def _check_request_uri(req: Request, uri: bytes) -> None:
    scheme, colon, rest = uri.partition(b":")
    if (
        not colon
        or not scheme
        or not scheme[:1].isalpha()
        or scheme.translate(None, _SCHEME_CHARS)
        or not rest
        or rest.translate(None, _URI_PLAIN + b"?")
    ):
        req.fail(E_RURI)  # e.g. RFC 4475 §3.1.2.7: <> around the Request-URI
        return
    low = scheme.lower()
    if low in {b"sip", b"sips"}:
        at = rest.find(b"@")
        if b"?" in rest[at + 1 :]:
            req.fail(E_RURI)  # RFC 3261 §19.1.5, RFC 4475 §3.1.2.11: no headers here
    elif low != b"tel":
        req.fail(E_SCHEME, 416)


def stream_content_length(head: bytes) -> int:
    """Content-Length of a stream message's header block; -1 when invalid or repeated.

    RFC 3261 §18.3: mandatory on streams; absent is read as 0. Duplicates are
    refused: two lengths make two framings, the classic smuggling opening.
    """
    if _content_length is not None:
        length = _content_length(head)
        if length != -2:  # -2: a folded line, unfolded below
            return length
    return _stream_content_length(head)


def _stream_content_length(head: bytes) -> int:
    if b"\r\n " in head or b"\r\n\t" in head:
        head = _FOLD.sub(b" ", head)
    found = -2
    for line in head.lower().split(CRLF)[1:]:
        if line[:1] != b"l" and line[:1] != b"c":
            continue
        name, colon, value = line.partition(b":")
        if not colon or name.rstrip(_WS) not in {b"l", b"content-length"}:
            continue
        value = value.strip(_WS)
        if found != -2 or not value.isdigit() or len(value) > 10:
            return -1
        found = int(value)
    return 0 if found == -2 else found


PING = b""  # a StreamFramer frame: an RFC 5626 §4.4.1 CRLF keep-alive ping, answer CRLF


class StreamFramer:
    """Cut a TCP/TLS byte stream into SIP messages by Content-Length (RFC 3261 §18.3).

    Memory is bounded by ``max_header + max_body``. Leading CRLFs between
    messages are keep-alives: a double CRLF yields ``PING`` (RFC 5626 §4.4.1).
    After a framing error ``error`` is set, ``rejected`` holds the partial
    header block (for a 400), and further input is ignored.
    """

    __slots__ = ("_buf", "error", "max_body", "max_header", "rejected")

    def __init__(self, max_header: int = 16384, max_body: int = 16384) -> None:
        self.max_header = max_header
        self.max_body = max_body
        self._buf = b""
        self.error = b""
        self.rejected = b""

    def buffered(self) -> int:
        """Bytes held waiting for the rest of a message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete messages (and PINGs) now available."""
        if self.error:
            return []
        buf = self._buf + data if self._buf else data
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while pos < n:
            if buf[pos] == 0x0D or buf[pos] == 0x0A:  # keep-alive CRLFs between messages
                if buf.startswith(b"\r\n\r\n", pos):
                    out.append(PING)
                    pos += 4
                    continue
                if n - pos < 4 and b"\r\n\r\n".startswith(buf[pos:]):
                    break  # maybe the start of a ping: wait
                pos += 2 if buf.startswith(CRLF, pos) else 1
                continue
            end = buf.find(b"\r\n\r\n", pos)
            if end < 0 or end - pos > self.max_header:
                if end >= 0 or n - pos > self.max_header:
                    self._fail(b"header section too large", buf[pos : pos + self.max_header])
                    return out
                break
            length = stream_content_length(buf[pos:end])
            if length < 0 or length > self.max_body:
                reason = b"bad Content-Length header" if length < 0 else b"body too large"
                self._fail(reason, buf[pos:end])
                return out
            total = end + 4 + length
            if total > n:
                break
            out.append(buf[pos:total] if pos or total != n else buf)
            pos = total
        self._buf = buf[pos:] if pos < n else b""
        return out

    def _fail(self, reason: bytes, partial: bytes) -> None:
        self.error = reason
        cut = partial.rfind(CRLF)
        self.rejected = (partial[:cut] if cut >= 0 else partial) + b"\r\n\r\n"
        self._buf = b""


def render_response(
    status_line: bytes,
    top_via: bytes,
    req: Request,
    *,
    to_tag: bytes,
    extra: bytes,
    tail: bytes,
) -> bytes:
    """Serialize a stateless response (RFC 3261 §8.2.6.2): Vias in order, From, To
    (with ``to_tag`` appended when given), Call-ID and CSeq copied, then ``extra``
    header lines and ``tail`` (Server, Content-Length: 0, blank line)."""
    values = req.headers
    parts = [status_line, b"Via: ", top_via, CRLF]
    vias = req.vias
    for i in range(1, len(vias)):
        parts += (b"Via: ", vias[i], CRLF)
    value = values[FROM]
    if value is not None:
        parts += (b"From: ", value, CRLF)
    value = values[TO]
    if value is not None:
        parts += (b"To: ", value, to_tag, CRLF)
    value = values[CALL_ID]
    if value is not None:
        parts += (b"Call-ID: ", value, CRLF)
    value = values[CSEQ]
    if value is not None:
        parts += (b"CSeq: ", value, CRLF)
    parts += (extra, tail)
    return b"".join(parts)
