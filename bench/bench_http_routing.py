#!/usr/bin/env python3
"""What routing through the API families' sub-applications costs a request (issue 16 item 3).

    .venv/bin/python bench/bench_http_routing.py [--requests 2000] [--rounds 7]

In process, no socket, no database: the real application (``make_app``, a
Directory that is not serving) handles mocked requests through aiohttp's
``Application._handle`` -- the router, the error middleware and the handler --
which is all that changes when the families are sub-applications. Every
request below ends before the database: ``/healthz`` (the main application),
then an answer or an error from a family's sub-application and an unmatched
path. Prints this process's CPU microseconds per request (``process_time``,
so that other processes on a shared machine count less), best and median
round.

To compare with the application before the families were sub-applications,
run the same script with ``PYTHONPATH`` pointing at that commit's ``src``
(``git archive 912fad8 src | tar -x -C /tmp/old``; ``PYTHONPATH=/tmp/old/src``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from aiohttp.test_utils import make_mocked_request

import cnamd
from cnamd.cache.directory import Directory
from cnamd.http.app import make_app
from cnamd.settings import load

PATHS = (
    ("GET", "/healthz"),  # main application: 200
    ("GET", "/v1/lookup/+12125550100"),  # lookup family: 401 (no key, source not trusted)
    ("GET", "/v3/phone/+12125550100?format=pbx"),  # OpenCNAM family: 401, empty body
    ("GET", "/v2/cnams"),  # Flowroute family: 401 in its shape
    ("GET", "/api/operator/keys"),  # provisioning family: 401
    ("GET", "/no/such/route"),  # no route: 404
)


class Ready:
    def readiness(self) -> tuple[int, dict[str, Any]]:
        return 200, {"status": "ready"}

    def metrics_extra(self) -> bytes:
        return b""


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    # failed logins are not what is measured: a budget they never exhaust (no 429s)
    budget = ["http.auth_failure_burst=1000000", "http.auth_failure_rate=1000000"]
    app = make_app(load(environ={}, overrides=budget), Directory(), Ready())
    app.freeze()
    print(f"cnamd from {cnamd.__file__}")
    for method, path in PATHS:
        status = (await app._handle(make_mocked_request(method, path, app=app))).status
        rounds = []
        for _ in range(args.rounds):
            requests = [make_mocked_request(method, path, app=app) for _ in range(args.requests)]
            started = time.process_time()
            for request in requests:
                await app._handle(request)
            rounds.append((time.process_time() - started) / args.requests * 1e6)
        print(
            f"{method} {path:40} {status}  best {min(rounds):6.1f} us"
            f"  median {statistics.median(rounds):6.1f} us"
        )


if __name__ == "__main__":
    asyncio.run(main())
