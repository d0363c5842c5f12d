"""The name rule: seed 000's alphabet and the length limit (cnamd.names)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnamd.errors import InvalidName
from cnamd.names import NAME_ALPHABET, is_valid_name, validate_name

SEED_000_PUNCTUATION = "&'()*+,-./:;@[]_"


def test_alphabet_is_seed_000s() -> None:
    assert set(NAME_ALPHABET) == set(
        string.ascii_uppercase + string.ascii_lowercase + string.digits + SEED_000_PUNCTUATION + " "
    )


@pytest.mark.parametrize(
    "name",
    [
        "John Doe",
        "ACME Cologne",
        "O'Brien & Sons",
        "Dr. Smith (GP)",
        "a+b*c,d-e/f:g;h",
        "[x]@y_z",
        "0800",
    ],
)
def test_name_in_alphabet_is_accepted(name: str) -> None:
    assert validate_name(name) == name
    assert is_valid_name(name)


def test_every_alphabet_character_is_accepted() -> None:
    for start in range(0, len(NAME_ALPHABET), 15):
        chunk = NAME_ALPHABET[start : start + 15].strip() or "x"
        assert validate_name(chunk) == chunk


def test_surrounding_whitespace_is_stripped() -> None:
    assert validate_name("  John Doe \n") == "John Doe"
    assert is_valid_name("\tJohn Doe\r\n")


def test_inner_spaces_are_kept() -> None:
    assert validate_name("John  Doe") == "John  Doe"


@pytest.mark.parametrize("raw", ["", "   ", "\n\t"])
def test_empty_name_is_rejected(raw: str) -> None:
    with pytest.raises(InvalidName) as caught:
        validate_name(raw)
    assert caught.value.field == "name"
    assert caught.value.status == "invalid-name"
    assert repr(raw) in caught.value.reason
    assert "empty" in caught.value.reason
    assert not is_valid_name(raw)


@pytest.mark.parametrize(
    ("raw", "char", "position"),
    [
        ("J\u00f6rg", "'\u00f6' (U+00F6)", 2),
        ("  J\u00f6rg", "'\u00f6' (U+00F6)", 4),
        ("John\tDoe", "'\\t' (U+0009)", 5),
        ('Jo"hn', "'\"' (U+0022)", 3),
        ("Mr. #1", "'#' (U+0023)", 5),
        ("100% Fun!", "'%' (U+0025)", 4),
        ("\u0664\u0662", "'\u0664' (U+0664)", 1),
        ("Doe\u200b", "'\\u200b' (U+200B)", 4),
    ],
)
def test_character_outside_alphabet_is_named_with_its_position(
    raw: str, char: str, position: int
) -> None:
    with pytest.raises(InvalidName) as caught:
        validate_name(raw)
    assert caught.value.field == "name"
    assert repr(raw) in caught.value.reason
    assert f"has {char} at position {position};" in caught.value.reason
    assert not is_valid_name(raw)


def test_first_bad_character_is_reported() -> None:
    with pytest.raises(InvalidName, match=r"'!' .* at position 2"):
        validate_name("A!B?")


def test_fifteen_characters_is_the_default_limit() -> None:
    assert validate_name("A" * 15) == "A" * 15
    with pytest.raises(InvalidName) as caught:
        validate_name("A" * 16)
    assert "is 16 characters long; the limit is 15" in caught.value.reason
    assert not is_valid_name("A" * 16)


def test_limit_counts_the_stripped_name() -> None:
    assert validate_name("  " + "A" * 15 + "  ") == "A" * 15


def test_limit_is_configurable() -> None:
    assert validate_name("A" * 32, max_length=32) == "A" * 32
    assert is_valid_name("A" * 32, 32)
    with pytest.raises(InvalidName, match="is 6 characters long; the limit is 5"):
        validate_name("ABCDEF", max_length=5)


def test_bad_character_is_reported_before_length() -> None:
    with pytest.raises(InvalidName, match="position 20"):
        validate_name("A" * 19 + "\u00e9")


def test_error_names_the_given_field() -> None:
    with pytest.raises(InvalidName) as caught:
        validate_name("", field="caller_id_name")
    assert caught.value.field == "caller_id_name"


def test_huge_name_gets_a_short_reason() -> None:
    raw = "A" * 100_000
    with pytest.raises(InvalidName) as caught:
        validate_name(raw)
    assert len(caught.value.reason) < 150
    assert "(100000 characters)" in caught.value.reason


@settings(max_examples=300, deadline=None)
@given(
    raw=st.text(st.one_of(st.sampled_from(NAME_ALPHABET + " \t\n"), st.characters()), max_size=20),
    max_length=st.integers(min_value=1, max_value=20),
)
def test_is_valid_name_agrees_with_validate_name(raw: str, max_length: int) -> None:
    try:
        name = validate_name(raw, max_length=max_length)
    except InvalidName:
        assert not is_valid_name(raw, max_length)
    else:
        assert is_valid_name(raw, max_length)
        assert name == raw.strip()
        assert 0 < len(name) <= max_length
        assert set(name) <= set(NAME_ALPHABET)
