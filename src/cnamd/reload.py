"""What a SIGHUP may change in a running daemon, decided without side effects.

A reload re-reads the configuration (file < environment < flags, as at
start-up) and splits the differences in two: settings in ``LIVE`` are applied
between two requests (``Server.apply``); every other change is reported as
needing a restart and the running value is kept, so the daemon never runs
half of a new configuration (a listener address, say, whose socket the
supervisor bound long ago).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from cnamd.settings import SECTIONS, Settings

#: settings applied live: nothing is re-bound, re-connected or re-loaded for them
LIVE = frozenset(
    {
        "log.level",
        "log.format",
        "sip.allow",
        "sip.rate",
        "sip.burst",
        "sip.number_source",
        "sip.miss_reply",
        "sip.invalid_reply",
        "sip.deny_reply",
        "sip.anonymous_name",
        "sip.retry_after",
        "sip.log_sample",
        "http.trusted_networks",
        "http.auth_failure_rate",
        "http.auth_failure_burst",
        "http.access_log",
        "cache.stale_ready_status",
        "upstream.sources",
        "upstream.sip_deadline",
        "upstream.http_deadline",
        "upstream.batch_size",
        "upstream.flush_interval",
    }
)


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """The settings to run with after a reload, and which changes made it live."""

    settings: Settings
    applied: tuple[str, ...]
    needs_restart: tuple[str, ...]

    def touches(self, *sections: str) -> bool:
        """True when a live change falls in one of ``sections`` (``"sip"``, ``"log"``...)."""
        return any(name.partition(".")[0] in sections for name in self.applied)


def changed(old: Settings, new: Settings) -> list[str]:
    """Dotted names of the settings whose values differ."""
    found = []
    for section in SECTIONS:
        before, after = getattr(old, section), getattr(new, section)
        for f in dataclasses.fields(before):
            if getattr(before, f.name) != getattr(after, f.name):
                found.append(f"{section}.{f.name}")
    return found


def plan_reload(old: Settings, new: Settings) -> ReloadPlan:
    """``old`` with the live changes of ``new`` taken over; the rest listed for a restart."""
    names = changed(old, new)
    applied = tuple(n for n in names if n in LIVE)
    sections = {}
    for section in SECTIONS:
        values = {
            key: getattr(getattr(new, section), key)
            for name in applied
            for sec, _, key in [name.partition(".")]
            if sec == section
        }
        current = getattr(old, section)
        sections[section] = dataclasses.replace(current, **values) if values else current
    return ReloadPlan(Settings(**sections), applied, tuple(n for n in names if n not in LIVE))
