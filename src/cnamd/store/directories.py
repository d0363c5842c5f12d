"""SQL for what a desk phone's directory lists: the names of one asker's private scopes.

A name search or a phone-book export reads PostgreSQL, not the cache, because
it needs what the cache does not keep: which keys are prefix blocks (a phone
can only match and dial whole numbers) and an order by name. The cache's trie
is keyed by number; finding names by their text there means walking entries,
and ``NameCache.entries()`` walks every namespace. With 1M names in one
enterprise (bench/bench_phone_directory.py, 2-core VM): a search here takes
p50 312-441 ms (4- and 2-letter terms), an export of 2000 names 1.0 s, and
one walk of the cache 4.1 s. Per-call lookups by number still come from the
cache (http/phones.py). An index on the names would cut the search further;
it needs a migration, not made here.
"""

from __future__ import annotations

import asyncpg

from cnamd.model import LookupContext

__all__ = ["visible_numbers"]

# A row is hidden by a row for the same key in a more specific scope of the same
# asker (DESIGN.md "Names live in scopes": user, then usergroup, then enterprise).
_RANK = "CASE {t}.scope WHEN 'user' THEN 0 WHEN 'usergroup' THEN 1 ELSE 2 END"
_MINE = (
    "(({t}.scope = 'user' AND {t}.owner_id = $1)"
    " OR ({t}.scope = 'usergroup' AND {t}.owner_id = $2)"
    " OR ({t}.scope = 'enterprise' AND {t}.owner_id = $3))"
)
_VISIBLE = (
    "SELECT e.key, e.name FROM cnam_entries e"
    f" WHERE e.approval = 'approved' AND NOT e.is_prefix AND {_MINE.format(t='e')}"
    "  AND ($4::text IS NULL OR strpos(' ' || lower(e.name), ' ' || $4) > 0)"
    "  AND NOT EXISTS (SELECT 1 FROM cnam_entries o"
    f"   WHERE o.key = e.key AND o.approval = 'approved' AND {_MINE.format(t='o')}"
    f"   AND {_RANK.format(t='o')} < {_RANK.format(t='e')})"
    " ORDER BY lower(e.name), e.key LIMIT $5"
)


async def visible_numbers(
    conn: asyncpg.Connection, ctx: LookupContext, term: str | None, limit: int
) -> list[tuple[str, str]]:
    """Up to ``limit`` (number, name) pairs in name order: the whole numbers held in
    ``ctx``'s user, usergroup and enterprise scopes, each with its most specific
    scope's name.

    ``term`` (lower case) keeps the names it begins, or begins a word of:
    ``do`` finds "John Doe". The global directory is left out on purpose: it
    answers "who is calling from this number", and listing or searching it by
    name would turn every published number into a reverse directory.
    """
    rows = await conn.fetch(
        _VISIBLE, ctx.user_id, ctx.usergroup_id, ctx.tenant_id, term or None, limit
    )
    return [(row["key"], row["name"]) for row in rows]
