"""The per-process overlay: live changes applied since the static base was built.

Kept per namespace (scope, owner), so a lookup in a namespace nobody changed
costs one dict miss, and a namespace's longest overlay match probes only the
key lengths that namespace actually holds (a handful), not all fifteen.
"""

from __future__ import annotations

from collections.abc import Iterator

# A tombstone: the key is deleted here although the base still holds it.
DELETED = None


class Pending:
    """One namespace's changes: key -> name, or DELETED over a base entry."""

    __slots__ = ("_length_counts", "lengths", "names")

    def __init__(self) -> None:
        self.names: dict[str, str | None] = {}
        # Lengths of keys holding a name, longest first: the only lengths worth probing.
        self.lengths: tuple[int, ...] = ()
        self._length_counts: dict[int, int] = {}

    def longest_put(self, number: str, longer_than: int) -> tuple[str, str] | None:
        """Longest key holding a name here that prefixes ``number`` and beats ``longer_than``."""
        names = self.names
        size = len(number)
        for length in self.lengths:
            if length <= longer_than:
                return None
            if length <= size:
                key = number[:length]
                name = names.get(key)
                if name is not None:
                    return key, name
        return None

    def set(self, key: str, name: str | None) -> None:
        """Record ``name`` (or DELETED) for ``key``."""
        old = self.names.get(key)
        self.names[key] = name
        if old is None and name is not None:
            self._count(len(key), 1)
        elif old is not None and name is None:
            self._count(len(key), -1)

    def drop(self, key: str) -> None:
        """Forget ``key`` here, so the base shows through again."""
        if self.names.pop(key, None) is not None:
            self._count(len(key), -1)

    def _count(self, length: int, step: int) -> None:
        counts = self._length_counts
        before = counts.get(length, 0)
        counts[length] = before + step
        if before == 0 or before + step == 0:
            if not counts[length]:
                del counts[length]
            self.lengths = tuple(sorted(counts, reverse=True))


class Overlay:
    """Pending changes of every namespace, by scope then owner."""

    __slots__ = ("by_scope", "size")

    def __init__(self, scopes: int) -> None:
        self.by_scope: tuple[dict[int, Pending], ...] = tuple({} for _ in range(scopes))
        self.size = 0

    def pending(self, scope: int, owner: int) -> Pending:
        """The namespace's Pending, created on first use."""
        owners = self.by_scope[scope]
        found = owners.get(owner)
        if found is None:
            found = owners[owner] = Pending()
        return found

    def set(self, scope: int, owner: int, key: str, name: str | None) -> None:
        """Record a put (name) or a tombstone (DELETED) for one key."""
        pending = self.pending(scope, owner)
        self.size += key not in pending.names
        pending.set(key, name)

    def drop(self, scope: int, owner: int, key: str) -> None:
        """Remove a key's record, if any; drop the namespace when it becomes empty."""
        owners = self.by_scope[scope]
        pending = owners.get(owner)
        if pending is None or key not in pending.names:
            return
        pending.drop(key)
        self.size -= 1
        if not pending.names:
            del owners[owner]

    def records(self) -> Iterator[tuple[int, int, str, str | None]]:
        """Every record as (scope, owner, key, name or DELETED)."""
        for scope, owners in enumerate(self.by_scope):
            for owner, pending in owners.items():
                for key, name in pending.names.items():
                    yield scope, owner, key, name
