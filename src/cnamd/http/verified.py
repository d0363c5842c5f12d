"""Credentials already checked, so a lookup's key is hashed once, not per request.

A PBX sends the same key id and secret with every call. The first request
checks them against the key table in memory (``Contexts.authenticate``: a
SHA-256 and a constant-time compare); later ones find the principal here,
keyed by the credential as presented. The table belongs to one ``Contexts``:
the change feed installs a new one on any key change (a revocation, a new
grant), and the first request after that finds the table empty, so a revoked
key is refused from the very next request the feed has applied. A key's
expiry is checked on every hit. Failures are never remembered: a guess always
costs the full check. The table keeps the secrets as presented, in this
process's memory only (never logged, never in the snapshot), up to SIZE keys.
"""

from __future__ import annotations

from cnamd.access import Principal
from cnamd.cache.contexts import Contexts

__all__ = ["VerifiedKeys"]

#: credentials remembered at most; past it the table starts over
SIZE = 4096


class VerifiedKeys:
    """``(key_id, secret) -> (principal, expires)`` for one Contexts."""

    __slots__ = ("_contexts", "_seen")

    def __init__(self) -> None:
        self._contexts: Contexts | None = None
        self._seen: dict[tuple[str, str], tuple[Principal, float | None]] = {}

    def principal(
        self, contexts: Contexts, key_id: str, secret: str, now: float
    ) -> Principal | None:
        """The live key's principal, as ``contexts.authenticate`` would answer at ``now``."""
        if contexts is not self._contexts:
            self._contexts = contexts
            self._seen = {}
        hit = self._seen.get((key_id, secret))
        if hit is None:
            who = contexts.authenticate(key_id, secret, now)
            if who is None:
                return None
            if len(self._seen) >= SIZE:
                self._seen = {}
            self._seen[(key_id, secret)] = (who, contexts.keys[key_id][2])
            return who
        who, expires = hit
        if expires is not None and expires <= now:
            return None
        return who
