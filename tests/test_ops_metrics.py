"""/metrics of a real daemon, scraped over HTTP and read with prometheus_client's parser:
every family an operator needs is there, and each kind of SIP and HTTP request moves
the counters and histograms it should, in one process and summed over two workers."""

from __future__ import annotations

from pathlib import Path

from sip_peer import display_name, parse_reply, request

from ops_daemon import (
    Daemon,
    eventually,
    families,
    http_get,
    invite,
    sip_exchange,
    value,
)

# issue 4, item 1: all of these, with live values, on every daemon
FAMILIES = {
    "cnamd_lookups_total",
    "cnamd_lookup_duration_seconds_bucket",
    "cnamd_sip_requests_total",
    "cnamd_sip_responses_total",
    "cnamd_sip_dropped_total",
    "cnamd_ratelimited_total",
    "cnamd_http_requests_total",
    "cnamd_http_request_duration_seconds_bucket",
    "cnamd_cache_entries",
    "cnamd_cache_last_change_id",
    "cnamd_cache_full_load_seconds",
    "cnamd_cache_last_full_load_timestamp_seconds",
    "cnamd_cache_propagation_seconds_bucket",
    "cnamd_cache_stale",
    "cnamd_db_up",
    "cnamd_db_pool_connections",
    "cnamd_auth_failures_total",
    "cnamd_build_info",
    "cnamd_config_last_reload_successful",
}
LOOKUP_ROUTE = "/v1/lookup/{number}"


def test_counters_and_histograms_move_for_each_kind_of_sip_and_http_request(
    tmp_path: Path, db_url: str
) -> None:
    daemon = Daemon(tmp_path, database_url=db_url)
    try:
        daemon.wait_ready()
        before = daemon.scrape()
        assert families(before) >= FAMILIES, FAMILIES - families(before)
        port = daemon.sip_port

        def status(data: bytes, *, tcp: bool = False) -> int:
            return parse_reply(sip_exchange(port, data, tcp=tcp)).status

        hit = parse_reply(sip_exchange(port, invite(port, "+492216698712", branch="z9hG4bK-h")))
        assert (hit.status, display_name(hit.one("Contact"))) == (302, "John Doe")
        assert status(invite(port, "+492216698712", branch="z9hG4bK-t", tcp=True), tcp=True) == 302
        assert status(invite(port, "+15555550100", branch="z9hG4bK-m")) == 404
        assert status(invite(port, "nonsense", branch="z9hG4bK-i")) == 400
        private = invite(port, "+492216698712", branch="z9hG4bK-p", extra=("Privacy: id",))
        assert status(private) == 302
        uri = f"sip:+492216698700@127.0.0.1:{port}"
        via = "SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-o;rport"  # answer where it came from
        assert status(request("OPTIONS", uri, via=via, call_id="o1")) == 200
        assert status(request("SUBSCRIBE", uri, via=via, call_id="s1")) == 405
        assert status(request("INVITE", uri, via=via, call_id="x1", max_forwards="0")) == 483
        assert sip_exchange(port, b"hello\r\n\r\n", expect_answer=False) == b""

        base = daemon.base + "/v1/lookup/"
        assert http_get(base + "+492216698712?tenant=demo")[0] == 200
        assert http_get(base + "+15555550100?tenant=demo")[0] == 404
        assert http_get(base + "nonsense?tenant=demo")[0] == 400
        bad_key = {"Authorization": "Bearer nokey.nosecret"}
        assert http_get(base + "+492216698712", bad_key)[0] == 401
        assert http_get(daemon.base + "/no/such/route")[0] == 404

        after = daemon.scrape()

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        requests = "cnamd_sip_requests_total"
        assert delta(requests, method="INVITE", transport="udp") == 5
        assert delta(requests, method="INVITE", transport="tcp") == 1
        assert delta(requests, method="OPTIONS", transport="udp") == 1
        assert delta(requests, method="other", transport="udp") == 1
        responses = {
            code: delta("cnamd_sip_responses_total", code=code)
            for code in ("200", "302", "400", "404", "405", "483")
        }
        assert responses == {"200": 1, "302": 3, "400": 1, "404": 1, "405": 1, "483": 1}
        assert delta("cnamd_sip_dropped_total", reason="unparseable") == 1

        sip = {"front": "sip"}
        assert delta("cnamd_lookups_total", **sip, result="hit", scope="enterprise") == 2
        assert delta("cnamd_lookups_total", **sip, result="miss") == 1
        assert delta("cnamd_lookups_total", **sip, result="invalid") == 1
        assert delta("cnamd_lookups_total", **sip, result="anonymous") == 1
        # the histogram times every directory lookup (not the privacy answer, which asks none)
        assert delta("cnamd_lookup_duration_seconds_count", **sip) == 4
        assert delta("cnamd_lookup_duration_seconds_bucket", **sip, le="+Inf") == 4
        assert delta("cnamd_lookup_duration_seconds_sum", **sip) > 0

        http = {"front": "http"}
        assert delta("cnamd_lookups_total", **http, result="hit", scope="enterprise") == 1
        assert delta("cnamd_lookups_total", **http, result="miss") == 1
        assert delta("cnamd_lookups_total", **http, result="invalid") == 1
        assert delta("cnamd_auth_failures_total") == 1
        http_requests = "cnamd_http_requests_total"
        for code in ("200", "404", "400", "401"):
            assert delta(http_requests, route=LOOKUP_ROUTE, method="GET", status=code) == 1
        assert delta(http_requests, route="unmatched", method="GET", status="404") == 1
        assert delta("cnamd_http_request_duration_seconds_count", route=LOOKUP_ROUTE) == 4
        assert value(after, "cnamd_build_info") == 1
        assert value(after, "cnamd_db_up") == 1
        assert value(after, "cnamd_cache_stale") == 0
        assert value(after, "cnamd_cache_entries", scope="enterprise") == 3
        assert value(after, "cnamd_cache_last_change_id") > 0
        assert value(after, "cnamd_cache_last_full_load_timestamp_seconds") > 1.7e9
        assert value(after, "cnamd_db_pool_connections", state="idle") >= 1
    finally:
        daemon.stop()


def test_two_workers_scrape_the_sum_of_what_both_served(tmp_path: Path, db_url: str) -> None:
    daemon = Daemon(tmp_path, database_url=db_url, workers=2)
    try:
        daemon.wait_ready()
        eventually(lambda: len(daemon.workers()) == 2, 20, "two workers")
        eventually(lambda: value(daemon.scrape(), "cnamd_cache_stale") == 0, 20, "confirmed")
        before = daemon.scrape()
        port, dips, lookups = daemon.sip_port, 40, 30
        for i in range(dips):
            data = invite(port, "+492216698712", branch=f"z9hG4bK-w{i}", tcp=i % 4 == 0)
            assert parse_reply(sip_exchange(port, data, tcp=i % 4 == 0)).status == 302
        for _ in range(lookups):
            status, _ = http_get(daemon.base + "/v1/lookup/+492216698712?tenant=demo")
            assert status == 200

        def delta(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
            return value(samples, name, **labels) - value(before, name, **labels)

        def totals() -> tuple[float, ...]:
            now = daemon.scrape()
            return (
                delta(now, "cnamd_sip_requests_total", method="INVITE"),
                delta(now, "cnamd_sip_responses_total", code="302"),
                delta(now, "cnamd_lookups_total", front="sip", result="hit"),
                delta(now, "cnamd_lookup_duration_seconds_count", front="sip"),
                delta(now, "cnamd_lookups_total", front="http", result="hit"),
                delta(
                    now,
                    "cnamd_http_requests_total",
                    route=LOOKUP_ROUTE,
                    method="GET",
                    status="200",
                ),
                delta(now, "cnamd_http_request_duration_seconds_count", route=LOOKUP_ROUTE),
            )

        want = (dips, dips, dips, dips, lookups, lookups, lookups)
        # a worker adds what it counted once a second: wait for both, then it must stay put
        eventually(lambda: totals() == want, 10, f"totals {want}, last {totals()}")
        samples = daemon.scrape()
        # gauges merge per their mode: both workers hold the same cache and one build
        assert value(samples, "cnamd_cache_entries", scope="enterprise") == 3
        assert value(samples, "cnamd_build_info") == 1
        assert value(samples, "cnamd_db_up") == 1
        # each worker's pool counts: livesum over two pools of at least one connection
        assert value(samples, "cnamd_db_pool_connections") >= 2
    finally:
        daemon.stop()
