"""cnamd with a rate limiter per process, for bench/sip_limits_ab.sh only.

Put on PYTHONPATH, Python imports this at start-up in every cnamd process: the
limits region hands out per-process ``TokenBucket``s (its fallback without the C
extension), as every worker had before the limits were shared, so the
difference in CPU per dip against a normal run is what sharing them costs.
"""

from __future__ import annotations

from cnamd import sharedlimits

sharedlimits.SharedBucket = None  # type: ignore[assignment,misc]
