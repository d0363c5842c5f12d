"""The upstream pieces that need no peer: the name rule, URL templates, JSON pointers,
the guard (breaker, budget, rate) and the sources' settings."""

from __future__ import annotations

import json

import pytest

from cnamd.errors import ConfigError, InvalidRequest
from cnamd.settings import SourceSettings, load
from cnamd.upstream.account import Account, parse
from cnamd.upstream.guard import Breaker, Guard
from cnamd.upstream.http_json import expand, pointed
from cnamd.upstream.source import Result, clean_name, covers


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("John Doe", "John Doe"),
        ("  SMITH   JOHN\tANTHONY  ", "SMITH JOHN ANTH"),
        ("WIRELESS CALLER", "WIRELESS CALLER"),
        ("Jos\u00e9", None),
        ("<html>", None),
        ("", None),
        ("   ", None),
        (42, None),
        (None, None),
        (["x"], None),
    ],
)
def test_upstream_names_follow_the_name_rule_or_are_no_name(
    raw: object, cleaned: str | None
) -> None:
    assert clean_name(raw, 15) == cleaned


def test_url_templates_read_the_number_four_ways() -> None:
    template = "https://x/{number}/{e164}/{digits}/{national}"
    assert (
        expand(template, "+12125550001")
        == "https://x/%2B12125550001/+12125550001/12125550001/2125550001"
    )
    assert expand("{national}", "+492216698712") == "2216698712"


def test_json_pointers_reach_nested_names() -> None:
    doc = {"data": {"caller_name": {"caller_name": "ACME"}}, "list": [{"a/b": "slash"}]}
    assert pointed(doc, "/data/caller_name/caller_name") == "ACME"
    assert pointed(doc, "/list/0/a~1b") == "slash"
    assert pointed(doc, "/data/missing") is None
    assert pointed(doc, "/list/7") is None
    assert pointed("text", "/name") is None


def test_countries_select_the_numbers_a_source_is_asked_for() -> None:
    assert covers(SourceSettings(name="a", url="http://x", countries=("+1",)), "+12125550001")
    assert not covers(SourceSettings(name="a", url="http://x", countries=("+1",)), "+4930123")
    assert covers(SourceSettings(name="a", url="http://x"), "+4930123")


def test_the_breaker_opens_then_lets_one_probe_through(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("cnamd.upstream.guard.time.monotonic", lambda: now[0])
    guard = Guard(SourceSettings(name="a", url="http://x", breaker_errors=2, breaker_reset=5))
    for _ in range(2):
        assert guard.admit() is None
        guard.done(Result.TIMEOUT)
    assert guard.state is Breaker.OPEN
    assert guard.admit() is Result.BREAKER_OPEN
    now[0] += 5
    assert guard.admit() is None  # the probe
    assert guard.state is Breaker.HALF_OPEN
    assert guard.admit() is Result.BREAKER_OPEN  # one probe at a time
    guard.done(Result.ERROR)
    assert guard.state is Breaker.OPEN  # the probe failed: open again
    now[0] += 5
    assert guard.admit() is None
    guard.done(Result.MISS)  # any answer closes it
    assert guard.state is Breaker.CLOSED


def test_budget_and_rate_refuse_without_spending(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("cnamd.upstream.guard.time.monotonic", lambda: now[0])
    budget = Guard(SourceSettings(name="a", url="http://x", daily_budget=2))
    assert [budget.admit() for _ in range(3)] == [None, None, Result.OVER_BUDGET]
    assert budget.budget_left == 0
    rate = Guard(SourceSettings(name="a", url="http://x", rate=2))
    assert [rate.admit() for _ in range(3)] == [None, None, Result.RATE_LIMITED]
    now[0] += 0.5
    assert rate.admit() is None


def sources(value: object) -> list[str]:
    return ["upstream.sources=" + json.dumps(value)]


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ([{"url": "http://x"}], "upstream.sources[0].name"),
        ([{"name": "A B", "url": "http://x"}], "upstream.sources[0].name"),
        ([{"name": "a"}], "upstream.sources[0].url"),
        ([{"name": "a", "url": "ftp://x"}], "upstream.sources[0].url"),
        ([{"name": "a", "kind": "sip", "url": "http://x"}], "upstream.sources[0].url"),
        ([{"name": "a", "kind": "ldap", "url": "http://x"}], "upstream.sources[0].kind"),
        ([{"name": "a", "url": "http://x", "countries": ["1"]}], "upstream.sources[0].countries"),
        ([{"name": "a", "url": "http://x", "timeout": 0}], "upstream.sources[0].timeout"),
        (
            [{"name": "a", "url": "http://x", "no_name_statuses": [99]}],
            "upstream.sources[0].no_name_statuses",
        ),
        ([{"name": "a", "url": "http://x", "colour": "red"}], "upstream.sources[0].colour"),
        ([{"name": "a", "url": "http://x"}, {"name": "a", "url": "http://y"}], "upstream.sources"),
        ({"name": "a"}, "upstream.sources"),
    ],
)
def test_bad_sources_stop_start_up_naming_the_setting(value: object, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(environ={}, overrides=sources(value))
    assert caught.value.field == field


def test_secrets_stay_out_of_the_settings_repr() -> None:
    settings = load(
        environ={},
        overrides=sources(
            [{"name": "a", "url": "http://x", "auth_token": "t0ps3cret", "headers": ["X-Key: k3y"]}]
        ),
    )
    assert settings.upstream.sources[0].auth_token == "t0ps3cret"
    assert "t0ps3cret" not in repr(settings) and "k3y" not in repr(settings)


def test_a_tenants_account_replaces_every_credential_and_never_shows_them() -> None:
    deployment = SourceSettings(
        name="telnyx",
        kind="http-json",
        url="https://x/{e164}",
        username="ops",
        password="ops-pass",
        headers=("Authorization: Bearer ops-key",),
    )
    account = parse(deployment, {"headers": ["Authorization:Bearer t-key"]}, "accounts.telnyx")
    used = account.apply(deployment)
    assert (used.headers, used.username, used.password) == (
        ("Authorization: Bearer t-key",),
        "",
        "",
    )
    assert "t-key" not in repr(account) and "t-key" not in repr(used)
    assert Account.from_json(json.loads(json.dumps(account.as_json()))) == account
    with pytest.raises(InvalidRequest) as refused:
        parse(deployment, {"auth_token": "x"}, "accounts.telnyx")
    assert refused.value.field == "accounts.telnyx.auth_token"
