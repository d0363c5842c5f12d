"""The SIP hot path runs compiled (mypyc), as it ships, unless asked not to be."""

from __future__ import annotations

import os

import pytest

from cnamd import ratelimit
from cnamd.sip import dip, message


@pytest.mark.skipif(bool(os.environ.get("CNAMD_PURE_PYTHON")), reason="pure build asked for")
def test_parser_and_dip_are_the_compiled_modules() -> None:
    # a stale build would test old code: `make` rebuilds when these .py files change
    assert message.__file__.endswith(".so"), message.__file__
    assert dip.__file__.endswith(".so"), dip.__file__
    assert ratelimit.__file__.endswith(".so"), ratelimit.__file__
