"""The scope chain: which namespaces a lookup searches, and in which order.

DESIGN.md "Names live in scopes": the asker's user scope, then its usergroup,
then its enterprise, then the global directory; the first scope with any match
wins. This module owns that order and who is skipped; ``NameCache.lookup``
(cache/trie.py) walks it and owns "longest key within one namespace".

Why not a ``resolve(match, number, ctx)`` that calls the store once per scope:
on this hardware a Python call costs ~0.1 us, five of them a sixth of a lookup
(bench/README.md). Handing the chain over as one tuple costs nothing measurable.
"""

from __future__ import annotations

from typing import Final

from cnamd.model import LookupContext, Scope

# Plain ints, not the IntEnum members: the lookup does arithmetic with them, and
# IntEnum operands cost ~70 ns per operation there.
_USER: Final = int(Scope.USER)
_USERGROUP: Final = int(Scope.USERGROUP)
_ENTERPRISE: Final = int(Scope.ENTERPRISE)

# Searched last, for everyone, whatever the context.
GLOBAL_NAMESPACE: Final = (int(Scope.GLOBAL), 0)


def private_chain(ctx: LookupContext) -> tuple[tuple[int, int | None], ...]:
    """(scope value, owner) searched before the global directory, most specific first.

    An owner of None means the asker has no such scope: skip it.
    """
    return (_USER, ctx.user_id), (_USERGROUP, ctx.usergroup_id), (_ENTERPRISE, ctx.tenant_id)
