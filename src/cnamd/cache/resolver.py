"""The scope chain: which namespaces a lookup searches, in which order, and who wins.

Kept apart from the storage (``cache/trie.py`` answers "longest key of one
namespace that prefixes this number") so the policy of DESIGN.md "Names live in
scopes" is one small pure function, testable against any matcher. Inlining it
into the cache saves one call per lookup (~0.1 us of ~2 us, bench/README.md);
not worth two copies of the rule.
"""

from __future__ import annotations

from typing import Protocol

from cnamd.model import LookupContext, LookupResult, Scope


class LongestMatch(Protocol):
    """The longest key of namespace (scope, owner) that is a prefix of ``number``, or None."""

    def __call__(self, scope: Scope, owner: int, number: str, /) -> LookupResult | None: ...


def resolve(match: LongestMatch, number: str, ctx: LookupContext) -> LookupResult | None:
    """Search user, usergroup, enterprise, then global; the first scope with a match wins.

    A context field that is None skips that scope; the global directory (owner 0)
    is always searched last.
    """
    owner = ctx.user_id
    if owner is not None and (found := match(Scope.USER, owner, number)) is not None:
        return found
    owner = ctx.usergroup_id
    if owner is not None and (found := match(Scope.USERGROUP, owner, number)) is not None:
        return found
    owner = ctx.tenant_id
    if owner is not None and (found := match(Scope.ENTERPRISE, owner, number)) is not None:
        return found
    return match(Scope.GLOBAL, 0, number)
