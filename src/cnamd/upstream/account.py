"""A tenant's own account with an upstream source (issue #17): the credentials its
lookups use with that source in place of the deployment's.

An account replaces every credential setting of the source (``account_sid``,
``auth_token``, ``username``, ``password``, ``headers``), so none of the
deployment's credentials go out with a tenant's request. Its repr names only
the fields set: secrets never reach a log line by accident.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from cnamd.errors import InvalidRequest
from cnamd.settings import SourceSettings

#: the credential settings an account replaces, as stored and given in the API
FIELDS = ("account_sid", "auth_token", "username", "password", "headers")
_MAX_VALUE = 1024
_MAX_HEADERS = 8
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")


@dataclass(frozen=True, slots=True, repr=False)
class Account:
    """One tenant's credentials with one source (empty: not given)."""

    account_sid: str = ""
    auth_token: str = ""
    username: str = ""
    password: str = ""
    headers: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"Account(set={self.set_fields()!r})"

    def set_fields(self) -> list[str]:
        """The credential fields given, as the operator API shows them (never values)."""
        return [name for name in FIELDS if getattr(self, name)]

    def as_json(self) -> dict[str, Any]:
        """The stored form (table ``upstream_tenant_accounts``)."""
        stored: dict[str, Any] = {name: getattr(self, name) for name in self.set_fields()}
        if self.headers:
            stored["headers"] = list(self.headers)
        return stored

    @classmethod
    def from_json(cls, stored: dict[str, Any]) -> Account:
        """Back from the stored form (written by ``parse`` only)."""
        values = {k: v for k, v in stored.items() if k in FIELDS}
        if "headers" in values:
            values["headers"] = tuple(values["headers"])
        return cls(**values)

    def apply(self, settings: SourceSettings) -> SourceSettings:
        """``settings`` with this account in place of the deployment's credentials."""
        return dataclasses.replace(
            settings,
            account_sid=self.account_sid,
            auth_token=self.auth_token,
            username=self.username,
            password=self.password,
            headers=self.headers,
        )


def _text(raw: object, field: str) -> str:
    if not isinstance(raw, str) or not 1 <= len(raw) <= _MAX_VALUE:
        raise InvalidRequest(f"a string of 1 to {_MAX_VALUE} characters", field=field)
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise InvalidRequest("control characters are not allowed", field=field)
    return raw


def _headers(raw: object, field: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= _MAX_HEADERS:
        raise InvalidRequest(f"a list of 1 to {_MAX_HEADERS} 'Name: value' strings", field=field)
    headers = []
    for header in raw:
        text = _text(header, field)
        name, colon, value = text.partition(":")
        if not colon or not _HEADER_NAME.fullmatch(name.strip()) or not value.strip():
            raise InvalidRequest("each header must be 'Name: value'", field=field)
        headers.append(f"{name.strip()}: {value.strip()}")
    return tuple(headers)


def parse(source: SourceSettings, raw: object, field: str) -> Account:
    """The account given for ``source`` in the operator API, checked against the source's
    kind; InvalidRequest naming the field (``field.account_sid``...) otherwise.

    opencnam: ``account_sid`` with ``auth_token``, or ``username`` with ``password``
    (HTTP Basic); http-json: ``headers`` (a Bearer key) and/or ``username`` with
    ``password``; sip: no credentials at all."""
    if source.kind == "sip":
        raise InvalidRequest(f"source {source.name!r} (sip) takes no credentials", field=field)
    if not isinstance(raw, dict) or not raw:
        raise InvalidRequest("an object of credentials", field=field)
    allowed: tuple[str, ...] = ("account_sid", "auth_token", "username", "password")
    if source.kind == "http-json":
        allowed = ("username", "password", "headers")
    for key in raw:
        if key not in allowed:
            raise InvalidRequest(
                f"unknown credential for a {source.kind} source; allowed: {', '.join(allowed)}",
                field=f"{field}.{key}",
            )
    values: dict[str, Any] = {}
    for key, given in raw.items():
        where = f"{field}.{key}"
        values[key] = _headers(given, where) if key == "headers" else _text(given, where)
    for one, other in (("account_sid", "auth_token"), ("username", "password")):
        if (one in values) != (other in values):
            missing = other if one in values else one
            raise InvalidRequest(f"{one} and {other} go together", field=f"{field}.{missing}")
    return Account(**values)
