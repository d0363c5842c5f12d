"""``http.trusted_networks``: which source addresses may look up without a key.

Asked once per keyless lookup, so the answer per source address is memoized
(PBXs are few and come back on every call); a reload replaces the networks
and forgets every answer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["IPNetwork", "TrustedNetworks"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: source addresses remembered at most; past it the memo starts over
MEMO_SIZE = 4096


class TrustedNetworks:
    """The trusted networks and, per source address seen, whether it is in one."""

    __slots__ = ("_memo", "networks")

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks: tuple[IPNetwork, ...] = ()
        self._memo: dict[str, bool] = {}
        self.replace(networks)

    def replace(self, networks: Iterable[str]) -> None:
        """New networks (on SIGHUP); every remembered answer is dropped."""
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self._memo = {}

    def __contains__(self, remote: str | None) -> bool:
        key = remote or ""
        known = self._memo.get(key)
        if known is None:
            known = self._check(key)
            if len(self._memo) >= MEMO_SIZE:
                self._memo = {}
            self._memo[key] = known
        return known

    def _check(self, remote: str) -> bool:
        try:
            addr = ipaddress.ip_address(remote)
        except ValueError:
            return False
        return any(addr in net for net in self.networks)
