"""The cyclic garbage collector's share of a serving loop's lag.

A serving process makes about 57,000 objects the collector tracks at its start
(functions, classes, modules, settings, phonenumbers' metadata) and keeps them to its
end. Every full collection walks them all with the loop stopped: 36.6 ms during a burst
in a worker of the 2-core bench VM, each dip and lookup waiting behind it
(bench/README.md, "The burst with its callers on other cores"). ``settle()`` runs one
collection before the process answers and moves what survives into the permanent
generation (``gc.freeze``), which no later pass walks, so a full pass walks only what
was made since. The frozen objects are never freed by the collector: that is what they are
for, since they live as long as the process anyway.
"""

from __future__ import annotations

import gc


def settle() -> int:
    """Collect, then freeze what is left; the count of objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
