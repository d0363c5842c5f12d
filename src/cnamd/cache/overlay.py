"""The per-process overlay: live changes applied since the static base was built.

Kept per namespace (scope, owner), so a lookup in a namespace nobody changed
costs one dict miss. Within a namespace every record is also filed under the
"stems" (``+`` and six digits) of the numbers it can affect, so a lookup whose
stem holds no record -- about 19 in 20 with 20k changes pending -- knows with one
more dict probe that the base alone answers it, and one whose stem does holds
the one or two keys worth checking.
"""

from __future__ import annotations

from collections.abc import Iterator

# A tombstone: the key is deleted here although the base still holds it.
DELETED = None
# "+" and six digits: a number's stem.
STEM = 7
# Keys shorter than "+" and four digits would cover 1,000+ stems each; they are
# counted apart instead, and any of them sends every lookup down the careful path.
_SHORTEST_STEMMED = STEM - 2


class Pending:
    """One namespace's records: key -> name, or DELETED over a base entry."""

    __slots__ = ("names", "short", "stems")

    def __init__(self) -> None:
        self.names: dict[str, str | None] = {}
        # Stem -> keys of the records that are a prefix of numbers with that stem.
        self.stems: dict[str, list[str]] = {}
        # Records with keys under four digits.
        self.short = 0

    def may_affect(self, number: str) -> bool:
        """False when no record here can change the base's answer for ``number``."""
        return bool(self.short) or len(number) < STEM or number[:STEM] in self.stems

    def longest_put(self, number: str, longer_than: int) -> tuple[str, str] | None:
        """Longest key holding a name here that prefixes ``number`` and beats ``longer_than``."""
        names = self.names
        best = ""
        for key in self.stems.get(number[:STEM], ()):
            if len(key) > len(best) and number.startswith(key) and names[key] is not None:
                best = key
        if len(best) <= longer_than:
            best = ""
            if self.short or len(number) < STEM:
                for length in range(min(len(number), STEM - 1), longer_than, -1):
                    if names.get(number[:length]) is not None:
                        best = number[:length]
                        break
        name = names.get(best) if best else None
        return None if name is None else (best, name)

    def set(self, key: str, name: str | None) -> None:
        """Record ``name`` (or DELETED) for ``key``."""
        if key not in self.names:
            self._file(key, add=True)
        self.names[key] = name

    def drop(self, key: str) -> None:
        """Forget ``key`` here, so the base shows through again."""
        if key in self.names:
            del self.names[key]
            self._file(key, add=False)

    def _file(self, key: str, *, add: bool) -> None:
        if len(key) < _SHORTEST_STEMMED:
            self.short += 1 if add else -1
            return
        stems = self.stems
        missing = STEM - len(key)
        covered = (
            (key + f"{tail:0{missing}d}" for tail in range(10**missing))
            if missing > 0
            else (key[:STEM],)
        )
        for stem in covered:
            if add:
                stems.setdefault(stem, []).append(key)
            else:
                keys = stems[stem]
                keys.remove(key)
                if not keys:
                    del stems[stem]


class Overlay:
    """Pending changes of every namespace, by scope then owner."""

    __slots__ = ("by_scope", "size")

    def __init__(self, scopes: int) -> None:
        self.by_scope: tuple[dict[int, Pending], ...] = tuple({} for _ in range(scopes))
        self.size = 0

    def set(self, scope: int, owner: int, key: str, name: str | None) -> None:
        """Record a put (name) or a tombstone (DELETED) for one key."""
        owners = self.by_scope[scope]
        pending = owners.get(owner)
        if pending is None:
            pending = owners[owner] = Pending()
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
