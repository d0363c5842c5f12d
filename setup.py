"""Build hook: compile the SIP hot path (parser, dip and its lookup) with mypyc.

The same typed code, compiled, answers a dip in 12 us instead of 19 us
(bench/bench_sip_parse.py) and cuts a worker's CPU per dip by ~12% end to end
(bench/README.md); compiling the lookup modules too takes a further ~2.5 us off
an INVITE and its ACK. It needs a C compiler; CNAMD_PURE_PYTHON=1 installs the
plain Python modules instead.
"""

import os
import sys

from setuptools import Extension, setup

HOT = [
    "src/cnamd/sip/message.py",
    "src/cnamd/sip/dip.py",
    "src/cnamd/lookup.py",
    "src/cnamd/ratelimit.py",
    # the dip's lookup: the glue from the SIP question to the name cache, and the cache
    "src/cnamd/callers.py",
    "src/cnamd/cache/directory.py",
    "src/cnamd/cache/contexts.py",
    "src/cnamd/cache/resolver.py",
    "src/cnamd/cache/trie.py",
    "src/cnamd/cache/overlay.py",
    "src/cnamd/cache/upstream.py",
    # a number's readings: every HTTP lookup of bare digits reads it twice (bench/README.md)
    "src/cnamd/numbers.py",
    "src/cnamd/validity.py",
]

ext_modules = []
if not os.environ.get("CNAMD_PURE_PYTHON"):
    # The parser's C fast path for requests of the common shape (sip/_scan.c says why).
    ext_modules.append(Extension("cnamd.sip._scan", ["src/cnamd/sip/_scan.c"]))
    # The global directory's hash index (cache/_index.c says why).
    probe = ["src/cnamd/cache/_probe.h"]  # the hash and probe every table shares
    layout = ["src/cnamd/cache/_index_layout.h", *probe]  # the index section both write
    ext_modules.append(
        Extension("cnamd.cache._index", ["src/cnamd/cache/_index.c"], depends=layout)
    )
    # The full load's per-entry passes (cache/_builder.c says why).
    ext_modules.append(
        Extension("cnamd.cache._builder", ["src/cnamd/cache/_builder.c"], depends=layout)
    )
    # The held upstream answers' table, mapped by every worker (cache/_held.c says why).
    ext_modules.append(Extension("cnamd.cache._held", ["src/cnamd/cache/_held.c"], depends=probe))
    # Per-source limits shared by the workers (_buckets.c says why).
    ext_modules.append(Extension("cnamd._buckets", ["src/cnamd/_buckets.c"]))
    if sys.platform == "linux":  # recvmmsg/sendmmsg; elsewhere uvloop's transport serves UDP
        # The UDP listener's batched loop (sip/_udp.c says why).
        ext_modules.append(Extension("cnamd.sip._udp", ["src/cnamd/sip/_udp.c"]))
    try:
        from mypyc.build import mypycify
    except ImportError:
        pass
    else:
        # the build environment lacks the runtime dependencies; their types do not matter here
        ext_modules += mypycify(["--ignore-missing-imports", *HOT], opt_level="3")

setup(ext_modules=ext_modules)
