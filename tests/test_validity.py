"""validity.is_valid() is phonenumbers.is_valid_number(), for every country code."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cnamd.validity import is_valid

COUNTRY_CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


def reference(country: int, national: str) -> bool:
    number = phonenumbers.PhoneNumber(country_code=country, national_number=int(national))
    if national[0] == "0":
        number.italian_leading_zero = True
        number.number_of_leading_zeros = len(national) - len(national.lstrip("0"))
    return bool(phonenumbers.is_valid_number(number))


@settings(max_examples=2000, deadline=None)
@given(
    country=st.sampled_from(COUNTRY_CODES),
    national=st.text(alphabet="0123456789", min_size=1, max_size=17).filter(
        lambda n: n.strip("0") != ""
    ),
)
@example(country=1, national="9576339411")  # NANP: no region claims area code 957
@example(country=1, national="2125550123")
@example(country=1, national="8765550123")  # JM by leading digits
@example(country=7, national="9123456789")  # RU and KZ share 7
@example(country=39, national="0612345678")  # Italy: a leading zero
def test_random_numbers_judged_as_phonenumbers_judges_them(country: int, national: str) -> None:
    assert is_valid(country, national) == reference(country, national)


@pytest.mark.parametrize("country", COUNTRY_CODES)
def test_example_numbers_and_near_misses(country: int) -> None:
    """Each region's example number of every type, and one digit changed, added or cut:
    the valid side of every pattern, which random digits seldom reach."""
    samples: set[str] = set()
    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[country]:
        for kind in phonenumbers.PhoneNumberType.values():
            example_number = (
                phonenumbers.example_number_for_type(region, kind)
                if region != "001"
                else phonenumbers.example_number_for_non_geo_entity(country)
            )
            if example_number is None:
                continue
            nsn = phonenumbers.national_significant_number(example_number)
            last = str((int(nsn[-1]) + 1) % 10)
            samples |= {nsn, nsn[:-1], nsn + "0", nsn[:-1] + last, last + nsn[1:]}
    for national in sorted(n for n in samples if n.strip("0")):
        assert is_valid(country, national) == reference(country, national), national
