"""What the chain's one HTTP client session sends a provider (upstream/chain.py,
upstream/http_json.py): no cookie it was given, since the session carries every
tenant's own account to the same provider and a session cookie set in answer to one
tenant's credentials must not go back with another's; and Basic credentials as the one
Authorization header."""

from __future__ import annotations

from fake_provider import FakeProvider, asking, unguarded_source

from cnamd.upstream.account import Account


async def test_a_cookie_set_for_one_account_is_not_sent_with_another(fake: FakeProvider) -> None:
    source = unguarded_source(fake.port, timeout=5, countries=("+1555",))
    # by name, not 127.0.0.1: a cookie jar keeps no cookie of an IP address's answer
    source["url"] = f"http://localhost:{fake.port}/cnam/{{e164}}"
    source["username"], source["password"] = "deployment", "deployment-secret"
    async with asking(source) as chain:
        asked = len(fake.headers)
        first = await chain.within("+15550009000", 5, "http")
        assert first.name == "Cookie Monster"
        tenant = {"fake": Account(username="tenant-b", password="tenant-b-secret")}
        second = await chain.within("+15550009001", 5, "http", tenant)
        assert second.name == "Fake 9001"
        third = await chain.within("+15550009002", 5, "http")
        assert third.name == "Fake 9002"
    sent = fake.headers[asked:]
    assert len(sent) == 3
    assert all("Cookie" not in headers for headers in sent), sent


async def test_basic_credentials_go_as_the_one_authorization_header(fake: FakeProvider) -> None:
    """``username``/``password`` are sent as Basic (RFC 7617), in place of an
    Authorization header also configured, whatever its case: one header, never two."""
    source = unguarded_source(fake.port, timeout=5, countries=("+1555",))
    source["headers"] = ["authorization: Bearer not-this-one", "X-Account: 42"]
    source["username"], source["password"] = "deployment", "s3cret:with colon"
    async with asking(source) as chain:
        asked = len(fake.headers)
        found = await chain.within("+15550009101", 5, "http")
        assert found.name == "Fake 9101"
    (sent,) = fake.headers[asked:]
    assert fake.auth["+15550009101"] == "Basic ZGVwbG95bWVudDpzM2NyZXQ6d2l0aCBjb2xvbg=="
    assert [k for k in sent if k.lower() == "authorization"] == ["Authorization"]
    assert sent["X-Account"] == "42"
