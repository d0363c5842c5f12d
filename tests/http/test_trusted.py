"""http.trusted_networks: answers memoized per source, forgotten when SIGHUP replaces them."""

from __future__ import annotations

from cnamd.http import trusted
from cnamd.http.trusted import TrustedNetworks


def test_sources_are_judged_and_a_replacement_forgets_every_answer() -> None:
    nets = TrustedNetworks(["127.0.0.0/8", "2001:db8::/32"])
    assert "127.0.0.2" in nets and "2001:db8::1" in nets
    assert "192.0.2.1" not in nets and None not in nets and "not-an-address" not in nets
    assert "127.0.0.2" in nets  # from the memo now
    nets.replace(["192.0.2.0/24"])
    assert "127.0.0.2" not in nets and "192.0.2.1" in nets
    nets.replace([])
    assert "192.0.2.1" not in nets


def test_the_memo_is_bounded() -> None:
    nets = TrustedNetworks(["10.0.0.0/8"])
    for i in range(trusted.MEMO_SIZE + 10):
        assert f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}" in nets
    assert len(nets._memo) <= trusted.MEMO_SIZE
