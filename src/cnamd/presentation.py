"""Callers without a number to look up: withheld or unknown, as PBXs write them.

The ENUM CNAM draft (draft-ietf-enum-cnam-08, ``unavailable=``) names the two
cases every CNAM client knows: ``p``, the caller asked for privacy, and ``u``,
the name (or the number) is not available. A PBX passes such a caller on as a
word instead of digits -- Asterisk's ``CALLERID(num)`` is ``anonymous`` for an
RFC 3323 anonymous From, carriers send ``Restricted`` or ``Private`` -- so the
HTTP fronts answer these words with the configured handset strings instead of
calling them unreadable numbers. The SIP dip detects privacy from its headers
(``Privacy: id``, ``anonymous.invalid``) in ``sip/dip.py``. Pure: no I/O.
"""

from __future__ import annotations

import enum

__all__ = ["Unavailable", "unavailable"]


class Unavailable(enum.Enum):
    """Why a caller has no name to show; the value is ENUM's ``unavailable=`` code."""

    PRIVATE = "p"
    UNKNOWN = "u"


# Lower-cased words PBXs and carriers put where the number would be.
_PRIVATE_WORDS = frozenset(("anonymous", "private", "restricted", "withheld", "blocked"))
_UNKNOWN_WORDS = frozenset(("unknown", "unavailable", "out of area", "outofarea"))


def unavailable(raw: str) -> Unavailable | None:
    """PRIVATE or UNKNOWN for a withheld or unknown caller, None for anything else.

    An empty or blank number is UNKNOWN: FreePBX builds its URL from an empty
    ``CALLERID(num)`` as ``/v3/phone/``. A SIP URI at ``anonymous.invalid``
    (RFC 3323 §4.1.1.3) is PRIVATE whatever its user part.
    """
    word = raw.strip().lower()
    if not word:
        return Unavailable.UNKNOWN
    if len(word) > 64:
        return None
    if word.startswith(("sip:", "sips:")):
        if word.partition("@")[2].partition(";")[0].startswith("anonymous.invalid"):
            return Unavailable.PRIVATE
        word = word.partition(":")[2].partition("@")[0]
    if word in _PRIVATE_WORDS:
        return Unavailable.PRIVATE
    if word in _UNKNOWN_WORDS:
        return Unavailable.UNKNOWN
    return None
