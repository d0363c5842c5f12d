"""Phone-directory XML in each desk phone's own dialect. Pure: entries in, UTF-8 bytes out.

Built with the standard library's ElementTree, which escapes ``&``, ``<`` and
``>`` in text and ``"`` in attributes (a name like ``Smith & Sons`` is real:
seed 000's name alphabet has ``&`` and ``'``). lxml would add a compiled
dependency for nothing used here -- no XPath, schemas or pretty printing.
Every document starts with a double-quoted declaration, as the vendors'
examples do, because some phones' parsers choke on ElementTree's single quotes.

Each builder follows the example in its vendor's documentation:

* Yealink: "Remote Phone Book" in the Yealink SIP-T2/T4/T5 Series IP Phones
  Administrator Guide -- ``YealinkIPPhoneDirectory`` / ``DirectoryEntry`` with
  ``Name`` and ``Telephone``; the phone fills ``#SEARCH`` in the URL with what
  the user typed, or with the caller's number for an incoming-call lookup.
* Cisco: ``CiscoIPPhoneDirectory`` (``Title``, ``Prompt``, ``DirectoryEntry``
  with ``Name`` and ``Telephone``) in "Cisco Unified IP Phone Services
  Application Development Notes" (OL-20949-01), ch. 3; phones show at most 32
  entries per object.
* Gigaset: the "Gigaset Phonebook Search Protocol Specification" 1.4 --
  ``<list response="get_list" type="pb" total= first= last=>`` of ``<entry>``
  with ``ln`` (name) and ``hm`` (number); a miss is ``notfound="hm"
  total="0"``, naming the field that found nothing.
* Snom: "<tbook>, <phone-book> tag" on the Snom service wiki -- ``<tbook
  complete="true" e="2">`` of ``<item context= type= index=>`` with ``name``
  and ``number``; ``complete`` lets the phone drop names removed since.
* Grandstream: "GXP Series - XML Phonebook Guide" -- ``AddressBook`` /
  ``Contact`` with ``LastName`` and ``Phone type="Work"`` holding
  ``phonenumber`` and ``accountindex`` (0..5 for accounts 1..6).
* Polycom: "Local Contact Directory File Format", SoundPoint IP Administrator
  Guide -- ``directory`` / ``item_list`` / ``item`` with ``ln`` (at most 40
  bytes of UTF-8) and ``ct`` (the contact, never empty nor duplicated).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "CISCO_MAX_ENTRIES",
    "Entry",
    "cisco",
    "gigaset",
    "grandstream",
    "polycom",
    "snom",
    "yealink",
]

_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
#: Cisco phones show at most 32 DirectoryEntry elements of one object
CISCO_MAX_ENTRIES = 32
_POLYCOM_NAME_BYTES = 40


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of a phone's directory: the name to show and the number it belongs to."""

    name: str
    number: str


def _document(root: ET.Element) -> bytes:
    return _DECLARATION + ET.tostring(root, encoding="unicode").encode()


def _child(parent: ET.Element, tag: str, text: str, **attrib: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrib)
    element.text = text
    return element


def _directory_entries(parent: ET.Element, entries: Iterable[Entry]) -> ET.Element:
    """Yealink's and Cisco's shared ``DirectoryEntry`` (``Name``, ``Telephone``) list."""
    for entry in entries:
        item = ET.SubElement(parent, "DirectoryEntry")
        _child(item, "Name", entry.name)
        _child(item, "Telephone", entry.number)
    return parent


def yealink(entries: Iterable[Entry]) -> bytes:
    """A Yealink remote phone book page; no entries is the phone's own "not found"."""
    return _document(_directory_entries(ET.Element("YealinkIPPhoneDirectory"), entries))


def cisco(entries: Sequence[Entry], title: str, prompt: str) -> bytes:
    """A CiscoIPPhoneDirectory object: the first 32 entries (the phone's limit)."""
    root = ET.Element("CiscoIPPhoneDirectory")
    _child(root, "Title", title)
    _child(root, "Prompt", prompt)
    return _document(_directory_entries(root, entries[:CISCO_MAX_ENTRIES]))


def gigaset(entries: Sequence[Entry], *, searched: str = "hm", reqid: str | None = None) -> bytes:
    """A Gigaset ``get_list`` answer; empty: ``notfound`` names the ``searched`` field."""
    root = ET.Element("list", {"response": "get_list", "type": "pb"})
    if reqid:
        root.set("reqid", reqid)
    if not entries:
        root.set("notfound", searched)
        root.set("total", "0")
        return _document(root)
    count = str(len(entries))
    root.set("total", count)
    root.set("first", "1")
    root.set("last", count)
    for entry in entries:
        item = ET.SubElement(root, "entry")
        _child(item, "ln", entry.name)
        _child(item, "hm", entry.number)
    return _document(root)


def snom(entries: Iterable[Entry]) -> bytes:
    """A complete Snom tbook: the phone replaces its provisioned directory with it."""
    root = ET.Element("tbook", {"complete": "true", "e": "2"})
    for index, entry in enumerate(entries):
        item = ET.SubElement(
            root, "item", {"context": "active", "type": "none", "index": str(index)}
        )
        _child(item, "name", entry.name)
        _child(item, "number", entry.number)
    return _document(root)


def grandstream(entries: Iterable[Entry]) -> bytes:
    """A Grandstream AddressBook; every number is a Work phone on account 1 (index 0)."""
    root = ET.Element("AddressBook")
    _child(root, "version", "1")
    for entry in entries:
        contact = ET.SubElement(root, "Contact")
        _child(contact, "LastName", entry.name)
        phone = ET.SubElement(contact, "Phone", {"type": "Work"})
        _child(phone, "phonenumber", entry.number)
        _child(phone, "accountindex", "0")
    return _document(root)


def polycom(entries: Iterable[Entry]) -> bytes:
    """A Polycom contact directory; a number already listed is left out (``ct`` must be unique)."""
    root = ET.Element("directory")
    items = ET.SubElement(root, "item_list")
    seen: set[str] = set()
    for entry in entries:
        if entry.number in seen:
            continue
        seen.add(entry.number)
        item = ET.SubElement(items, "item")
        _child(item, "ln", _cut_utf8(entry.name, _POLYCOM_NAME_BYTES))
        _child(item, "ct", entry.number)
    return _document(root)


def _cut_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8, never inside a character."""
    return text.encode()[:limit].decode(errors="ignore")
