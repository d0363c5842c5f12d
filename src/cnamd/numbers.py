"""Phone numbers and prefix keys: every form a client sends, reduced to one E.164 key.

DESIGN.md "Names live in scopes": ``+`` E.164 stays, a national number is read
with the tenant's region, ``tel:``/``sip:`` forms and visual separators are
accepted, anything else is an error naming the input. Pure: no I/O, no state.

Numbers must be *possible* (phonenumbers' length check says IS_POSSIBLE for
the country; a local-only length is refused), not *valid* (the digits fall in
a range the metadata knows as allocated). Allocation data lags the numbering
plans, so a CNAM store that required validity would refuse a carrier's new
range on the day it goes live and could find stored keys turning invalid
after a library upgrade; the length check still catches typos and unassigned
country codes.

Digits without ``+`` -- the one rule every HTTP family follows
---------------------------------------------------------------
A bare digit string that does not start with ``0`` (``492216698755``) has two
readings: a national number of the tenant's region (``+49 4922 16698755``)
and an E.164 number whose ``+`` was left out (``+49 221 6698755``). A reading
counts when phonenumbers calls it a *valid* number (possible is not enough
here: in Germany nearly every digit string is a possible national number).

* Writes (seed 000's ``POST``/``DELETE .../cnam/{phone}``, ``cnam-ranges``,
  ``cnam-import`` and ``cnamd import``: written_number()) store the national
  reading only when it counts and no *other* number is the E.164 reading;
  anything else is InvalidNumber naming the field and both readings, so one
  reading is never silently written where another would be read.
* Lookups (``/v1/lookup``, OpenCNAM's ``/v3/phone``, the phones' searches:
  number_readings()) ask every reading that counts and answer the one that
  holds a name; two readings holding different names is InvalidNumber.
* Everything else is one number and read as before: ``+`` (and ``00``,
  ``tel:``/``sip:``) is E.164, a leading ``0`` is the national trunk prefix.

Not covered, on purpose: wazo-confd's phone numbers are stored as given and
only ``+`` numbers are published (store/phone_numbers.py); Flowroute's ids
and Atmosphere's ``countryCode``/``number`` pairs are E.164 by construction;
the SIP dip reads bare digits as national (hot path, what SBCs send).
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, PhoneMetadata, PhoneNumber, ValidationResult

from cnamd.errors import InvalidNumber, InvalidRequest
from cnamd.validity import is_valid

__all__ = [
    "normalize_number",
    "normalize_prefix",
    "number_readings",
    "parse_number",
    "range_to_prefixes",
    "written_number",
]

# Longest input read at all: a SIP URI with a long host still fits; a megabyte
# of junk is refused before any string work (phonenumbers' regexes are slow on it).
_MAX_INPUT = 256
# E.164 §6: at most 15 digits after the "+".
_MAX_E164_DIGITS = 15
# Longest digit string handed to phonenumbers: its longest national significant
# number; an international one may still lose a trunk prefix ("+49 (0)...").
_MAX_PARSED_DIGITS = 17
# Visual separators (RFC 3966 §5.1.1 plus space and "/"), deleted before reading.
_SEPARATORS = str.maketrans("", "", " -.()/")
_COUNTRY_CODES = phonenumbers.COUNTRY_CODE_TO_REGION_CODE
# phonenumbers compiles each metadata pattern through re.compile(), whose cache is a
# dict lookup keyed by (type, pattern, flags) and, at 512 entries, shared with every
# other module; this keeps its own compiled patterns (a parse asks for five or more).
phonenumbers.enable_pattern_cache()


class _Problem(enum.Enum):
    """Why an input is not a number; the value completes "<input> ...".

    The hot path returns these instead of raising; only normalize_number()
    turns one into text, so a rejected SIP dip formats nothing.
    """

    EMPTY = "is empty"
    TOO_LONG_INPUT = "is too long to be a phone number"
    NOT_A_NUMBER = (
        "is not a phone number: only digits, a leading '+' and the separators"
        " ' -.()/' are allowed (or a tel:/sip: URI holding one)"
    )
    NO_USER_PART = "is a SIP URI without a user part"
    PRIVATE_CONTEXT = "is a local number whose phone-context is not a '+' number"
    NEEDS_REGION = (
        "is a national number and no default region is set; write it as '+' and the country code"
    )
    UNKNOWN_REGION = "is a national number and the default region is not a known region code"
    UNKNOWN_COUNTRY = "does not start with an assigned country code"
    TOO_SHORT = "is too short for its country"
    TOO_LONG = "is too long for its country"
    WRONG_LENGTH = "has a length no number of its country has"
    TOO_MANY_DIGITS = "has more than the 15 digits E.164 allows"
    LOCAL_ONLY = "is a local number; add its area code"
    NOT_A_PREFIX = "is not a prefix: '+' and 1-15 digits"
    ZERO_COUNTRY = "starts with 0 after the '+'; no country code does"


_PARSE_ERRORS = {
    NumberParseException.INVALID_COUNTRY_CODE: _Problem.UNKNOWN_COUNTRY,
    NumberParseException.NOT_A_NUMBER: _Problem.TOO_SHORT,  # only digits reach parse()
    NumberParseException.TOO_SHORT_AFTER_IDD: _Problem.TOO_SHORT,
    NumberParseException.TOO_SHORT_NSN: _Problem.TOO_SHORT,
    NumberParseException.TOO_LONG: _Problem.TOO_LONG,
}

_LENGTH_RESULTS = {
    ValidationResult.INVALID_COUNTRY_CODE: _Problem.UNKNOWN_COUNTRY,
    ValidationResult.TOO_SHORT: _Problem.TOO_SHORT,
    ValidationResult.TOO_LONG: _Problem.TOO_LONG,
    ValidationResult.INVALID_LENGTH: _Problem.WRONG_LENGTH,
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: _Problem.LOCAL_ONLY,
}


def normalize_number(raw: str, region: str | None = None, *, field: str = "phone") -> str:
    """The E.164 key for ``raw``, read with default ``region``; InvalidNumber names the input.

    For the API and storage. ``00`` is read as the international prefix in
    every region; other international prefixes (``011`` in NANP) are read
    when ``region`` is given.
    """
    result = _read(raw, region)
    if isinstance(result, str):
        return result
    raise _invalid(raw, region, result, field)


def _invalid(raw: str, region: str | None, problem: _Problem, field: str) -> InvalidNumber:
    """normalize_number()'s error for ``raw`` read as ``problem``."""
    reason = f"{_shown(raw)} {problem.value}"
    if problem is _Problem.UNKNOWN_REGION:
        reason += f" ({region!r})"
    return InvalidNumber(reason, field=field)


def parse_number(raw: str, region: str | None = None) -> str | None:
    """The E.164 key for ``raw``, or None: normalize_number() for the hot path, never raising.

    Same rules, same results (one implementation, _read()). A canonical ``+``
    number, what SBCs send in P-Asserted-Identity, skips phonenumbers' string
    parser but not its possibility check: its country and length are judged
    directly (memoized), which gives the parser's answer (a property test holds
    them equal) in 2 us instead of 20 us. Digits without ``+`` are a national
    number, so without a region they are invalid; a SIP front whose peers send
    E.164 without the ``+`` must add it.

    timeit (CPython 3.11, phonenumbers 9.0), per call: ``+492216698712`` 2.1 us,
    ``sip:+492216698712@sbc;user=phone`` 6.2 us, ``0221 6698712`` in DE 28 us,
    ``(212) 555-0001`` in US 23 us, ``garbage`` 1.5 us. Reproduce with
    ``python -m timeit -s "from cnamd.numbers import parse_number"
    "parse_number('+492216698712')"``.
    """
    result = _read(raw, region)
    return result if isinstance(result, str) else None


def number_readings(raw: str, region: str | None, *, field: str = "number") -> tuple[str, ...]:
    """Every E.164 number a lookup of ``raw`` asks (the rule above): one, or for bare
    digits each valid reading, national first; InvalidNumber when none counts."""
    digits = _bare_digits(raw)
    if digits is None:
        return (normalize_number(raw, region, field=field),)
    shaped = _code_shaped(digits, region)
    if shaped is not None:
        if shaped:
            return ("+" + digits,)
        raise _neither(raw, region, field, "+" + digits)
    read, national, international = _bare_readings(digits, region)
    found = tuple(dict.fromkeys(n for n in (national, international) if n is not None))
    if not found:
        raise _neither(raw, region, field, read)
    return found


def written_number(raw: str, region: str | None, *, field: str = "phone") -> str:
    """The one E.164 number a write of ``raw`` stores (the rule above); InvalidNumber
    naming ``field`` when bare digits are not exactly one valid national number."""
    digits = _bare_digits(raw)
    if digits is None:
        return normalize_number(raw, region, field=field)
    read, national, international = _bare_readings(digits, region)
    if national is not None and international in (None, national):
        return national
    if national is not None and international is not None:
        raise InvalidNumber(
            f"{_shown(raw)} is ambiguous: the national number {national} in {region} or"
            f" {international} with its '+' left out; write it with '+' and the country"
            " code (E.164), or with the national prefix",
            field=field,
        )
    if international is not None:
        raise InvalidNumber(
            f"{_shown(raw)} is not a valid national number in {region or 'any region'};"
            f" if {international} is meant, write it with its '+' (E.164)",
            field=field,
        )
    raise _neither(raw, region, field, read)


def _bare_digits(raw: str) -> str | None:
    """The digits of ``raw`` when it is bare digits not starting with 0 (separators
    allowed), the one form with two readings; else None."""
    if raw.isdigit() and raw.isascii():  # a PBX's digits: nothing to strip or drop
        return raw if raw[0] != "0" and len(raw) <= _MAX_INPUT else None
    if len(raw) > _MAX_INPUT:
        return None
    digits = raw.strip().translate(_SEPARATORS)
    if not _is_digits(digits) or digits[0] == "0":
        return None
    return digits


def _bare_readings(
    digits: str, region: str | None
) -> tuple[str | _Problem, str | None, str | None]:
    """(what reading the digits as national in ``region`` gives -- what normalize_number()
    reads bare digits as --, that national reading, the E.164 reading), each of the
    last two None unless valid."""
    read = _read_digits(False, digits, region)
    international = _read_digits(True, digits, None)
    valid = _valid(read)
    if international == read:  # NANP's 1NXXNXXXXXX in US: one number, validated once
        return read, valid, valid
    return read, valid, _valid(international)


@dataclass(frozen=True, slots=True)
class _CodeShape:
    """A region's bare digits that are its country code and a national number, in the
    one shape where both readings are that ``+``-number (_code_shaped)."""

    country: int
    size: int  # digits of the country code
    lengths: frozenset[int]  # lengths of the digits (code included) the shape takes
    shape: re.Pattern[str]


def _code_shaped(digits: str, region: str | None) -> bool | None:
    """For bare ``digits`` of the PBX shape -- ``region``'s country code then a national
    number (``12125550123`` in US) -- whether ``+digits`` is valid: it is then both
    readings, and the only one. None when the digits are not of that shape (the readings
    steps below decide).

    Why: those steps read the digits twice and split the reading again to judge it,
    eight regular expressions and as many calls, the most of a keyed PBX lookup's own
    work (bench/README.md "HTTP lookups"); here one expression, made per region from
    the conditions under which each step gives ``+digits`` unchanged, says the shape,
    and validity.py's decision judges it. bench/bench_numbers.py: 7.0 -> 2.1 us per
    bare US number, refusals included.
    tests/test_numbers_valid.py holds it to the steps in every region.
    """
    if region is None:
        return None
    try:
        rule = _CODE_SHAPES[region]
    except KeyError:
        if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            return None  # not remembered: the table stays bounded by the regions
        rule = _CODE_SHAPES[region] = _code_shape(region)
    if rule is None or len(digits) not in rule.lengths or rule.shape.match(digits) is None:
        return None
    return is_valid(rule.country, digits[rule.size :])


#: a known region as given -> its shape, or None: no digits take it (made on first use)
_CODE_SHAPES: dict[str, _CodeShape | None] = {}


def _code_shape(region: str) -> _CodeShape | None:
    """The shape of ``region`` as _read_national_fast(), _read_e164_fast() and
    _e164_split() decide it, or None where one of them would not give ``+digits``."""
    rule = _national_rule(region.upper())
    main = _national_rule(rule.main_region) if rule is not None else None
    if rule is None or main is None or main.country != rule.country:
        return None
    code, country = rule.code, rule.country
    # the E.164 reading finds this country code first (country codes are prefix-free)
    if country not in _COUNTRY_CODES or any(
        int(code[:size]) in _COUNTRY_CODES for size in range(1, len(code))
    ):
        return None
    literal = _trunk_prefix(country)  # the E.164 reading's trunk test: a literal prefix
    if literal is None or (literal and not literal.isdigit()):
        return None
    embedded = [p.pattern for p in (rule.idd, rule.trunk, main.trunk, rule.general) if p]
    if any(re.search(r"\\[1-9]|\^|\\A", pattern) for pattern in embedded):
        return None  # a back reference or an anchor would mean something else embedded
    general = rule.general.pattern
    not_after_code = "".join(f"(?!{t.pattern})" for t in (rule.trunk, main.trunk) if t)
    shape = (
        (f"(?!{rule.idd.pattern})" if rule.idd is not None else "")
        + f"(?!(?:{general})\\Z)"  # not a national number as it stands ...
        + re.escape(code)
        + not_after_code
        + (f"(?!{re.escape(literal)})" if literal else "")
        + "(?!0)"
        + f"(?=(?:{general})\\Z)"  # ... but one after the country code
    )
    lengths = frozenset(
        len(code) + national
        for national in range(2, _MAX_E164_DIGITS - len(code) + 1)
        if _length_verdict(country, national) is None
    )
    return _CodeShape(country, len(code), lengths, re.compile(shape)) if lengths else None


def _valid(reading: str | _Problem | None) -> str | None:
    """``reading`` when phonenumbers calls it a valid number, else None (its verdict,
    decided by validity.py's compiled form of it: ~5 us instead of 20-90)."""
    if not isinstance(reading, str):
        return None
    split = _e164_split(reading[1:])
    if split is None:
        number = phonenumbers.parse(reading)
        split = (number.country_code or 0, phonenumbers.national_significant_number(number))
    return reading if is_valid(*split) else None


def _e164_split(digits: str) -> tuple[int, str] | None:
    """The country code and national significant number phonenumbers.parse() finds in
    ``+digits`` (an E.164 reading), without its parser; None when only the parser can say.

    The same cases as _read_e164_fast() go to the parser (a national part starting with
    0 or with the country's national prefix, an unknown country); otherwise the parser
    gives back the country code and the digits after it unchanged, and validity depends
    on nothing else. Saves the parse (~10 of ~55 us per bare US number, bench/bench_numbers.py);
    tests/test_numbers_valid.py holds it to parse() + is_valid_number().
    """
    for size in (1, 2, 3):
        country = int(digits[:size] or "0")
        if country in _COUNTRY_CODES:
            break
    else:
        return None
    national = digits[size:]
    if len(national) < 2 or national[0] == "0":
        return None
    trunk = _trunk_prefix(country)
    if trunk is None or (trunk and (not trunk.isdigit() or national.startswith(trunk))):
        return None
    return country, national


@functools.cache
def _trunk_prefix(country: int) -> str | None:
    """The national prefix for parsing of ``country``'s metadata ("" when it has none),
    or None without metadata; cached per country code."""
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(
        country, phonenumbers.region_code_for_country_code(country)
    )
    if metadata is None:
        return None
    return metadata.national_prefix_for_parsing or ""


def _neither(raw: str, region: str | None, field: str, read: str | _Problem) -> InvalidNumber:
    """Why no reading of ``raw`` counts: the national reading's own problem when it has
    one (``is too short for its country``; ``read`` is what normalize_number() would
    have read, already known), else that neither reading is valid."""
    if isinstance(read, _Problem):
        return _invalid(raw, region, read, field)
    return InvalidNumber(
        f"{_shown(raw)} is neither a valid national number in {region} nor a valid E.164"
        " number with its '+' left out",
        field=field,
    )


def normalize_prefix(raw: str, *, field: str = "prefix") -> str:
    """The prefix key for ``raw``: ``+`` and 1-15 digits, separators dropped.

    A prefix stands for a block of numbers (``+4922166987``), so no length
    check applies beyond E.164's 15 digits.
    """
    result = _read_key(raw)
    if isinstance(result, str):
        return result
    raise InvalidNumber(f"{_shown(raw)} {result.value}", field=field)


def range_to_prefixes(start: str, end: str, *, max_span: int) -> list[str]:
    """The fewest prefix keys covering exactly the numbers ``start``..``end`` inclusive.

    Endpoints are keys of equal length (normalize them with normalize_number()
    first; separators are tolerated here). Walking up from ``start``, each
    step takes the largest block of 10**k numbers that is aligned at the
    current number and ends at or before ``end``, as CIDR aggregation does in
    base 2; this greedy walk is minimal. A range spans at most ``max_span``
    numbers, so one request cannot claim a whole country.
    """
    first = normalize_prefix(start, field="start")
    last = normalize_prefix(end, field="end")
    length = len(first) - 1
    if len(last) - 1 != length:
        raise InvalidRequest(
            f"{_shown(end)} has {len(last) - 1} digits but start {_shown(start)} has {length};"
            " a range's ends must have the same length",
            field="end",
        )
    low, high = int(first[1:]), int(last[1:])
    if high < low:
        raise InvalidRequest(f"{_shown(end)} is before start {_shown(start)}", field="end")
    span = high - low + 1
    if span > max_span:
        raise InvalidRequest(
            f"range {_shown(start)}..{_shown(end)} spans {span} numbers; the limit is {max_span}",
            field="end",
        )
    prefixes: list[str] = []
    largest = 10 ** (length - 1)  # a prefix keeps at least one digit
    current = low
    while current <= high:
        size, dropped = 1, 0
        while size < largest and current % (size * 10) == 0 and current + size * 10 - 1 <= high:
            size, dropped = size * 10, dropped + 1
        prefixes.append("+" + str(current).zfill(length)[: length - dropped])
        current += size
    return prefixes


def _read(raw: str, region: str | None) -> str | _Problem:
    """The one implementation of the number rules behind normalize_number() and parse_number()."""
    if len(raw) <= _MAX_E164_DIGITS + 1 and raw[:1] == "+" and _is_digits(raw[1:]):
        return _read_digits(True, raw[1:], region)  # already canonical: skip unwrapping
    if len(raw) > _MAX_INPUT:
        return _Problem.TOO_LONG_INPUT
    number = _unwrap(raw)
    if isinstance(number, _Problem):
        return number
    number = number.translate(_SEPARATORS)
    international = number[:1] == "+"
    digits = number[1:] if international else number
    if not digits:
        return _Problem.EMPTY if not raw.strip() else _Problem.NOT_A_NUMBER
    if not _is_digits(digits):
        return _Problem.NOT_A_NUMBER
    if not international and digits[:2] == "00":
        international, digits = True, digits[2:]
        if not digits:  # "00" alone (or "0..0"): an international prefix and nothing after
            return _Problem.NOT_A_NUMBER
    return _read_digits(international, digits, region)


def _unwrap(raw: str) -> str | _Problem:
    """The telephone number inside ``raw``: ``<...>``, ``tel:`` and ``sip:``/``sips:`` removed.

    RFC 3966 §5.1.5: a local number's ``phone-context`` of ``+`` digits is its
    leading digits; any other context is a private numbering plan.
    """
    text = raw.strip()
    if text[:1] == "<" and text[-1:] == ">":
        text = text[1:-1].strip()
    scheme, colon, rest = text.partition(":")
    if colon:
        scheme = scheme.lower()
        if scheme in ("sip", "sips"):
            userinfo, at, _host = rest.partition("@")
            if not at:
                return _Problem.NO_USER_PART
            text = userinfo.partition(":")[0]  # RFC 3261 §19.1.1: user[:password]
        elif scheme == "tel":
            text = rest
        else:
            return _Problem.NOT_A_NUMBER
    number, _, params = text.partition(";")
    if params and number[:1] != "+":
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "phone-context":
                if value[:1] != "+":
                    return _Problem.PRIVATE_CONTEXT
                number = value + number
    return number


def _read_digits(
    international: bool, digits: str, region: str | None, *, national_fast: bool = True
) -> str | _Problem:
    """Read ASCII ``digits``: with a country code if ``international``, else in ``region``
    (``national_fast`` False: by phonenumbers' parser alone, as tests compare)."""
    if international:
        if len(digits) > _MAX_PARSED_DIGITS:
            return _Problem.TOO_MANY_DIGITS
        fast = _read_e164_fast(digits) if len(digits) <= _MAX_E164_DIGITS else None
        if fast is not None:
            return fast
        # Longer than E.164 may still shrink: "+7 8 ..." drops the trunk prefix 8.
        return _read_with_phonenumbers("+" + digits, None)
    if not region:
        return _Problem.NEEDS_REGION
    region = region.upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        return _Problem.UNKNOWN_REGION
    if len(digits) > _MAX_PARSED_DIGITS:
        return _Problem.TOO_LONG
    fast = _read_national_fast(digits, region) if national_fast else None
    return fast if fast is not None else _read_with_phonenumbers(digits, region)


def _read_e164_fast(digits: str) -> str | _Problem | None:
    """Judge ``+digits`` without phonenumbers' parser, or None when only the parser can.

    The parser would rewrite a national number starting with a national prefix
    (``+49 0221...`` -> ``+49221...``) and keeps Italian leading zeros; those
    cases go to it. Otherwise its result is the input itself, so building the
    PhoneNumber directly and checking its length gives the same answer faster.
    """
    if digits[0] == "0":
        return _Problem.UNKNOWN_COUNTRY
    for size in (1, 2, 3):
        country = int(digits[:size])
        if country in _COUNTRY_CODES:
            break
    else:
        return _Problem.UNKNOWN_COUNTRY
    national = digits[size:]
    if len(national) < 2 or national[0] == "0":
        return None
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(
        country, phonenumbers.region_code_for_country_code(country)
    )
    if metadata is None:
        return None
    trunk = metadata.national_prefix_for_parsing
    if trunk and (not trunk.isdigit() or national.startswith(trunk)):
        return None
    problem = _length_verdict(country, len(national))
    return "+" + digits if problem is None else problem


def _read_national_fast(digits: str, region: str) -> str | _Problem | None:
    """What _read_with_phonenumbers(digits, region) gives, for ASCII digits in the
    two shapes a PBX sends -- the national significant number, or the country code
    and it (``2125550123``, ``12125550123`` in US) -- or None: phonenumbers reads it.

    Why by hand: parse() runs any text through extraction, normalization, extension
    and international-prefix steps that such digits pass unchanged, about 20 us of a
    bare-digit lookup's ~35 (bench/README.md, "HTTP lookups"). What is left of its
    steps (``_maybe_extract_country_code``, the national prefix, the length test) is
    followed here on the region's metadata, and any input where one of them would
    rewrite the digits beyond dropping the country code (an international or
    national prefix at the start, a leading zero) goes to parse().
    tests/test_numbers_valid.py holds this to parse() in every region.
    """
    rule = _national_rule(region)
    if rule is None or len(digits) < 3 or (rule.idd is not None and rule.idd.match(digits)):
        return None
    national = digits
    if digits.startswith(rule.code):
        rest = digits[len(rule.code) :]
        if rule.trunk is not None and rule.trunk.match(rest):
            return None
        general = rule.general.fullmatch
        if (not general(digits) and general(rest)) or rule.too_long(len(digits)):
            main = _national_rule(rule.main_region)  # parse() goes on in the country's main region
            if main is None:
                return None
            national, rule = rest, main
    if rule.trunk is not None and rule.trunk.match(national):
        return None
    if len(national) < 2 or national[0] == "0":
        return None
    e164 = f"+{rule.code}{national}"
    if len(e164) > _MAX_E164_DIGITS + 1:
        return _Problem.TOO_MANY_DIGITS
    problem = _length_verdict(rule.country, len(national))  # no leading zero: length decides
    return e164 if problem is None else problem


@dataclass(frozen=True, slots=True)
class _NationalRule:
    """A region's metadata as _read_national_fast() asks it."""

    country: int
    code: str
    idd: re.Pattern[str] | None  # the international prefix, else None
    trunk: re.Pattern[str] | None  # national_prefix_for_parsing, else None
    general: re.Pattern[str]
    longest: int
    local_only: tuple[int, ...]
    main_region: str

    def too_long(self, length: int) -> bool:
        """_test_number_length() says TOO_LONG (general description)."""
        return length not in self.local_only and length > self.longest


@functools.cache
def _national_rule(region: str) -> _NationalRule | None:
    """The rule of ``region``; None where the shapes above do not apply (no metadata,
    a national prefix transform rule, no general pattern or lengths)."""
    metadata = PhoneMetadata.metadata_for_region(region, None)
    if metadata is None or metadata.national_prefix_transform_rule:
        return None
    general = metadata.general_desc
    if general is None or not general.national_number_pattern or not general.possible_length:
        return None
    country = metadata.country_code or 0
    trunk = metadata.national_prefix_for_parsing
    idd = metadata.international_prefix
    return _NationalRule(
        country=country,
        code=str(country),
        idd=re.compile(idd) if idd else None,
        trunk=re.compile(trunk) if trunk else None,
        general=re.compile(general.national_number_pattern),
        longest=max(general.possible_length),
        local_only=tuple(general.possible_length_local_only or ()),
        main_region=phonenumbers.region_code_for_country_code(country),
    )


@functools.lru_cache(maxsize=4096)
def _length_verdict(country: int, length: int) -> _Problem | None:
    """_possible() for a national number of ``length`` digits without a leading zero.

    phonenumbers judges possibility by the national number's length alone
    (its number type is not known here), so the verdict is memoized per
    country and length: 4.5 -> 1.6 us per canonical number (timeit), which a
    million-row import and every SIP dip's miss path take.
    """
    number = PhoneNumber(country_code=country, national_number=int("1" * length))
    result = _possible(number, "")
    return result if isinstance(result, _Problem) else None


def _read_with_phonenumbers(text: str, region: str | None) -> str | _Problem:
    """Parse ``text`` (``+`` and digits, or national digits) with phonenumbers."""
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        return _PARSE_ERRORS.get(exc.error_type, _Problem.NOT_A_NUMBER)
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if len(e164) > _MAX_E164_DIGITS + 1:
        return _Problem.TOO_MANY_DIGITS
    return _possible(number, e164)


def _possible(number: PhoneNumber, e164: str) -> str | _Problem:
    """``e164`` when ``number``'s length fits its country.

    A length phonenumbers calls possible "local only" (``555-0001`` in US, no
    area code) is refused: a caller ID never arrives that way, so the key
    would never match.
    """
    result = phonenumbers.is_possible_number_with_reason(number)
    if result == ValidationResult.IS_POSSIBLE:
        return e164
    return _LENGTH_RESULTS.get(result, _Problem.WRONG_LENGTH)


def _read_key(raw: str) -> str | _Problem:
    """A key: ``+`` and 1-15 ASCII digits, not starting with 0, separators dropped."""
    if len(raw) > _MAX_INPUT:
        return _Problem.TOO_LONG_INPUT
    key = raw.strip().translate(_SEPARATORS)
    if not key:
        return _Problem.EMPTY
    if key[0] != "+" or not _is_digits(key[1:]):
        return _Problem.NOT_A_PREFIX
    if len(key) > _MAX_E164_DIGITS + 1:
        return _Problem.TOO_MANY_DIGITS
    if key[1] == "0":
        return _Problem.ZERO_COUNTRY
    return key


def _is_digits(text: str) -> bool:
    """Non-empty and only ASCII 0-9 (str.isdigit alone also accepts other scripts' digits)."""
    return text.isascii() and text.isdigit()


def _shown(raw: str, limit: int = 40) -> str:
    """``raw`` quoted for a reason, cut at ``limit`` characters so a huge input stays short."""
    if len(raw) <= limit:
        return repr(raw)
    return f"{raw[:limit]!r}... ({len(raw)} characters)"
