"""The upstream tests' shared fixture: the misbehaving provider (fake_provider.py), one
per test module, as each module's daemon is."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_provider import FakeProvider

from test_daemon import free_port


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    server = FakeProvider(free_port())
    try:
        yield server
    finally:
        server.close()
