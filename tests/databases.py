"""A database of its own, cloned from a template, for one test or one module."""

from __future__ import annotations

import uuid

import asyncpg

from cnamd.store.embedded import EmbeddedPostgres

TEMPLATE = "cnamd_template"  # migrated once per run by conftest's ``pg``
ADMIN_SECONDS = 20.0  # bounds each CREATE / DROP DATABASE: a stall fails well inside the 60 s


class Database:
    """Create a database (from a template) for one test and drop it afterwards."""

    def __init__(self, pg: EmbeddedPostgres, template: str | None) -> None:
        self.pg = pg
        self.template = template
        self.name = "t_" + uuid.uuid4().hex[:12]

    async def __aenter__(self) -> str:
        admin = await asyncpg.connect(self.pg.url("postgres"), timeout=ADMIN_SECONDS)
        try:
            if self.template:
                await admin.execute(
                    f'CREATE DATABASE "{self.name}" TEMPLATE "{self.template}" STRATEGY FILE_COPY',
                    timeout=ADMIN_SECONDS,
                )
            else:
                await admin.execute(f'CREATE DATABASE "{self.name}"', timeout=ADMIN_SECONDS)
        finally:
            await admin.close()
        return self.pg.url(self.name)

    async def __aexit__(self, *_exc: object) -> None:
        admin = await asyncpg.connect(self.pg.url("postgres"), timeout=ADMIN_SECONDS)
        try:
            await admin.execute(
                f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)', timeout=ADMIN_SECONDS
            )
        finally:
            await admin.close()
