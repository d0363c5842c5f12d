"""Every setting cnamd has, validated in one place.

Precedence: built-in defaults < TOML file (``--config``) < ``CNAMD_<SECTION>_<KEY>``
environment variables < command-line flags. ``load()`` has no side effects: it
returns a frozen ``Settings`` or raises ``ConfigError`` naming the setting, the
bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cnamd import __version__
from cnamd.errors import ConfigError

Check = Callable[[Any], str | None]


def _between(low: float, high: float) -> Check:
    return lambda v: None if low <= v <= high else f"between {low:g} and {high:g}"


def parse_cpus(text: str) -> frozenset[int]:
    """``server.cpus``: ``0``, ``0-1,4``, CPU numbers and ranges as taskset and systemd
    write them. Here, not in cpus.py, so that the settings check no process placement."""
    cpus: set[int] = set()
    for part in text.replace(" ", "").split(","):
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"{part!r} is not a CPU number or range (e.g. 0 or 0-3)")
        first, last = int(low), int(high) if dash else int(low)
        if last < first or last > 4095:
            raise ValueError(f"{part!r} is not a CPU range")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def _cpu_list(value: str) -> str | None:
    """``parse_cpus``'s CPU list, or empty; returns what is allowed when bad."""
    try:
        if value:
            parse_cpus(value)
    except ValueError:
        return "CPU numbers and ranges, e.g. 0 or 0-1,4 (empty: no pinning)"
    return None


def _listen_address(value: str) -> str | None:
    """``host:port`` with an IPv6 host in brackets; returns what is allowed when bad."""
    allowed = "host:port, e.g. 127.0.0.1:5060 or [::1]:5060"
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        return allowed
    if host.startswith("["):
        if not host.endswith("]"):
            return allowed
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        # A host name is allowed (resolved at bind time), but only a plausible one.
        if not host.replace("-", "").replace(".", "").isalnum():
            return allowed
    return None


def _each(check: Check) -> Check:
    def run(values: tuple[str, ...]) -> str | None:
        for value in values:
            allowed = check(value)
            if allowed:
                return allowed
        return None

    return run


def _networks(values: tuple[str, ...]) -> str | None:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return "CIDR networks, e.g. 10.0.0.0/8 or 2001:db8::/32"
    return None


def _handset_text(value: str) -> str | None:
    """A string a handset can show: printable, at most 64 characters."""
    return None if value.isprintable() and len(value) <= 64 else "printable, at most 64 characters"


def _setting(default: Any, doc: str, check: Check | None = None, *, secret: bool = False) -> Any:
    """A field with its documentation and an optional check returning what is allowed;
    a ``secret`` one is left out of the settings' repr (so out of logs)."""
    return field(default=default, metadata={"doc": doc, "check": check}, repr=not secret)


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    url: str = _setting("", "PostgreSQL URL; empty starts an embedded PostgreSQL in embedded_dir")
    embedded_dir: str = _setting("./var/pgdata", "data directory of the embedded PostgreSQL")
    pool_min: int = _setting(1, "connections the pool keeps open", _between(0, 100))
    pool_max: int = _setting(10, "connections the pool may open", _between(1, 500))
    connect_timeout: float = _setting(5.0, "seconds to wait for one connection", _between(0.1, 300))
    on_unreachable: Literal["exit", "retry"] = _setting(
        "exit",
        "at start-up without a usable snapshot: exit (code 2) or keep retrying with backoff",
    )
    retry_max_seconds: float = _setting(30.0, "cap of the reconnect backoff", _between(0.1, 3600))
    statement_timeout: float = _setting(
        5.0,
        "seconds a statement of an API request (or its wait for a pooled connection) may"
        " take, on the server and in the client; past it the request answers 503",
        _between(0.1, 3600),
    )
    ping_interval: float = _setting(
        1.0, "seconds between the change feed's pings of its connection", _between(0.05, 60)
    )
    ping_timeout: float = _setting(
        2.0,
        "seconds a ping may take before the database counts as hung and is reconnected",
        _between(0.05, 60),
    )
    primary_url: str = _setting(
        "",
        "PostgreSQL URL that takes writes (management API, imports, order and bulk workers)"
        " when url is a hot standby; several hosts with target_session_attrs=read-write find"
        " the primary after a failover; empty: url (a standby-only daemon answers writes 503)",
    )
    poll_interval: float = _setting(
        0.05,
        "seconds between the change feed's reads of the change log on a hot standby (a"
        " standby refuses LISTEN, so the feed polls)",
        _between(0.01, 10),
    )
    max_replay_lag: float = _setting(
        30.0,
        "seconds a hot standby may be behind its primary before the daemon counts as stale,"
        " as it does without a database",
        _between(0.1, 86400),
    )
    change_log_max_age: float = _setting(
        604800.0,
        "seconds a change stays in the change log; older ones are pruned unless among the"
        " newest change_log_keep_rows (a follower behind the pruned point reloads whole)",
        _between(0, 10 * 365 * 86400),
    )
    change_log_keep_rows: int = _setting(
        1_000_000,
        "newest changes always kept in the change log, whatever their age",
        _between(1, 1_000_000_000),
    )
    change_log_prune_interval: float = _setting(
        60.0,
        "seconds between prunings of the change log (by each daemon's loader, on the"
        " primary, one at a time, in batches of a few thousand rows so it never holds"
        " long locks)",
        _between(0.1, 86400),
    )


@dataclass(frozen=True, slots=True)
class HttpSettings:
    listen: str = _setting("127.0.0.1:8080", "address of the HTTP API", _listen_address)
    trusted_networks: tuple[str, ...] = _setting(
        ("127.0.0.0/8", "::1/128"), "networks whose lookups need no API key", _networks
    )
    auth_failure_rate: float = _setting(
        1.0,
        "failed logins per second a source address may make in the long run, across all workers",
        _between(0.001, 1e6),
    )
    auth_failure_burst: int = _setting(
        10,
        "failed logins a source may make at once; past them its failing credentials get 429"
        " (valid keys and trusted lookups from the address still work)",
        _between(1, 1e6),
    )
    access_log: bool = _setting(
        False,
        "one log line per HTTP request (logger cnamd.access, in log.format); API key"
        " secrets and auth_token parameters are never written",
    )
    max_connections: int = _setting(
        4096,
        "open HTTP connections per worker; one over it is closed as it is accepted",
        _between(1, 1_000_000),
    )
    idle_timeout: float = _setting(
        75.0,
        "seconds an HTTP connection stays open without a request answered (idle between"
        " requests, or part-way through a request's head); then it is closed",
        _between(1, 86400),
    )
    body_timeout: float = _setting(
        60.0,
        "seconds a JSON or form body may take to arrive whole, and a CSV upload between"
        " two reads; past it the request is answered 408 and nothing of it is stored",
        _between(1, 3600),
    )
    max_upload_bytes: int = _setting(
        512 * 1024 * 1024,
        "largest CSV upload (POST .../cnam-import) taken, in bytes; cnamd import has no limit",
        _between(1024, 1 << 40),
    )
    spool_dir: str = _setting(
        "",
        "directory where a CSV upload over 1 MiB is held (an unnamed file) until its import's"
        " turn; empty: the system's temporary directory (TMPDIR)",
    )


@dataclass(frozen=True, slots=True)
class SipSettings:
    listen: tuple[str, ...] = _setting(
        ("127.0.0.1:5060",), "UDP and TCP addresses of the SIP front", _each(_listen_address)
    )
    tls_listen: tuple[str, ...] = _setting(
        (), "TLS addresses (need tls_cert and tls_key)", _each(_listen_address)
    )
    tls_cert: str = _setting("", "PEM certificate chain for SIP over TLS")
    tls_key: str = _setting("", "PEM private key for SIP over TLS")
    number_source: Literal["identity", "request-uri"] = _setting(
        "identity",
        "where the calling number comes from: identity = P-Asserted-Identity, "
        "Remote-Party-ID, then From; request-uri = the Request-URI user",
    )
    miss_reply: Literal["404", "302"] = _setting("404", "answer when no name is found")
    invalid_reply: Literal["400", "404"] = _setting("400", "answer to an unreadable calling number")
    deny_reply: Literal["403", "drop"] = _setting("403", "answer to a source outside sip.allow")
    allow: tuple[str, ...] = _setting(
        ("127.0.0.0/8", "::1/128"),
        "networks allowed to ask, besides each tenant's own SIP networks",
        _networks,
    )
    anonymous_name: str = _setting("Anonymous", "name for callers who asked for privacy")
    # An SBC sends a whole carrier's dips from one address: the per-source limit
    # guards against a runaway peer and must sit above any legitimate SBC's rate.
    rate: float = _setting(
        50000.0,
        "requests per second allowed per source address, across all workers (0 turns the"
        " limit off)",
        _between(0, 1e7),
    )
    burst: float = _setting(100000.0, "token-bucket depth per source address", _between(1, 1e8))
    retry_after: int = _setting(1, "Retry-After seconds on a 503", _between(0, 3600))
    udp_steering: Literal["random", "shared"] = _setting(
        "random",
        "with several workers: random = one UDP socket per worker, the kernel sends each "
        "datagram to one at random; shared = one socket every worker reads (each datagram "
        "wakes them all)",
    )
    udp_rcvbuf: int = _setting(
        8 * 1024 * 1024, "UDP receive buffer in bytes", _between(65536, 1 << 30)
    )
    tcp_idle_timeout: float = _setting(
        120.0, "seconds before an idle TCP/TLS connection is closed", _between(1, 86400)
    )
    tcp_max_connections: int = _setting(
        4096,
        "open TCP/TLS connections per worker; one over it is closed as it is accepted",
        _between(1, 1_000_000),
    )
    tcp_message_timeout: float = _setting(
        10.0,
        "seconds a TCP/TLS message may take from its first byte to its last; a connection"
        " that is slower is closed",
        _between(0.1, 3600),
    )
    log_sample: float = _setting(
        0.0,
        "share of SIP requests logged, one line each (0 = off, 0.01 = every 100th, 1 = all)",
        _between(0, 1),
    )


@dataclass(frozen=True, slots=True)
class CacheSettings:
    snapshot_path: str = _setting(
        "./var/cache.snapshot", "snapshot written after each full load; empty disables it"
    )
    reconcile_interval: float = _setting(
        300.0, "seconds between cache/database digest comparisons", _between(1, 86400)
    )
    stale_ready_status: Literal[200, 503] = _setting(
        200,
        "/readyz status while serving a snapshot the database has not confirmed, or the"
        " cache as last loaded while the database is unreachable",
    )
    compact_threshold: int = _setting(
        20000,
        "live changes held in the overlay before it is folded into the base; a committed"
        " transaction of more changes is not applied live but loaded whole",
        _between(100, 10_000_000),
    )
    snapshot_interval: float = _setting(
        2.0,
        "seconds between refreshes of the snapshot's tail (the changes since its base), so a"
        " restarted worker or a warm start maps names at most about this old",
        _between(0.1, 3600),
    )
    max_worker_lag: float = _setting(
        5.0,
        "seconds a worker may stay behind the host's cache before /readyz reports it; the"
        " supervisor restarts it past twice this",
        _between(0.5, 3600),
    )


@dataclass(frozen=True, slots=True)
class NameSettings:
    max_length: int = _setting(
        15, "longest caller name accepted (15 is the PSTN CNAM limit)", _between(1, 256)
    )
    private_name: str = _setting(
        "PRIVATE NAME",
        "HTTP and phone-directory name of a withheld caller (ENUM unavailable=p);"
        " the SIP dip answers sip.anonymous_name",
        _handset_text,
    )
    unknown_name: str = _setting(
        "",
        "body of a plain-text or pbx-format miss (ENUM unavailable=u); empty keeps the"
        " empty 404 body that FreePBX needs to show the bare number",
        _handset_text,
    )


@dataclass(frozen=True, slots=True)
class DirectorySettings:
    search_limit: int = _setting(
        32, "most names a phone's name search returns (Cisco phones show 32)", _between(1, 1000)
    )
    export_limit: int = _setting(
        2000, "most names in a phone-book export (Snom, Grandstream, Polycom)", _between(1, 100000)
    )
    require_approval: bool = _setting(
        False,
        "names published from a tenant's phone numbers wait for an operator's approval"
        " before the global directory serves them",
    )


@dataclass(frozen=True, slots=True)
class RangeSettings:
    max_span: int = _setting(100000, "most numbers one range may cover", _between(1, 10**9))


@dataclass(frozen=True, slots=True)
class OrderSettings:
    """Atmosphere-style CNAM orders (issue #6), worked off in the background in batches."""

    batch_size: int = _setting(100, "numbers an order's batch holds", _between(1, 10000))
    max_numbers: int = _setting(10000, "most numbers one order may name", _between(1, 1000000))
    batch_pause: float = _setting(
        0.0, "seconds between two batches (throttles provisioning)", _between(0, 60)
    )
    poll_interval: float = _setting(
        0.5, "seconds between looks for queued orders", _between(0.05, 60)
    )


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: Literal["debug", "info", "warning", "error"] = _setting("info", "log level")
    format: Literal["kv", "json"] = _setting("kv", "one line per event: key=value or JSON")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    workers: int = _setting(
        0, "worker processes sharing the listening sockets; 0 = one per CPU core", _between(0, 256)
    )
    shutdown_timeout: float = _setting(4.0, "seconds to drain on SIGTERM", _between(0, 600))
    expose_version: bool = _setting(
        False, "name cnamd's version in the HTTP and SIP Server headers (cnamd/0.1.0)"
    )
    cpus: str = _setting(
        "",
        "CPUs the serving workers run on (e.g. 0 or 0-1); the bulk workers, the loader"
        " and an embedded PostgreSQL run on the others; empty: no pinning",
        _cpu_list,
    )

    @property
    def software(self) -> str:
        """The Server header of every HTTP and SIP answer: ``cnamd``, with the version
        only when ``expose_version`` is set (it tells an attacker what to try)."""
        return f"cnamd/{__version__}" if self.expose_version else "cnamd"


def source_name_problem(value: str) -> str | None:
    if re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,62}", value):
        return None
    return "lowercase letters, digits, '_', '.', '-' (1-63), e.g. opencnam"


def _http_url(value: str) -> str | None:
    return None if value.startswith(("http://", "https://")) else "an http:// or https:// URL"


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """One upstream CNAM source (``[[upstream.sources]]``), asked in the order listed."""

    name: str = _setting("", "the source's name in metrics, logs and answers", source_name_problem)
    kind: Literal["opencnam", "http-json", "sip"] = _setting(
        "opencnam",
        "opencnam: GET {url}/v3/phone/{number}?format=json; http-json: url is a template;"
        " sip: url is sip:host:port (udp) or sip:host:port;transport=tcp",
    )
    url: str = _setting("", "base URL (opencnam), URL template (http-json) or SIP URI (sip)")
    account_sid: str = _setting(
        "", "opencnam: account_sid query parameter (never logged)", secret=True
    )
    auth_token: str = _setting(
        "", "opencnam: auth_token query parameter (never logged)", secret=True
    )
    username: str = _setting("", "HTTP Basic user (never logged)", secret=True)
    password: str = _setting("", "HTTP Basic password (never logged)", secret=True)
    headers: tuple[str, ...] = _setting(
        (),
        "http-json: extra request headers, 'Name: value' each (e.g. a Bearer key)",
        secret=True,
    )
    name_pointer: str = _setting(
        "/name", "http-json: JSON pointer (RFC 6901) to the name in the answer"
    )
    no_name_statuses: tuple[str, ...] = _setting(
        ("404",), "http-json/opencnam: HTTP statuses that mean 'no name' (cached as negative)"
    )
    countries: tuple[str, ...] = _setting(
        (), "E.164 prefixes this source is asked for (e.g. +1); empty: every number"
    )
    timeout: float = _setting(2.0, "seconds one request may take", _between(0.05, 60))
    positive_ttl: float = _setting(
        30 * 86400.0, "seconds a name from this source is kept", _between(1, 10 * 365 * 86400)
    )
    negative_ttl: float = _setting(
        86400.0, "seconds a 'no name' answer is kept", _between(1, 365 * 86400)
    )
    max_concurrency: int = _setting(8, "requests in flight to this source", _between(1, 10000))
    rate: float = _setting(0.0, "requests per second at most (0: no limit)", _between(0, 1e6))
    daily_budget: int = _setting(
        0,
        "paid requests per UTC day at most, for the whole deployment (0: no limit)",
        _between(0, 10**9),
    )
    breaker_errors: int = _setting(
        5, "consecutive errors or timeouts that open the circuit breaker", _between(1, 1000)
    )
    breaker_reset: float = _setting(
        30.0, "seconds an open breaker waits before one probe (half-open)", _between(0.1, 3600)
    )


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """Upstream CNAM sources (issue #17): asked after every local scope missed."""

    sources: tuple[SourceSettings, ...] = _setting(
        (),
        "sources asked in order after the local scopes miss ([[upstream.sources]] tables;"
        " JSON list in env and flags); empty: upstream off",
    )
    sip_deadline: float = _setting(
        0.5,
        "seconds the SIP dip waits for an upstream answer before answering its miss"
        " (keep it below the SBC's dip timeout); a late answer is still cached",
        _between(0.01, 30),
    )
    http_deadline: float = _setting(
        2.0, "seconds an HTTP lookup waits for an upstream answer", _between(0.01, 60)
    )
    batch_size: int = _setting(
        100, "upstream answers written to PostgreSQL in one transaction", _between(1, 10000)
    )
    flush_interval: float = _setting(
        0.1, "seconds between writes of pending upstream answers", _between(0.001, 60)
    )
    sweep_interval: float = _setting(
        60.0, "seconds between deletions of expired upstream answers", _between(1, 86400)
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole configuration; sections mirror the TOML tables."""

    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    sip: SipSettings = field(default_factory=SipSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    names: NameSettings = field(default_factory=NameSettings)
    directory: DirectorySettings = field(default_factory=DirectorySettings)
    ranges: RangeSettings = field(default_factory=RangeSettings)
    orders: OrderSettings = field(default_factory=OrderSettings)
    log: LogSettings = field(default_factory=LogSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)


SECTIONS: dict[str, type[Any]] = typing.get_type_hints(Settings)


def _convert(name: str, hint: Any, raw: Any) -> Any:
    """Turn a TOML value or a string from env/flags into the field's type."""
    origin = typing.get_origin(hint)
    if origin is tuple and typing.get_args(hint)[0] is SourceSettings:
        return _sources(name, raw)
    if origin is Literal:
        choices = typing.get_args(hint)
        for choice in choices:
            if raw == choice or (isinstance(raw, str) and str(choice) == raw.strip()):
                return choice
        raise _bad(name, raw, "one of " + ", ".join(str(c) for c in choices))
    if origin is tuple:
        if isinstance(raw, str):
            raw = [part.strip() for part in raw.split(",") if part.strip()]
        if not isinstance(raw, list | tuple) or not all(isinstance(v, str) for v in raw):
            raise _bad(name, raw, "a list of strings (comma-separated in env and flags)")
        return tuple(raw)
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off"}:
            return False
        raise _bad(name, raw, "true or false")
    if hint is int:
        if isinstance(raw, bool):
            raise _bad(name, raw, "an integer")
        try:
            return int(str(raw).strip().replace("_", ""))
        except ValueError:
            raise _bad(name, raw, "an integer") from None
    if hint is float:
        if isinstance(raw, bool):
            raise _bad(name, raw, "a number")
        try:
            return float(str(raw).strip())
        except ValueError:
            raise _bad(name, raw, "a number") from None
    if hint is str:
        if not isinstance(raw, str):
            raise _bad(name, raw, "a string")
        return raw
    raise AssertionError(f"unsupported setting type {hint!r} for {name}")  # pragma: no cover


def _sources(name: str, raw: Any) -> tuple[SourceSettings, ...]:
    """``[[upstream.sources]]`` tables (a JSON list of objects in env and flags)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise _bad(name, raw, "a JSON list of source objects") from None
    if not isinstance(raw, list | tuple):
        raise _bad(name, raw, "a list of [[upstream.sources]] tables")
    hints = typing.get_type_hints(SourceSettings)
    sources = []
    for i, item in enumerate(raw):
        where = f"{name}[{i}]"
        table = _plain(item) if isinstance(item, SourceSettings) else item
        if not isinstance(table, dict):
            raise _bad(where, table, "a table")
        values = {}
        for key, given in table.items():
            if key not in hints:
                raise ConfigError(
                    f"unknown source setting; known: {', '.join(hints)}", field=f"{where}.{key}"
                )
            value = given
            if key == "no_name_statuses" and isinstance(given, list):
                value = [str(v) for v in given]
            values[key] = _convert(f"{where}.{key}", hints[key], value)
        source = SourceSettings(**values)
        for f in dataclasses.fields(source):
            check = f.metadata.get("check")
            allowed = check(getattr(source, f.name)) if check else None
            if allowed:
                raise _bad(f"{where}.{f.name}", getattr(source, f.name), allowed)
        if not source.url:
            raise ConfigError("a source needs a url", field=f"{where}.url")
        if source.kind != "sip" and _http_url(source.url):
            raise _bad(f"{where}.url", source.url, "an http:// or https:// URL")
        if source.kind == "sip" and not source.url.startswith("sip:"):
            raise _bad(f"{where}.url", source.url, "sip:host:port[;transport=tcp]")
        if not all(s.isdigit() and 100 <= int(s) <= 599 for s in source.no_name_statuses):
            raise _bad(f"{where}.no_name_statuses", source.no_name_statuses, "HTTP statuses")
        if not all(c[:1] == "+" and c[1:].isdigit() for c in source.countries):
            raise _bad(f"{where}.countries", source.countries, "E.164 prefixes like +1")
        if not all(": " in h or ":" in h for h in source.headers):
            raise _bad(f"{where}.headers", source.headers, "'Name: value' strings")
        if source.name_pointer and not source.name_pointer.startswith("/"):
            raise _bad(f"{where}.name_pointer", source.name_pointer, "a JSON pointer like /name")
        sources.append(source)
    if len({s.name for s in sources}) != len(sources):
        raise ConfigError("source names must be distinct", field=name)
    return tuple(sources)


def _bad(name: str, raw: Any, allowed: str) -> ConfigError:
    shown = repr(raw) if len(repr(raw)) <= 80 else repr(raw)[:77] + "..."
    return ConfigError(f"invalid value {shown}: expected {allowed}", field=name)


def _apply(layers: list[tuple[str, Mapping[str, Mapping[str, Any]]]]) -> Settings:
    """Fold the layers (later wins) over the defaults, converting and checking each value."""
    chosen: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for origin, layer in layers:
        for section, values in layer.items():
            if section not in SECTIONS:
                raise ConfigError(
                    f"unknown section in {origin}; known: {', '.join(SECTIONS)}", field=section
                )
            hints = typing.get_type_hints(SECTIONS[section])
            for key, raw in values.items():
                name = f"{section}.{key}"
                if key not in hints:
                    raise ConfigError(
                        f"unknown setting in {origin}; known in [{section}]: {', '.join(hints)}",
                        field=name,
                    )
                chosen[section][key] = _convert(name, hints[key], raw)
    sections: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        built = cls(**chosen[section])
        for f in dataclasses.fields(built):
            check = f.metadata.get("check")
            value = getattr(built, f.name)
            allowed = check(value) if check else None
            if allowed:
                raise _bad(f"{section}.{f.name}", value, allowed)
        sections[section] = built
    settings = Settings(**sections)
    _check_whole(settings)
    return settings


def _check_whole(settings: Settings) -> None:
    """Rules that span settings."""
    if settings.database.pool_min > settings.database.pool_max:
        raise _bad("database.pool_min", settings.database.pool_min, "at most database.pool_max")
    sip = settings.sip
    if sip.tls_listen and not (sip.tls_cert and sip.tls_key):
        raise ConfigError("TLS listeners need sip.tls_cert and sip.tls_key", field="sip.tls_listen")


def read_file(path: Path) -> dict[str, Any]:
    """Parse a TOML file; any problem is a ConfigError naming the file."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"file not found: {path}", field="--config") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", field="--config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", field="--config") from None


#: variables that are not settings: the file's path, and what the daemon hands its own
#: processes (supervisor.WORKER_ENV, replica.loader.SPEC_ENV, cpus.SPLIT_ENV), which a
#: SIGHUP finds in the environment it re-reads
NOT_SETTINGS_ENV = frozenset({"CNAMD_CONFIG", "CNAMD_WORKER", "CNAMD_LOADER", "CNAMD_CPU_SPLIT"})


def env_layer(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``CNAMD_<SECTION>_<KEY>`` variables; section names have no underscore."""
    layer: dict[str, dict[str, str]] = {}
    for var, value in environ.items():
        if not var.startswith("CNAMD_") or var in NOT_SETTINGS_ENV:
            continue
        section, _, key = var[len("CNAMD_") :].lower().partition("_")
        if section not in SECTIONS or not key:
            raise ConfigError(
                f"unknown environment variable; expected CNAMD_<SECTION>_<KEY> with a section "
                f"in {', '.join(SECTIONS)}",
                field=var,
            )
        layer.setdefault(section, {})[key] = value
    return layer


def override_layer(pairs: list[str]) -> dict[str, dict[str, str]]:
    """``section.key=value`` pairs from ``--set`` and the named flags."""
    layer: dict[str, dict[str, str]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        section, dot, key = name.strip().partition(".")
        if not sep or not dot:
            raise ConfigError(f"expected section.key=value, got {pair!r}", field="--set")
        layer.setdefault(section, {})[key] = value
    return layer


def load(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: list[str] | None = None,
) -> Settings:
    """Defaults < file < environment < flags, validated; raises ConfigError."""
    environ = os.environ if environ is None else environ
    if config_file is None and environ.get("CNAMD_CONFIG"):
        config_file = Path(environ["CNAMD_CONFIG"])
    layers: list[tuple[str, Mapping[str, Mapping[str, Any]]]] = []
    if config_file is not None:
        data = read_file(config_file)
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"expected a [table] in {config_file}", field=section)
        layers.append((str(config_file), data))
    layers.append(("the environment", env_layer(environ)))
    layers.append(("the command line", override_layer(overrides or [])))
    return _apply(layers)


def as_layer(settings: Settings) -> dict[str, dict[str, Any]]:
    """Plain data for handing resolved settings to a worker process (JSON-safe)."""
    return {
        section: {
            f.name: _plain(getattr(getattr(settings, section), f.name))
            for f in dataclasses.fields(cls)
        }
        for section, cls in SECTIONS.items()
    }


def _plain(value: Any) -> Any:
    if isinstance(value, SourceSettings):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


def from_layer(layer: Mapping[str, Mapping[str, Any]]) -> Settings:
    """The inverse of ``as_layer``, validated like any other source."""
    return _apply([("the supervisor", layer)])


def describe() -> list[tuple[str, Any, str]]:
    """(name, default, doc) for every setting: the source of the example file."""
    rows = []
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            rows.append((f"{section}.{f.name}", f.default, f.metadata["doc"]))
    return rows
