"""phonenumbers' ``is_valid_number()`` as one regular expression per country code and length.

A bare-digit lookup (``/v3/phone/12125550123``, the request a PBX sends) is read both
ways and each reading judged valid or not (numbers.py). phonenumbers judges by walking
the country's regions in order and, in each, the general pattern and up to ten
number-type patterns, one Python call per pattern: 20-60 us for a number of NANP's 25
regions, most of a lookup's cost. The decision itself is a regular language:

- a country code with one region (or a non-geographic one): the national number is of a
  known type there -- the general pattern matches, and any type's pattern, each only
  for the lengths its metadata allows;
- a shared country code: the first region that claims the number decides. A region
  with ``leading_digits`` claims a number starting with them (and then it is valid
  only if of a known type there); one without claims it when it is of a known type.

So it is written as one alternation, a branch per region in phonenumbers' order, each
branch closed to the numbers an earlier region's leading digits claim, compiled from
the installed metadata on first use per (country code, length): a phonenumbers upgrade
changes both alike. tests/test_validity.py holds it to ``is_valid_number()``.
"""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberDesc

__all__ = ["is_valid"]

#: the number types _number_type_helper() tries after the general pattern; any match is a type
_TYPES = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
    "mobile",
)

#: (country code, national length) -> the compiled decision, or None: never valid
_DECISIONS: dict[tuple[int, int], re.Pattern[str] | None] = {}


def is_valid(country: int, national: str) -> bool:
    """``is_valid_number()`` of +``country`` ``national`` (the national significant
    number: ASCII digits, Italian leading zeros included)."""
    key = (country, len(national))
    try:
        decision = _DECISIONS[key]
    except KeyError:
        decision = _DECISIONS[key] = _compile(country, len(national))
    return decision is not None and decision.fullmatch(national) is not None


def _compile(country: int, length: int) -> re.Pattern[str] | None:
    """The decision for national numbers of ``length`` digits; None when none is valid.
    Bounded: a few hundred country codes times the lengths numbers.py lets through."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country)
    if not regions:
        return None
    if len(regions) == 1:  # region_code_for_number() picks it without looking
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(country, regions[0])
        typed = _typed(metadata, length) if metadata is not None else None
        return re.compile(typed) if typed else None
    branches: list[str] = []
    claimed: list[str] = []  # earlier regions' leading digits: their numbers are decided
    for region in regions:
        metadata = PhoneMetadata.metadata_for_region(region.upper(), None)
        if metadata is None:
            continue
        unclaimed = f"(?!{'|'.join(claimed)})" if claimed else ""
        typed = _typed(metadata, length)
        if metadata.leading_digits is not None:
            leading = f"(?:{metadata.leading_digits})"
            if typed:  # its own leading digits first: most numbers fail there, before
                # the earlier regions' list (NANP's invalid numbers: 1.4 -> 1.0 us)
                branches.append(f"(?={leading}){unclaimed}{typed}")
            claimed.append(leading)
        elif typed:
            branches.append(unclaimed + typed)
    if not branches:
        return None
    return re.compile("|".join(f"(?:{branch})" for branch in branches))


def _typed(metadata: PhoneMetadata, length: int) -> str | None:
    """A pattern for "of a known type in ``metadata``" at ``length`` (the general
    pattern, then any type's), as _number_type_helper() decides; None for never."""
    general = _pattern(metadata.general_desc, length)
    if general is None:
        return None
    types = [p for name in _TYPES if (p := _pattern(getattr(metadata, name), length))]
    if not types:
        return None
    either = "|".join(f"(?:{p})" for p in types)
    return rf"(?=(?:{general})\Z)(?:{either})\Z"


def _pattern(desc: PhoneNumberDesc | None, length: int) -> str | None:
    """``desc``'s pattern where _is_number_matching_desc() would try it at ``length``."""
    if desc is None:
        return None
    if desc.possible_length and length not in desc.possible_length:
        return None
    return desc.national_number_pattern or None
