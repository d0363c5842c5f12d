"""A SIP dip source: one stateless INVITE to an upstream dip server (a carrier's CNAM
dip, a Kamailio, another cnamd); the name is the 302's P-Asserted-Identity display
name, else its Contact's; 404 and 480 (or a 302 without a name) mean no name.
UDP retransmits per RFC 3261 timer A (``sip/dip_client.py``); ``;transport=tcp``
in the URI asks over TCP."""

from __future__ import annotations

import asyncio

from cnamd.errors import CnamdError
from cnamd.settings import SourceSettings
from cnamd.sip.dip_client import dip
from cnamd.upstream.source import ERROR, MISS, Outcome, Result, clean_name

_NO_NAME = frozenset((404, 480, 604))
# T1 for a dip: the RFC's 500 ms would leave no retransmission inside a SIP deadline
# below an SBC's; a quarter of the source's timeout gives two or three.
_T1_SHARE = 0.25


class SipDipSource:
    """Asks one upstream SIP dip server."""

    def __init__(self, settings: SourceSettings, max_length: int) -> None:
        self.settings = settings
        self.max_length = max_length
        uri = settings.url.removeprefix("sip:")
        address, _, params = uri.partition(";")
        self.server = address
        self.tcp = "transport=tcp" in params.lower()
        self.t1 = min(0.5, settings.timeout * _T1_SHARE)

    async def fetch(self, number: str) -> Outcome:
        try:
            answer = await dip(
                self.server,
                number,
                number,
                tcp=self.tcp,
                timeout=self.settings.timeout,
                t1=self.t1,
            )
        except TimeoutError:
            return Outcome(Result.TIMEOUT)
        except (OSError, CnamdError, ValueError, asyncio.IncompleteReadError):
            return ERROR
        if answer.status in _NO_NAME:
            return MISS
        if not 300 <= answer.status < 400:
            return ERROR
        if answer.name is None:
            return MISS
        name = clean_name(answer.name, self.max_length)
        return MISS if name is None else Outcome(Result.HIT, name)

    async def close(self) -> None:
        """Nothing held between requests: each dip has its own socket."""
