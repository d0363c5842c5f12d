"""The SIP hot path and its lookup run compiled (mypyc, C), as they ship, unless asked not to."""

from __future__ import annotations

import os

import pytest

from cnamd import callers, ratelimit
from cnamd.cache import contexts, directory, overlay, resolver, trie
from cnamd.sip import dip, message


@pytest.mark.skipif(bool(os.environ.get("CNAMD_PURE_PYTHON")), reason="pure build asked for")
def test_parser_and_dip_are_the_compiled_modules() -> None:
    # a stale build would test old code: `make` rebuilds when these .py files change
    assert message.__file__.endswith(".so"), message.__file__
    assert dip.__file__.endswith(".so"), dip.__file__
    assert ratelimit.__file__.endswith(".so"), ratelimit.__file__


@pytest.mark.skipif(bool(os.environ.get("CNAMD_PURE_PYTHON")), reason="pure build asked for")
def test_the_dips_lookup_is_compiled_and_indexed() -> None:
    for module in (callers, contexts, directory, overlay, resolver, trie):
        assert (module.__file__ or "").endswith(".so"), module.__file__
    assert trie._index is not None  # the global directory's hash index (cache/_index.c)
