"""Every Prometheus metric cnamd exports, defined once (issue: operations).

Label values come from fixed sets so that no request can create a new series.
Hot paths pre-bind their children (``.labels(...)`` once at start-up).

Across ``--workers N`` processes, prometheus_client's multiprocess mode sums
them: the supervisor gives every worker one ``PROMETHEUS_MULTIPROC_DIR``, each
worker's values live in mmap'd files there, and a scrape answered by any
worker merges all of them (``exposition``). Counters and histograms are summed,
including those of workers that have died; each gauge says how it merges
(``multiprocess_mode``, below). The hot paths never write those files per
request: they count in plain ints (``Tally``) flushed once a second.
"""

from __future__ import annotations

import os
import weakref
from bisect import bisect_left
from typing import Any, Protocol

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

#: set by the supervisor for its workers; read by prometheus_client at import
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Sub-millisecond answers need buckets well below the default 5 ms floor.
LOOKUP_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
PROPAGATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

# Label values, all from fixed sets: front sip|http; result hit|miss|invalid|
# anonymous|denied; scope user|usergroup|enterprise|global|upstream|none.

LOOKUPS = Counter(
    "cnamd_lookups",
    "Name lookups answered, by front, result and the scope that answered.",
    ["front", "result", "scope"],
)
LOOKUP_DURATION = Histogram(
    "cnamd_lookup_duration_seconds",
    "Time to answer one lookup, request in to answer out.",
    ["front"],
    buckets=LOOKUP_BUCKETS,
)
SIP_REQUESTS = Counter(
    "cnamd_sip_requests", "SIP requests received, by method and transport.", ["method", "transport"]
)
SIP_RESPONSES = Counter("cnamd_sip_responses", "SIP responses sent, by status code.", ["code"])
SIP_DROPPED = Counter(
    "cnamd_sip_dropped",
    "SIP datagrams or streams dropped without an answer, by reason.",
    ["reason"],
)
RATELIMITED = Counter("cnamd_ratelimited", "Requests refused by the rate limit.", ["front"])
HTTP_REQUESTS = Counter(
    "cnamd_http_requests",
    "HTTP requests, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "cnamd_http_request_duration_seconds",
    "HTTP request duration by route template.",
    ["route"],
    buckets=LOOKUP_BUCKETS,
)
LOOP_LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
LOOP_LAG = Histogram(
    "cnamd_event_loop_lag_seconds",
    "How late a worker's event loop ran a timer due every 20 ms (loop_lag.py): "
    "the wait anything arriving then had. Whole milliseconds; an idle loop reads 0-1 ms.",
    buckets=LOOP_LAG_BUCKETS,
)
# Gauges across workers (multiprocess_mode; "live" drops a dead worker's value):
# every worker holds the whole cache, so entries take the largest count, the
# change id and the load time the most-behind worker (a laggard shows), stale
# and load duration the worst worker, db_up the worst (0 if any worker lost
# the database), pool connections the sum (what PostgreSQL sees).
CACHE_ENTRIES = Gauge(
    "cnamd_cache_entries",
    "Names served from the cache, by scope (workers: the largest).",
    ["scope"],
    multiprocess_mode="livemax",
)
CACHE_LAST_CHANGE_ID = Gauge(
    "cnamd_cache_last_change_id",
    "Id of the last change-log row applied (workers: the most-behind worker).",
    multiprocess_mode="livemin",
)
CACHE_FULL_LOAD_SECONDS = Gauge(
    "cnamd_cache_full_load_seconds",
    "Duration of the last full cache load (workers: the slowest).",
    multiprocess_mode="livemax",
)
CACHE_LAST_FULL_LOAD = Gauge(
    "cnamd_cache_last_full_load_timestamp_seconds",
    "Unix time the cache's last full load finished, or the mapped snapshot was written"
    " (workers: the oldest).",
    multiprocess_mode="livemin",
)
CACHE_PROPAGATION = Histogram(
    "cnamd_cache_propagation_seconds",
    "Commit-to-applied delay of a change.",
    buckets=PROPAGATION_BUCKETS,
)
CACHE_STALE = Gauge(
    "cnamd_cache_stale",
    "1 while serving a snapshot the database has not confirmed (workers: 1 if any).",
    multiprocess_mode="livemax",
)
CACHE_RELOADS = Counter("cnamd_cache_reloads", "Full cache loads, by cause.", ["cause"])
CACHE_FEED_FAILURES = Counter(
    "cnamd_cache_feed_failures",
    "Change-feed failures, each logged and retried on a new connection: database (lost,"
    " hung, refused), internal (an unexpected error), ended (the follower stopped).",
    ["reason"],
)
for _reason in ("database", "internal", "ended"):  # exported at 0 from the start, for alerts
    CACHE_FEED_FAILURES.labels(_reason)
CACHE_SNAPSHOT_CHANGE_ID = Gauge(
    "cnamd_cache_snapshot_change_id",
    "Change id of the snapshot's tail last written by the host's loader.",
    multiprocess_mode="max",
)
DB_UP = Gauge(
    "cnamd_db_up",
    "1 when the database answered the last check (workers: 0 if any lost it).",
    multiprocess_mode="livemin",
)
DB_MODE = Gauge(
    "cnamd_database_mode",
    "1 for what the change feed's database is: primary, or a hot standby it polls"
    " (workers: 1 if any sees it so).",
    ["mode"],
    multiprocess_mode="livemax",
)
DB_MODES = ("primary", "standby")
for _mode in DB_MODES:  # exported at 0 from the start, for alerts and dashboards
    DB_MODE.labels(_mode)
DB_REPLAY_LAG = Gauge(
    "cnamd_database_replay_lag_seconds",
    "How far the hot standby the feed follows is behind its primary; 0 on a primary"
    " (workers: the largest).",
    multiprocess_mode="livemax",
)
CHANGE_LOG_PRUNED = Counter(
    "cnamd_change_log_pruned", "Change-log rows deleted by retention (database.change_log_*)."
)


def publish_database_mode(mode: str) -> None:
    """cnamd_database_mode: 1 for ``mode``, 0 for the other."""
    for each in DB_MODES:
        DB_MODE.labels(each).set(1 if each == mode else 0)


DB_POOL_CONNECTIONS = Gauge(
    "cnamd_db_pool_connections",
    "Database pool connections by state (workers: summed).",
    ["state"],
    multiprocess_mode="livesum",
)
AUTH_FAILURES = Counter("cnamd_auth_failures", "Requests refused for bad or missing credentials.")
CONFIG_RELOAD_OK = Gauge(
    "cnamd_config_last_reload_successful",
    "0 when the last SIGHUP found an invalid configuration (the running one stays).",
    multiprocess_mode="livemin",
)
BUILD_INFO = Gauge(
    "cnamd_build_info",
    "Always 1; the version label says which cnamd runs.",
    ["version"],
    multiprocess_mode="livemax",
)


# -- hot-path batching -------------------------------------------------------
#
# prometheus_client takes a lock on every inc() (~0.4 us) and observe() (~2-4 us
# with the bucket scan): 8.5% of a SIP dip's CPU in the Kamailio anchor profile
# (bench/README.md). The hot paths count in plain ints instead, and
# flush_tallies() adds them to the real metrics every second and before every
# /metrics scrape, so an exposition is at most a second behind.

_TALLIES: weakref.WeakSet[Tally | TallyHistogram] = weakref.WeakSet()


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Tally:
    """A count not yet added to its counter child; ``n += 1`` on the hot path."""

    __slots__ = ("__weakref__", "child", "n")

    def __init__(self, child: _Counter) -> None:
        self.child = child
        self.n = 0
        _TALLIES.add(self)

    def __del__(self) -> None:
        """A tally dropped with its owner (a Dip, say) still adds what it counted."""
        try:
            self.flush()
        except Exception:  # at interpreter exit, module globals may be gone already
            return

    def inc(self, amount: int = 1) -> None:
        """For call sites written against a counter child (off the common path)."""
        self.n += amount

    def flush(self) -> None:
        n, self.n = self.n, 0
        if n:
            self.child.inc(n)


class TallyHistogram:
    """Observations bucketed locally (``observe`` is a bisect and two adds).

    ``flush`` adds the counts to the histogram child's own per-bucket values,
    which prometheus_client keeps non-cumulative (one increment per observation,
    in the first bucket that holds it); tests/test_metrics.py checks that the
    exposition equals what ``observe`` would have produced.
    """

    __slots__ = ("__weakref__", "bounds", "child", "counts", "total")

    def __init__(self, child: Any, bounds: tuple[float, ...]) -> None:
        self.child = child
        self.bounds = (*bounds, float("inf"))
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        _TALLIES.add(self)

    def __del__(self) -> None:
        try:
            self.flush()
        except Exception:
            return

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def flush(self) -> None:
        counts, self.counts = self.counts, [0] * len(self.bounds)
        total, self.total = self.total, 0.0
        if any(counts):
            for bucket, n in zip(self.child._buckets, counts, strict=True):
                if n:
                    bucket.inc(n)
            self.child._sum.inc(total)


def flush_tallies() -> None:
    """Move every hot-path tally into its metric (every second, and before a scrape)."""
    for tally in list(_TALLIES):
        tally.flush()


def multiprocess() -> bool:
    """True in a worker: its metrics live in the shared directory's files."""
    return MULTIPROC_ENV in os.environ


def exposition() -> bytes:
    """The text exposition for ``/metrics``: every worker's samples merged, or ours alone."""
    flush_tallies()
    registry = REGISTRY
    if multiprocess():
        registry = CollectorRegistry()
        # untyped upstream; in mypyc's build environment (no prometheus_client)
        # it is Any and the ignore is unused: both are fine
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call, unused-ignore]
    body: bytes = generate_latest(registry)
    return body


HTTP_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


class HttpTallies:
    """``cnamd_http_requests_total`` and the duration histogram, bound once per label set.

    Routes are templates and statuses three-digit codes, so the table is
    bounded; any method outside ``HTTP_METHODS`` counts as ``other``.
    """

    __slots__ = ("_durations", "_requests")

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, int], Tally] = {}
        self._durations: dict[str, TallyHistogram] = {}

    def record(self, route: str, method: str, status: int, seconds: float) -> None:
        if method not in HTTP_METHODS:
            method = "other"
        key = (route, method, status)
        tally = self._requests.get(key)
        if tally is None:
            tally = self._requests[key] = Tally(HTTP_REQUESTS.labels(route, method, str(status)))
        tally.n += 1
        duration = self._durations.get(route)
        if duration is None:
            child = HTTP_DURATION.labels(route)
            duration = self._durations[route] = TallyHistogram(child, LOOKUP_BUCKETS)
        duration.observe(seconds)


HTTP = HttpTallies()
HTTP_CONNECTIONS_REFUSED = Counter(
    "cnamd_http_connections_refused",
    "HTTP connections closed as they were accepted: the worker held http.max_connections.",
)
HTTP_FRONT_HANDOVERS = Counter(
    "cnamd_http_front_handovers",
    "HTTP connections the lookup front handed to aiohttp's request handling, at the first"
    " request it does not answer itself (http/front.py).",
)

# Upstream CNAM sources (issue #17); children pre-created per configured source.
UPSTREAM_REQUESTS = Counter(
    "cnamd_upstream_requests",
    "Upstream source requests by source and result (hit, miss, error, timeout, breaker-open,"
    " over-budget, rate-limited, budget-unavailable; the last four were not sent).",
    ["source", "result"],
)
UPSTREAM_DURATION = Histogram(
    "cnamd_upstream_request_duration_seconds",
    "Time one upstream request took, by source.",
    ["source"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
UPSTREAM_BUDGET_LEFT = Gauge(
    "cnamd_upstream_budget_left",
    "Paid requests left today per source, the deployment's budget as each process last"
    " reserved from it (workers: the smallest).",
    ["source"],
    multiprocess_mode="livemin",
)
UPSTREAM_BUDGET = Gauge(
    "cnamd_upstream_budget_daily",
    "The configured daily budget of paid requests per source (-1: none).",
    ["source"],
    multiprocess_mode="livemax",
)
UPSTREAM_BREAKER = Gauge(
    "cnamd_upstream_breaker_state",
    "Circuit breaker per source: 0 closed, 1 half-open, 2 open (workers: the worst).",
    ["source"],
    multiprocess_mode="livemax",
)
UPSTREAM_LATE = Counter(
    "cnamd_upstream_late",
    "Upstream answers that came after the front's deadline (answered as a miss, cached).",
    ["front"],
)
UPSTREAM_SHARED = Counter(
    "cnamd_upstream_shared_waits",
    "Upstream misses another worker of the host was already asking for: waited for its"
    " answer through the change feed (answered) or until the claim lapsed (expired).",
    ["result"],
)
UPSTREAM_WRITES = Counter(
    "cnamd_upstream_writes",
    "Upstream answers written to PostgreSQL (ok), or dropped after the database failed.",
    ["result"],
)
