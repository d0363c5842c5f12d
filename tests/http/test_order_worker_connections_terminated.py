"""The Atmosphere order worker while its pool's connections are terminated again and again.

The worker polls every 50 ms while a loop runs pg_terminate_backend on every
pool connection; afterwards it still works: an order placed then is
provisioned. A worker that died on a connection error would leave it queued.
"""

from __future__ import annotations

import asyncio
import random

import asyncpg
from api_client import Api
from test_atmosphere import JSON, add_numbers, login, numbers, until_provisioned

from cnamd.order_worker import OrderWorker
from cnamd.settings import load
from cnamd.store.pool import APPLICATION_NAME
from db_faults import terminate_backends

SWEEPS = 80  # terminations, 20-50 ms apart


async def test_the_order_worker_outlives_terminated_connections(api: Api, db_url: str) -> None:
    settings = load(environ={}, overrides=["orders.batch_size=10", "orders.poll_interval=0.05"])
    worker = OrderWorker(api.pool, settings)  # type: ignore[arg-type]
    worker.start()
    try:
        admin = await asyncpg.connect(db_url)
        terminated = 0
        try:
            for _ in range(SWEEPS):
                terminated += await terminate_backends(admin, only=APPLICATION_NAME)
                await asyncio.sleep(random.uniform(0.02, 0.05))
        finally:
            await admin.close()
        assert terminated > 0

        session = await login(api)
        digits = await add_numbers(api, 30)
        placed = await api.call(
            "POST",
            "/_rest/v3/my/did/cnam",
            session,
            json={"cnam": "ACME INC", "numbers": numbers(*digits)},
            headers=JSON,
        )
        assert placed.status == 200, placed.body
        await until_provisioned(api, session, placed.body["OrderID"])
    finally:
        await worker.stop()
