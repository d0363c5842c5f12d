"""Database faults the tests inflict: ending other sessions' backends (not a test module)."""

from __future__ import annotations

from typing import Any


async def terminate_backends(
    conn: Any, *, only: str | None = None, spare: str | None = None
) -> int:
    """``pg_terminate_backend`` on every other backend of ``conn``'s database, or only
    those of application ``only``, or all but those of ``spare``; how many ended."""
    ended: int = await conn.fetchval(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND ($1::text IS NULL OR application_name = $1)"
        " AND ($2::text IS NULL OR application_name <> $2)",
        only,
        spare,
    )
    return ended
