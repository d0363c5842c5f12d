"""The deployment's daily budget (``upstream/budget.py``) against a real PostgreSQL: two
ledgers stand for two processes spending one source's budget at once."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from cnamd.store.pool import open_pool
from cnamd.upstream.budget import Ledger, block_for
from cnamd.upstream.source import Result
from test_daemon import free_port

pytestmark = pytest.mark.timeout(60)


async def test_two_processes_never_spend_more_than_the_budget(db_url: str) -> None:
    budget = 250  # blocks of 2: the bound on what is reserved and not spent
    pools = [await open_pool(db_url, min_size=1, max_size=4, timeout=5) for _ in range(2)]
    try:
        ledgers = [Ledger(pool, "acme", budget, timeout=5) for pool in pools]
        results = await asyncio.gather(*(ledgers[i % 2].acquire() for i in range(400)))
        spent = results.count(None)
        assert set(results) == {None, Result.OVER_BUDGET}
        unspent = sum(ledger.held for ledger in ledgers)
        assert spent + unspent == budget and unspent <= 2 * (block_for(budget) - 1)
        assert ledgers[0].left == ledgers[0].held
        # a process stopping gives its rest back: the other may spend it (after its pause)
        held = ledgers[0].held
        await ledgers[0].give_back()
        conn = await asyncpg.connect(db_url)
        try:
            reserved = await conn.fetchval("SELECT spent FROM upstream_budget WHERE source='acme'")
        finally:
            await conn.close()
        assert reserved == budget - held
    finally:
        for pool in pools:
            await pool.close()


async def test_an_unreachable_ledger_sends_nothing() -> None:
    url = f"postgresql://cnamd@127.0.0.1:{free_port()}/nowhere"
    pool = await open_pool(url, min_size=0, max_size=1, timeout=0.5)
    try:
        ledger = Ledger(pool, "acme", 1000, timeout=0.5)
        assert await ledger.acquire() is Result.BUDGET_UNAVAILABLE
        assert await ledger.acquire() is Result.BUDGET_UNAVAILABLE  # not asked again at once
    finally:
        await pool.close()
