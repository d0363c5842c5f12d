"""Number normalization, prefix keys and range splitting (cnamd.numbers)."""

from __future__ import annotations

import itertools

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnamd.errors import InvalidNumber, InvalidRequest
from cnamd.numbers import (
    normalize_number,
    normalize_prefix,
    number_readings,
    parse_number,
    range_to_prefixes,
    written_number,
)

COLOGNE = "+492216698712"


def reference(text: str) -> str | None:
    """The rule stated with phonenumbers alone: full parse, length possible, at most 15 digits."""
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if (
        phonenumbers.is_possible_number_with_reason(number)
        != phonenumbers.ValidationResult.IS_POSSIBLE
    ):
        return None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164 if len(e164) <= 16 else None


def expand(prefixes: list[str], length: int) -> set[int]:
    """Every number of ``length`` digits that one of ``prefixes`` covers."""
    covered: set[int] = set()
    for prefix in prefixes:
        free = length - (len(prefix) - 1)
        base = int(prefix[1:]) * 10**free
        covered.update(range(base, base + 10**free))
    return covered


# normalize_number: accepted forms


def test_e164_number_stays() -> None:
    assert normalize_number(COLOGNE) == COLOGNE
    assert normalize_number("+12125550001", "DE") == "+12125550001"


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("0221 6698712", "DE", COLOGNE),
        ("(212) 555-0001", "US", "+12125550001"),
        ("020 7946 0018", "GB", "+442079460018"),
    ],
)
def test_national_number_uses_tenant_region(raw: str, region: str, expected: str) -> None:
    assert normalize_number(raw, region) == expected


def test_region_is_case_insensitive() -> None:
    assert normalize_number("0221 6698712", "de") == COLOGNE


@pytest.mark.parametrize(
    "raw",
    [
        "+49 221 6698712",
        "+49-221-6698712",
        "+49.221.669.87.12",
        "+49 (221) 6698712",
        "+49/221/6698712",
        "  +49 221 6698712  ",
    ],
)
def test_visual_separators_are_ignored(raw: str) -> None:
    assert normalize_number(raw) == COLOGNE


@pytest.mark.parametrize("region", [None, "DE", "US"])
def test_double_zero_is_the_international_prefix(region: str | None) -> None:
    assert normalize_number("0049 221 6698712", region) == COLOGNE


@pytest.mark.parametrize("raw", ["00", "0..0", "0 0", "tel:00"])
@pytest.mark.parametrize("region", ["DE", None])
def test_an_international_prefix_with_nothing_after_it_is_no_number(
    raw: str, region: str | None
) -> None:
    """Found by make api-fuzz: /v1/lookup?number=0..0 raised IndexError (a 500)."""
    assert parse_number(raw, region) is None
    with pytest.raises(InvalidNumber):
        normalize_number(raw, region)


def test_region_international_prefix_is_read_with_region() -> None:
    assert normalize_number("011 49 221 6698712", "US") == COLOGNE


def test_national_trunk_prefix_after_country_code_is_dropped() -> None:
    assert normalize_number("+49 (0)221 6698712") == COLOGNE
    assert normalize_number("+4902216698712") == COLOGNE


def test_country_code_repeated_in_national_digits_is_read_by_phonenumbers() -> None:
    # Documented: digits without '+' are national; phonenumbers decides (here, DE allows 12 digits).
    assert normalize_number("492216698712", "DE") == "+49492216698712"


@pytest.mark.parametrize(
    "raw",
    [
        "tel:+49-221-6698712",
        "TEL:+49-221-6698712",
        "tel:+49-221-6698712;ext=12",
        "tel:+492216698712;isub=1;foo=bar",
    ],
)
def test_tel_uri_is_read(raw: str) -> None:
    assert normalize_number(raw) == COLOGNE


def test_tel_local_number_takes_its_global_phone_context() -> None:
    assert normalize_number("tel:6698712;phone-context=+49-221") == COLOGNE


@pytest.mark.parametrize(
    "raw",
    [
        "sip:+492216698712@sbc.example;user=phone",
        "sips:+492216698712@sbc.example",
        "SIP:+492216698712@sbc.example",
        "<sip:+492216698712@sbc.example;user=phone>",
        " <sip:+49-221-6698712@10.0.0.1:5060> ",
        "sip:+492216698712:secret@sbc.example",
        "sip:6698712;phone-context=+49221@sbc.example;user=phone",
    ],
)
def test_sip_uri_user_part_is_read(raw: str) -> None:
    assert normalize_number(raw) == COLOGNE


def test_sip_uri_national_user_part_uses_region() -> None:
    assert normalize_number("sip:02216698712@pbx.example", "DE") == COLOGNE


def test_possible_but_unallocated_number_is_accepted() -> None:
    # Area code 200 is not assigned; a CNAM store must still take numbers from new ranges.
    assert not phonenumbers.is_valid_number(phonenumbers.parse("+12005550001"))
    assert normalize_number("+12005550001") == "+12005550001"


# normalize_number: errors


@pytest.mark.parametrize(
    ("raw", "region", "words"),
    [
        ("", None, "empty"),
        ("   ", "DE", "empty"),
        ("abc", "DE", "not a phone number"),
        ("+49 221 ABCDEFG", None, "not a phone number"),
        ("1-800-FLOWERS", "US", "not a phone number"),
        ("+", None, "not a phone number"),
        ("++492216698712", None, "not a phone number"),
        ("+49 221 6698712 ext 12", None, "not a phone number"),
        ("\u0664\u0669\u0662\u0662\u0661", "DE", "not a phone number"),  # Arabic-Indic digits
        ("mailto:+492216698712", None, "not a phone number"),
        ("sip:sbc.example", None, "without a user part"),
        ("tel:6698712;phone-context=example.com", "DE", "phone-context"),
        ("02216698712", None, "no default region"),
        ("02216698712", "", "no default region"),
        ("02216698712", "XX", "not a known region"),
        ("+0492216698712", None, "country code"),
        ("+9991234567", None, "country code"),
        ("+4", None, "country code"),
        ("+49 2", None, "too short"),
        ("+1 212 555 00011", None, "too long"),
        ("+49 1234 5678 9012 34", None, "15 digits"),
        ("0" * 30, "DE", "15 digits"),
        ("1" * 20, "DE", "too long"),
        ("+7 8 00000000000000 0", None, "15 digits"),
        ("555-0001", "US", "local number"),
        ("+1 555 0001", None, "local number"),
    ],
)
def test_unreadable_number_is_rejected_naming_the_input(
    raw: str, region: str | None, words: str
) -> None:
    with pytest.raises(InvalidNumber) as caught:
        normalize_number(raw, region)
    assert caught.value.field == "phone"
    assert caught.value.status == "invalid-phone"
    assert repr(raw) in caught.value.reason
    assert words in caught.value.reason
    assert parse_number(raw, region) is None


def test_unknown_region_is_named() -> None:
    with pytest.raises(InvalidNumber, match="'XX'"):
        normalize_number("02216698712", "XX")


def test_error_names_the_given_field() -> None:
    with pytest.raises(InvalidNumber) as caught:
        normalize_number("nope", field="caller")
    assert caught.value.field == "caller"
    assert str(caught.value).startswith("caller: 'nope'")


@pytest.mark.parametrize("raw", ["9" * 100_000, "x" * 300, "+" + "1" * 100])
def test_huge_input_is_refused_with_a_short_reason(raw: str) -> None:
    with pytest.raises(InvalidNumber) as caught:
        normalize_number(raw, "DE")
    assert len(caught.value.reason) < 150
    assert repr(raw[:40]) in caught.value.reason
    assert f"({len(raw)} characters)" in caught.value.reason


# parse_number: the hot path


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        (COLOGNE, None, COLOGNE),
        ("+12125550001", None, "+12125550001"),
        ("sip:+492216698712@sbc.example;user=phone", None, COLOGNE),
        ("0221 6698712", "DE", COLOGNE),
        ("+3906 1234 5678", None, "+390612345678"),  # Italian leading zero kept
        ("492216698712", None, None),  # digits without '+' and no region
        ("anonymous", None, None),
        ("", None, None),
    ],
)
def test_parse_number_returns_key_or_none_without_raising(
    raw: str, region: str | None, expected: str | None
) -> None:
    assert parse_number(raw, region) == expected


@st.composite
def possible_numbers(draw: st.DrawFn) -> str:
    """A possible E.164 number: a region's example number with its last digits redrawn."""
    region = draw(st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)))
    example = phonenumbers.example_number(region)
    national = phonenumbers.national_significant_number(example) if example else "2125550001"
    country = example.country_code if example else 1
    tail = draw(st.text("0123456789", min_size=1, max_size=min(4, len(national) - 1)))
    return f"+{country}{national[: len(national) - len(tail)]}{tail}"


@settings(max_examples=300, deadline=None)
@given(possible_numbers())
def test_normalize_number_is_idempotent_and_parse_number_agrees(number: str) -> None:
    key = normalize_number(number)
    assert normalize_number(key) == key
    assert parse_number(number) == key
    assert parse_number(key) == key
    assert normalize_number(f"tel:{number}") == key
    assert parse_number(f"<sip:{number}@sbc.example;user=phone>") == key


@settings(max_examples=300, deadline=None)
@given(possible_numbers())
def test_formatted_forms_give_the_same_key(number: str) -> None:
    key = normalize_number(number)
    parsed = phonenumbers.parse(key)
    spaced = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    assert normalize_number(spaced) == key
    assert normalize_number(spaced.replace("+", "00", 1)) == key


@settings(max_examples=500, deadline=None)
@given(
    country=st.one_of(
        st.sampled_from(sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)),
        st.integers(min_value=0, max_value=999),
    ),
    rest=st.text("0123456789", max_size=14),
)
def test_e164_fast_path_gives_the_phonenumbers_answer(country: int, rest: str) -> None:
    text = f"+{country}{rest}"
    assert parse_number(text) == reference(text)


# normalize_prefix


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("+4922166987", "+4922166987"), ("+49 221 669-87", "+4922166987"), ("+1", "+1")],
)
def test_prefix_is_plus_and_digits_without_separators(raw: str, expected: str) -> None:
    assert normalize_prefix(raw) == expected


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("", "empty"),
        ("4922166987", "not a prefix"),
        ("+", "not a prefix"),
        ("+49a", "not a prefix"),
        ("tel:+49221", "not a prefix"),
        ("+\u0664\u0669", "not a prefix"),
        ("+0221", "starts with 0"),
        ("+1234567890123456", "15 digits"),
    ],
)
def test_bad_prefix_is_rejected_naming_the_input(raw: str, words: str) -> None:
    with pytest.raises(InvalidNumber) as caught:
        normalize_prefix(raw)
    assert caught.value.field == "prefix"
    assert repr(raw) in caught.value.reason
    assert words in caught.value.reason


def test_huge_prefix_is_refused_with_a_short_reason() -> None:
    with pytest.raises(InvalidNumber) as caught:
        normalize_prefix("+" + "1" * 10_000, field="key")
    assert caught.value.field == "key"
    assert len(caught.value.reason) < 150


# range_to_prefixes


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("+18001234560", "+18001234569", ["+1800123456"]),
        ("+18001234567", "+18001234567", ["+18001234567"]),
        (
            "+18001234560",
            "+18001234575",
            ["+1800123456", *(f"+1800123457{d}" for d in range(6))],
        ),
        (
            "+18001234567",
            "+18001234599",
            [
                "+18001234567",
                "+18001234568",
                "+18001234569",
                "+1800123457",
                "+1800123458",
                "+1800123459",
            ],
        ),
        (
            "+18001234500",
            "+18001235999",
            ["+180012345", "+180012346", "+180012347", "+180012348", "+180012349", "+18001235"],
        ),
        ("+10000000", "+99999999", [f"+{d}" for d in range(1, 10)]),
    ],
)
def test_range_becomes_the_fewest_covering_prefixes(
    start: str, end: str, expected: list[str]
) -> None:
    assert range_to_prefixes(start, end, max_span=10**9) == expected


def test_ragged_range_needs_eighteen_prefixes() -> None:
    # 555-559 (5 numbers), 56x-63x (8 blocks of ten), 640-644 (5 numbers).
    assert len(range_to_prefixes("+18001234555", "+18001234644", max_span=1000)) == 18


def test_range_endpoints_may_carry_separators() -> None:
    assert range_to_prefixes("+1 800 123 4560", "+1-800-123-4569", max_span=10) == ["+1800123456"]


def test_range_of_exactly_max_span_is_allowed() -> None:
    assert range_to_prefixes("+18001234560", "+18001234569", max_span=10) == ["+1800123456"]


@pytest.mark.parametrize(
    ("start", "end", "words"),
    [
        ("+18001234560", "+18001234570", "spans 11 numbers; the limit is 10"),
        ("+18001234569", "+18001234560", "before start"),
        ("+18001234560", "+180012345699", "same length"),
    ],
)
def test_bad_range_is_rejected_on_end(start: str, end: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        range_to_prefixes(start, end, max_span=10)
    assert caught.value.field == "end"
    assert repr(end) in caught.value.reason
    assert words in caught.value.reason


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [("18001234560", "+18001234569", "start"), ("+18001234560", "+1800123456x", "end")],
)
def test_unreadable_range_endpoint_names_its_field(start: str, end: str, field: str) -> None:
    with pytest.raises(InvalidNumber) as caught:
        range_to_prefixes(start, end, max_span=100)
    assert caught.value.field == field
    assert repr(start if field == "start" else end) in caught.value.reason


@st.composite
def ranges(draw: st.DrawFn) -> tuple[int, int, int]:
    """(length, low, high): a range of ``length``-digit numbers spanning at most 5000."""
    length = draw(st.integers(min_value=8, max_value=12))
    top = 10**length - 1
    low = draw(st.integers(min_value=10 ** (length - 1), max_value=top))
    span = draw(st.integers(min_value=1, max_value=5000))
    return length, low, min(top, low + span - 1)


@settings(max_examples=200, deadline=None)
@given(ranges())
def test_range_prefixes_cover_exactly_the_range_without_overlap(
    bounds: tuple[int, int, int],
) -> None:
    length, low, high = bounds
    prefixes = range_to_prefixes(f"+{low}", f"+{high}", max_span=5000)
    assert expand(prefixes, length) == set(range(low, high + 1))
    for one, other in itertools.combinations(prefixes, 2):
        assert not one.startswith(other)
        assert not other.startswith(one)
    assert prefixes == sorted(prefixes, key=lambda p: int(p[1:]) * 10 ** (length + 1 - len(p)))
    # Minimal: no ten sibling prefixes remain that one shorter prefix could replace.
    siblings = {p[:-1] for p in prefixes if len(p) > 2}
    for parent in siblings:
        assert sum(p[:-1] == parent for p in prefixes) < 10


# --- digits without "+": the one rule (numbers.py's docstring) ---


@pytest.mark.parametrize(
    ("raw", "region", "written", "read"),
    [
        # one valid reading: written and read alike
        ("2216698712", "DE", "+492216698712", ("+492216698712",)),
        ("0221 6698712", "DE", "+492216698712", ("+492216698712",)),
        ("(212) 555-0001", "US", "+12125550001", ("+12125550001",)),
        ("12125550001", "US", "+12125550001", ("+12125550001",)),  # trunk 1: the same number
        ("+492216698755", "DE", "+492216698755", ("+492216698755",)),
        # two valid readings: a write is refused, a lookup asks both (national first)
        ("492216698755", "DE", None, ("+49492216698755", "+492216698755")),
        # not a valid national number: a write is refused, a lookup reads E.164
        ("12125550001", "DE", None, ("+12125550001",)),
        ("492216698755", None, None, ("+492216698755",)),
    ],
)
def test_bare_digits_are_written_only_when_they_mean_one_number(
    raw: str, region: str | None, written: str | None, read: tuple[str, ...]
) -> None:
    assert number_readings(raw, region) == read
    if written is None:
        with pytest.raises(InvalidNumber) as refused:
            written_number(raw, region, field="phone")
        assert refused.value.field == "phone"
        assert all(r in refused.value.reason for r in read if r != raw)
    else:
        assert written_number(raw, region) == written
        assert read == (written,)


@pytest.mark.parametrize("raw", ["12", "5555550100", "abc", ""])
def test_bare_digits_with_no_valid_reading_are_refused_for_reads_too(raw: str) -> None:
    with pytest.raises(InvalidNumber) as refused:
        number_readings(raw, "US", field="number")
    assert refused.value.field == "number"
