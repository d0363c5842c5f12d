"""Phone-directory XML, parsed back field by field: each vendor's structure and escaping."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from cnamd import phonebooks
from cnamd.phonebooks import Entry

NASTY = 'Smith & Sons <"Ltd"> O\'Neil'
ENTRIES = [Entry("John Doe", "+492216698712"), Entry(NASTY, "+12125550001")]


def parse(document: bytes) -> ET.Element:
    assert document.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    return ET.fromstring(document)


def test_yealink_remote_phone_book() -> None:
    root = parse(phonebooks.yealink(ENTRIES))
    assert root.tag == "YealinkIPPhoneDirectory"
    got = [(e.findtext("Name"), e.findtext("Telephone")) for e in root.iter("DirectoryEntry")]
    assert got == [("John Doe", "+492216698712"), (NASTY, "+12125550001")]
    assert [child.tag for child in root[0]] == ["Name", "Telephone"]


def test_yealink_miss_is_an_empty_directory() -> None:
    root = parse(phonebooks.yealink([]))
    assert root.tag == "YealinkIPPhoneDirectory" and len(root) == 0


def test_cisco_directory_has_title_prompt_and_at_most_32_entries() -> None:
    many = [Entry(f"Name {i:02d}", f"+4930{i:06d}") for i in range(40)]
    root = parse(phonebooks.cisco(many, "Directory", "40 & more <found>"))
    assert root.tag == "CiscoIPPhoneDirectory"
    assert [child.tag for child in root[:2]] == ["Title", "Prompt"]
    assert (root.findtext("Title"), root.findtext("Prompt")) == ("Directory", "40 & more <found>")
    entries = root.findall("DirectoryEntry")
    assert len(entries) == phonebooks.CISCO_MAX_ENTRIES == 32
    assert (entries[31].findtext("Name"), entries[31].findtext("Telephone")) == (
        "Name 31",
        "+4930000031",
    )


def test_gigaset_hit_lists_entries_with_ln_and_hm() -> None:
    root = parse(phonebooks.gigaset(ENTRIES, reqid="9B0E3"))
    assert (root.tag, root.get("response"), root.get("type")) == ("list", "get_list", "pb")
    assert (root.get("total"), root.get("first"), root.get("last")) == ("2", "1", "2")
    assert root.get("reqid") == "9B0E3" and root.get("notfound") is None
    got = [(e.findtext("ln"), e.findtext("hm")) for e in root.iter("entry")]
    assert got == [("John Doe", "+492216698712"), (NASTY, "+12125550001")]


@pytest.mark.parametrize("field", ["hm", "ln"])
def test_gigaset_miss_names_the_field_not_found(field: str) -> None:
    root = parse(phonebooks.gigaset([], searched=field))
    assert root.attrib == {"response": "get_list", "type": "pb", "notfound": field, "total": "0"}
    assert len(root) == 0


def test_snom_tbook_is_complete_with_unique_indexes() -> None:
    root = parse(phonebooks.snom(ENTRIES))
    assert root.tag == "tbook" and root.attrib == {"complete": "true", "e": "2"}
    items = root.findall("item")
    assert [item.attrib for item in items] == [
        {"context": "active", "type": "none", "index": "0"},
        {"context": "active", "type": "none", "index": "1"},
    ]
    assert [(i.findtext("name"), i.findtext("number")) for i in items] == [
        ("John Doe", "+492216698712"),
        (NASTY, "+12125550001"),
    ]


def test_grandstream_address_book() -> None:
    root = parse(phonebooks.grandstream(ENTRIES))
    assert root.tag == "AddressBook" and root.findtext("version") == "1"
    contacts = root.findall("Contact")
    assert [c.findtext("LastName") for c in contacts] == ["John Doe", NASTY]
    phones = [p for c in contacts if (p := c.find("Phone")) is not None]
    assert [p.get("type") for p in phones] == ["Work", "Work"]
    assert [(p.findtext("phonenumber"), p.findtext("accountindex")) for p in phones] == [
        ("+492216698712", "0"),
        ("+12125550001", "0"),
    ]


def test_polycom_directory_is_unique_by_contact_and_cuts_names_to_40_bytes() -> None:
    long_name = "Müller " * 8  # 64 bytes of UTF-8; the ü must not be split
    entries = [*ENTRIES, Entry("Duplicate", "+492216698712"), Entry(long_name, "+4930901820")]
    root = parse(phonebooks.polycom(entries))
    assert root.tag == "directory"
    items = root.findall("item_list/item")
    got = [(i.findtext("ln"), i.findtext("ct")) for i in items]
    assert got[:2] == [("John Doe", "+492216698712"), (NASTY, "+12125550001")]
    assert len(got) == 3 and got[2][1] == "+4930901820"
    cut = got[2][0]
    assert cut is not None and long_name.startswith(cut) and len(cut.encode()) <= 40


@pytest.mark.parametrize(
    "build",
    [
        phonebooks.yealink,
        phonebooks.snom,
        phonebooks.grandstream,
        phonebooks.polycom,
        lambda e: phonebooks.cisco(e, "T", "P"),
        phonebooks.gigaset,
    ],
)
def test_markup_in_names_is_escaped_not_interpreted(build: object) -> None:
    assert callable(build)
    document: bytes = build([Entry(NASTY, "+1")])
    assert b"&amp;" in document and b"&lt;" in document and b"<Ltd" not in document
    texts = [el.text for el in parse(document).iter() if el.text]
    assert NASTY in texts


def test_attribute_values_are_escaped() -> None:
    root = parse(phonebooks.gigaset(ENTRIES, reqid='a"b<c&d'))
    assert root.get("reqid") == 'a"b<c&d'
