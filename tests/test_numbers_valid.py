"""Bare digits' readings without the re-parse and double judging, held to the old path.

The old path read national digits with phonenumbers.parse() and validated each
reading as ``is_valid_number(parse(e164))``; it is kept here as the oracle:
number_readings() must give the same readings in the same order, or the same
InvalidNumber (reason, status, field), for every input.
"""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cnamd import numbers
from cnamd.errors import InvalidNumber
from cnamd.numbers import number_readings

REGIONS = [None, "DE", "US", "GB", "FR", "IN", "BR"]


def old_valid(reading: object) -> str | None:
    """The old numbers._valid: parse the E.164 reading again, then phonenumbers' validity."""
    if not isinstance(reading, str):
        return None
    return reading if phonenumbers.is_valid_number(phonenumbers.parse(reading)) else None


def old_readings(raw: str, region: str | None) -> tuple[str, ...]:
    """The old number_readings, built from the module's unchanged reading steps."""
    digits = numbers._bare_digits(raw)
    if digits is None:
        return (numbers.normalize_number(raw, region, field="number"),)
    read = numbers._read_digits(False, digits, region, national_fast=False)
    international = numbers._read_digits(True, digits, None)
    valid = old_valid(read)
    other = valid if international == read else old_valid(international)
    found = tuple(dict.fromkeys(n for n in (valid, other) if n is not None))
    if not found:
        raise numbers._neither(raw, region, "number", read)
    return found


def outcome(call: object, *args: object) -> object:
    """What ``call(*args)`` gives: its value, or the InvalidNumber's reason, status and field."""
    try:
        return call(*args)  # type: ignore[operator]
    except InvalidNumber as exc:
        return ("InvalidNumber", str(exc), exc.status, exc.field)


digit_strings = st.text(alphabet="0123456789", min_size=1, max_size=20)


@settings(max_examples=600, deadline=None)
@given(digits=digit_strings, plus=st.booleans(), region=st.sampled_from(REGIONS))
@example(digits="19576339411", plus=False, region="US")  # the benchmark's kind: invalid NANP
@example(digits="12125550123", plus=False, region="US")
@example(digits="4922166987120", plus=False, region="DE")
@example(digits="39061234567", plus=False, region=None)  # Italy: a leading zero after the code
@example(digits="78123456789", plus=False, region=None)  # Russia: national prefix 8
def test_readings_equal_the_old_path(digits: str, plus: bool, region: str | None) -> None:
    raw = ("+" if plus else "") + digits
    assert outcome(number_readings, raw, region) == outcome(old_readings, raw, region)


@settings(max_examples=300, deadline=None)
@given(digits=digit_strings, region=st.sampled_from(REGIONS))
def test_every_e164_reading_is_judged_as_phonenumbers_judges_it(
    digits: str, region: str | None
) -> None:
    for reading in (
        numbers._read_digits(True, digits, None),
        numbers._read_digits(False, digits, region),
    ):
        assert numbers._valid(reading) == old_valid(reading)


@pytest.mark.parametrize("code", sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE))
def test_each_country_code_judged_as_phonenumbers_judges_it(code: int) -> None:
    """Every country code's example numbers and their near misses, valid or not."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[code]
    samples: set[str] = set()
    for region in regions:
        for kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE):
            example_number = (
                phonenumbers.example_number_for_type(region, kind)
                if region != "001"
                else phonenumbers.example_number_for_non_geo_entity(code)
            )
            if example_number is None:
                continue
            e164 = phonenumbers.format_number(example_number, phonenumbers.PhoneNumberFormat.E164)
            samples.update({e164, e164[:-1], e164 + "0", e164[:-1] + "9"})
    for reading in samples:
        assert numbers._valid(reading) == old_valid(reading), reading


@settings(max_examples=400, deadline=None)
@given(
    national=st.integers(min_value=2_000_000_000, max_value=9_999_999_999),
    form=st.sampled_from(["1{}", "+1{}", "{}"]),
    region=st.sampled_from(["US", "CA", "JM", None]),
)
def test_nanp_numbers_equal_the_old_path(national: int, form: str, region: str | None) -> None:
    """The benchmark's kind (NANP, about half valid): shared country code 1, 25 regions."""
    raw = form.format(national)
    assert outcome(number_readings, raw, region) == outcome(old_readings, raw, region)


ALL_REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)


def country_code_of(region: str) -> str:
    return str(phonenumbers.country_code_for_region(region))


def example_nsns(region: str) -> set[str]:
    """The national significant number of each type's example number in ``region``."""
    found = set()
    for kind in phonenumbers.PhoneNumberType.values():
        example_number = phonenumbers.example_number_for_type(region, kind)
        if example_number is not None:
            found.add(phonenumbers.national_significant_number(example_number))
    return found


@settings(max_examples=1500, deadline=None)
@given(
    region=st.sampled_from(ALL_REGIONS),
    national=st.text(alphabet="0123456789", min_size=1, max_size=16),
    with_code=st.booleans(),
)
def test_national_digits_read_as_parse_reads_them(
    region: str, national: str, with_code: bool
) -> None:
    """The fast national reading gives parse()'s reading wherever it answers, in every
    region: digits alone and after the country code (the two shapes it takes)."""
    digits = (country_code_of(region) if with_code else "") + national
    fast = numbers._read_national_fast(digits, region)
    if fast is not None:
        assert fast == numbers._read_with_phonenumbers(digits, region)


@pytest.mark.parametrize("region", ALL_REGIONS)
def test_each_regions_example_numbers_read_as_parse_reads_them(region: str) -> None:
    """Every type's example number of the region, with and without its country code,
    national prefix and a digit more or less; where the fast reading answers, it is parse()'s."""
    code, samples = country_code_of(region), set()
    for nsn in example_nsns(region):
        samples |= {nsn, code + nsn, nsn[:-1], nsn + "5", code + nsn[:-1], "1" + nsn}
    for digits in sorted(s for s in samples if s and s[0] != "0"):
        fast = numbers._read_national_fast(digits, region)
        if fast is not None:
            assert fast == numbers._read_with_phonenumbers(digits, region), digits


def test_the_pbx_shapes_take_the_fast_way() -> None:
    """The shapes PBXs send are read without parse() (else the saving is gone)."""
    assert numbers._read_national_fast("2125550123", "US") == "+12125550123"
    assert numbers._read_national_fast("12125550123", "US") == "+12125550123"
    assert numbers._read_national_fast("12125550123", "CA") == "+12125550123"


@settings(max_examples=2000, deadline=None)
@given(
    region=st.sampled_from(ALL_REGIONS),
    national=st.text(alphabet="0123456789", min_size=1, max_size=14),
    lower=st.booleans(),
)
@example(region="US", national="9576339411", lower=False)
@example(region="DE", national="22166987120", lower=False)
@example(region="FR", national="0142685300", lower=True)
def test_country_code_and_national_digits_read_as_the_steps_read_them(
    region: str, national: str, lower: bool
) -> None:
    """The one-expression shape (numbers._code_shaped) gives what the readings' steps
    give, readings or refusal, in every region: the digits a PBX sends after the code."""
    digits = country_code_of(region) + national
    asked = region.lower() if lower else region
    assert outcome(number_readings, digits, asked) == outcome(old_readings, digits, asked)


@pytest.mark.parametrize("region", ALL_REGIONS)
def test_each_regions_examples_after_its_code_read_as_the_steps_read_them(region: str) -> None:
    """Every type's example number after the country code, a digit more or less, and
    with a leading digit changed: the readings are the steps', shape or not."""
    code, samples = country_code_of(region), set()
    for nsn in example_nsns(region):
        samples |= {nsn, nsn[:-1], nsn + "5", "9" + nsn[1:], "0" + nsn, "1" + nsn}
    for national in sorted(s for s in samples if s):
        digits = code + national
        assert outcome(number_readings, digits, region) == outcome(old_readings, digits, region), (
            digits
        )


def test_the_pbx_shapes_are_judged_in_one_expression() -> None:
    """The code-and-national shape is taken where the saving is (else it is gone), and
    left to the steps where a second reading may differ."""
    assert numbers._code_shaped("12125550123", "US") is True
    assert numbers._code_shaped("12125550123", "CA") is True
    assert numbers._code_shaped("19576339411", "US") is False  # no such NANP area code
    assert numbers._code_shaped("4922166987120", "DE") is True
    assert numbers._code_shaped("2125550123", "US") is None  # national digits alone
    assert numbers._code_shaped("492216698712", "DE") is None  # also a German national number
    assert numbers._code_shaped("12125550123", None) is None
    assert numbers._code_shaped("12125550123", "XX") is None
    assert "XX" not in numbers._CODE_SHAPES  # unknown regions are not remembered
