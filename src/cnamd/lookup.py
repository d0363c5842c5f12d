"""The caller-name question and its answer, shared by every front (issue #16, item 1).

SIP, HTTP and any later front ask a ``CallerNames`` and get a ``NameAnswer``;
none of them imports another front to do so. Compiled with mypyc (setup.py):
the dip reads ``NameAnswer`` on every INVITE.

The order sources are asked in: the local scopes (user, usergroup, enterprise,
global: ``cache/``), then the held upstream answers (``cache/upstream.py``),
all from memory and answered at once; only when all of them miss and an
upstream source may be asked is the answer PENDING, and the front asks
``later()`` for it (``upstream/chain.py``), bounded by its own deadline.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Protocol


class NameKind(enum.Enum):
    """What the directory said about a calling number."""

    HIT = "hit"
    MISS = "miss"
    INVALID = "invalid"
    DENIED = "denied"
    #: no local name, none held from upstream, and a source may be asked: ``later()``
    PENDING = "pending"


class NameAnswer:
    """A directory answer; ``number`` is the caller's normalized E.164 on HIT and MISS.

    A plain class, not a frozen dataclass: compiled, its constructor is a C call,
    where the dataclass's generated ``__init__`` cost ~0.8 us of every dip.
    Treat it as immutable.
    """

    def __init__(
        self, kind: NameKind, name: str = "", number: str = "", tenant: int | None = None
    ) -> None:
        self.kind = kind
        self.name = name
        self.number = number
        #: on PENDING: the asking tenant, whose own provider accounts ``later()`` uses
        self.tenant = tenant

    def __repr__(self) -> str:
        return f"NameAnswer({self.kind}, {self.name!r}, {self.number!r})"


class UpstreamAsker(Protocol):
    """The upstream chain as a front sees it (``upstream/chain.py`` implements it)."""

    def wants(self, number: str) -> bool:
        """Whether some source may be asked for this E.164 number."""
        ...

    def later(
        self,
        number: str,
        deadline: float,
        front: str,
        done: Callable[[str | None, str | None], None],
        accounts: dict[str, Any] | None = None,
    ) -> None:
        """Call ``done(name, source)`` once: the answer, or (None, None) at ``deadline``.
        ``accounts``: the asking tenant's own accounts with sources, by source name."""
        ...


class CallerNames(Protocol):
    """The directory a front asks (implemented by the composition root, ``callers.py``)."""

    def admit(self, source_ip: str) -> bool:
        """May this source ask at all (the ``sip.allow`` ACL)?"""
        ...

    def caller_name(self, calling: str, called: str, source_ip: str) -> NameAnswer:
        """Name for ``calling`` asked on behalf of ``called`` from ``source_ip``. Never raises.

        Both are URI user parts, percent-decoded, without user parameters
        (``+492216698712``, ``02216698712``, ``alice``): the implementation
        normalizes them and picks the lookup context.
        """
        ...

    def later(self, pending: NameAnswer, done: Callable[[NameAnswer], None]) -> None:
        """Ask upstream for a PENDING answer's number (with its tenant's accounts);
        ``done`` is called once, with HIT or MISS, within the front's deadline. Never raises."""
        ...
