"""``/api/operator``: tenants, their usergroups and users, and API keys (issue #3 items 3, 4).

Operator keys reach everything; a partner key reads the tenants it is granted
anything of and manages the usergroups and users of tenants granted whole;
user keys are refused. Who may do what is decided in ``store/tenants.py``;
this module reads bodies and shapes answers. Bodies are checked strictly: an
unknown field is an error, so a typo (``network``) is not silently ignored.
"""

from __future__ import annotations

import datetime
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from cnamd.access import Duty, Principal, require
from cnamd.errors import InvalidRequest, NotFound
from cnamd.http.auth import principal
from cnamd.http.bodies import json_object, string_field
from cnamd.http.db import connection
from cnamd.http.family import Route
from cnamd.model import Role
from cnamd.store import apikeys, tenants

__all__ = ["ROUTES"]

BASE = "/api/operator"
MAX_LABEL = 256

TENANT_FIELDS = frozenset({"slug", "name", "region", "networks"})
USERGROUP_FIELDS = frozenset({"slug"})
USER_FIELDS = frozenset({"slug", "usergroup"})
KEY_FIELDS = frozenset({"role", "user", "enterprises", "usergroups", "label", "expires_at"})


# --- who may call ---


async def _provisioner(request: web.Request) -> Principal:
    """An operator or partner key; user keys have no business under /api/operator."""
    who = await principal(request)
    require(who, Duty.PROVISION)
    return who


async def _operator(request: web.Request) -> Principal:
    who = await principal(request)
    require(who, Duty.MANAGE_KEYS)
    return who


# --- bodies ---


def _only(body: dict[str, Any], allowed: Collection[str]) -> None:
    for name in body:
        if name not in allowed:
            raise InvalidRequest(
                f"unknown field {name[:40]!r}; this body takes {', '.join(sorted(allowed))}",
                field=name[:40],
            )


def _optional_string(body: dict[str, Any], name: str) -> str | None:
    return None if body.get(name) is None else string_field(body, name)


def _string_list(body: dict[str, Any], name: str) -> list[str]:
    """``body[name]`` as a list of strings; missing or null is empty."""
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"{name} must be a JSON array of strings", field=name)
    return value


def _instant(text: str, *, field: str) -> datetime.datetime:
    """An ISO 8601 time with its UTC offset (``Z`` or ``+01:00``): a bare local
    time would mean different instants on the client and the server."""
    try:
        at = datetime.datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidRequest(f"{text[:40]!r} is not an ISO 8601 time", field=field) from exc
    if at.tzinfo is None:
        raise InvalidRequest(
            f"{text[:40]!r} has no UTC offset; add one, e.g. 2030-01-01T00:00:00Z", field=field
        )
    return at


def _tenant_spec(body: dict[str, Any], slug: str | None = None) -> tenants.TenantSpec:
    """The tenant a POST (``slug`` None: from the body) or a PUT of ``slug`` describes."""
    _only(body, TENANT_FIELDS)
    if slug is None or "slug" in body:
        slug = string_field(body, "slug")
    return tenants.tenant_spec(
        slug,
        string_field(body, "name"),
        string_field(body, "region"),
        _string_list(body, "networks"),
    )


def _created(payload: dict[str, object], location: str) -> web.Response:
    return web.json_response(payload, status=201, headers={"Location": location})


def _deleted() -> web.Response:
    return web.Response(status=204)


# --- tenants ---


async def list_tenants(request: web.Request) -> web.Response:
    who = await _provisioner(request)
    async with connection(request) as conn:
        found = await tenants.list_tenants(conn, who)
    return web.json_response({"tenants": [t.to_json() for t in found]})


async def create_tenant(request: web.Request) -> web.Response:
    who = await _provisioner(request)
    spec = _tenant_spec(await json_object(request))
    async with connection(request) as conn:
        tenant = await tenants.create_tenant(conn, who, spec)
    return _created(tenant.to_json(), f"{BASE}/tenants/{tenant.slug}")


async def get_tenant(request: web.Request) -> web.Response:
    who = await _provisioner(request)
    async with connection(request) as conn:
        tenant = await tenants.get_tenant(conn, who, request.match_info["tenant"])
    return web.json_response(tenant.to_json())


async def replace_tenant(request: web.Request) -> web.Response:
    who = await _provisioner(request)
    slug = request.match_info["tenant"]
    spec = _tenant_spec(await json_object(request), slug)
    async with connection(request) as conn:
        tenant = await tenants.replace_tenant(conn, who, slug, spec)
    return web.json_response(tenant.to_json())


async def delete_tenant(request: web.Request) -> web.Response:
    who = await _provisioner(request)
    async with connection(request) as conn:
        await tenants.delete_tenant(conn, who, request.match_info["tenant"])
    return _deleted()


# --- usergroups ---


async def list_usergroups(request: web.Request) -> web.Response:
    who = await _provisioner(request)
    async with connection(request) as conn:
        found = await tenants.list_usergroups(conn, who, request.match_info["tenant"])
    return web.json_response({"usergroups": [g.to_json() for g in found]})


async def create_usergroup(request: web.Request) -> web.Response:
    who = await _provisioner(request)
    tenant = request.match_info["tenant"]
    body = await json_object(request)
    _only(body, USERGROUP_FIELDS)
    slug = string_field(body, "slug")
    async with connection(request) as conn:
        group = await tenants.create_usergroup(conn, who, tenant, slug)
    return _created(group.to_json(), f"{BASE}/tenants/{tenant}/usergroups/{group.slug}")


async def get_usergroup(request: web.Request) -> web.Response:
    who = await _provisioner(request)
    info = request.match_info
    async with connection(request) as conn:
        group = await tenants.get_usergroup(conn, who, info["tenant"], info["usergroup"])
    return web.json_response(group.to_json())


async def delete_usergroup(request: web.Request) -> web.Response:
    who = await _provisioner(request)
    info = request.match_info
    async with connection(request) as conn:
        await tenants.delete_usergroup(conn, who, info["tenant"], info["usergroup"])
    return _deleted()


# --- users ---


async def list_users(request: web.Request) -> web.Response:
    who = await _provisioner(request)
    async with connection(request) as conn:
        found = await tenants.list_users(conn, who, request.match_info["tenant"])
    return web.json_response({"users": [u.to_json() for u in found]})


async def create_user(request: web.Request) -> web.Response:
    who = await _provisioner(request)
    tenant = request.match_info["tenant"]
    body = await json_object(request)
    _only(body, USER_FIELDS)
    slug = string_field(body, "slug")
    usergroup = _optional_string(body, "usergroup")
    async with connection(request) as conn:
        user = await tenants.create_user(conn, who, tenant, slug, usergroup)
    return _created(user.to_json(), f"{BASE}/tenants/{tenant}/users/{user.slug}")


async def get_user(request: web.Request) -> web.Response:
    who = await _provisioner(request)
    info = request.match_info
    async with connection(request) as conn:
        user = await tenants.get_user(conn, who, info["tenant"], info["user"])
    return web.json_response(user.to_json())


async def replace_user(request: web.Request) -> web.Response:
    """PUT replaces the user's group; ``"usergroup": null`` (or none given) leaves it."""
    who = await _provisioner(request)
    info = request.match_info
    body = await json_object(request)
    _only(body, USER_FIELDS)
    if "slug" in body and string_field(body, "slug") != info["user"]:
        raise InvalidRequest(
            f"slugs are immutable: this is user {info['user']!r}; create a new user instead",
            field="slug",
        )
    usergroup = _optional_string(body, "usergroup")
    async with connection(request) as conn:
        user = await tenants.replace_user(conn, who, info["tenant"], info["user"], usergroup)
    return web.json_response(user.to_json())


async def delete_user(request: web.Request) -> web.Response:
    who = await _provisioner(request)
    info = request.match_info
    async with connection(request) as conn:
        await tenants.delete_user(conn, who, info["tenant"], info["user"])
    return _deleted()


# --- API keys ---


def _role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise InvalidRequest(
            f"role must be one of {', '.join(r.value for r in Role)}, not {text[:20]!r}",
            field="role",
        ) from None


@dataclass(frozen=True, slots=True)
class _KeyRequest:
    """A POST /keys body, checked for shape; ``apikeys.create_key`` checks the rest."""

    role: Role
    user: str | None
    enterprises: list[str]
    usergroups: list[str]
    label: str
    expires_at: datetime.datetime | None


def _key_request(body: dict[str, Any]) -> _KeyRequest:
    _only(body, KEY_FIELDS)
    label = _optional_string(body, "label") or ""
    if len(label) > MAX_LABEL:
        raise InvalidRequest(f"a label has at most {MAX_LABEL} characters", field="label")
    expires = _optional_string(body, "expires_at")
    return _KeyRequest(
        _role(string_field(body, "role")),
        _optional_string(body, "user"),
        _string_list(body, "enterprises"),
        _string_list(body, "usergroups"),
        label,
        None if expires is None else _instant(expires, field="expires_at"),
    )


async def list_keys(request: web.Request) -> web.Response:
    await _operator(request)
    async with connection(request) as conn:
        keys = await apikeys.list_keys(conn)
    return web.json_response({"keys": [k.to_json() for k in keys]})


async def create_key(request: web.Request) -> web.Response:
    """201 with the key and its ``token``, which is shown this once (only a hash is kept)."""
    await _operator(request)
    wanted = _key_request(await json_object(request))
    async with connection(request) as conn:
        info, token = await apikeys.create_key(
            conn,
            wanted.role,
            user=wanted.user,
            enterprises=wanted.enterprises,
            usergroups=wanted.usergroups,
            label=wanted.label,
            expires_at=wanted.expires_at,
        )
    response = _created({**info.to_json(), "token": token}, f"{BASE}/keys/{info.key_id}")
    response.headers["Cache-Control"] = "no-store"  # RFC 9111 §5.2.2.5: a secret inside
    return response


async def get_key(request: web.Request) -> web.Response:
    await _operator(request)
    key_id = request.match_info["key_id"]
    async with connection(request) as conn:
        info = await apikeys.get_key(conn, key_id)
    if info is None:
        raise NotFound(f"no key {key_id!r}", field="key_id")
    return web.json_response(info.to_json())


async def revoke_key(request: web.Request) -> web.Response:
    """Revoke a key; it stays listed with ``revoked_at`` for audits."""
    await _operator(request)
    async with connection(request) as conn:
        info = await apikeys.revoke_key(conn, request.match_info["key_id"])
    return web.json_response(info.to_json())


_TENANT = f"{BASE}/tenants/{{tenant}}"
ROUTES: tuple[Route, ...] = (
    ("GET", f"{BASE}/tenants", list_tenants),
    ("POST", f"{BASE}/tenants", create_tenant),
    ("GET", _TENANT, get_tenant),
    ("PUT", _TENANT, replace_tenant),
    ("DELETE", _TENANT, delete_tenant),
    ("GET", f"{_TENANT}/usergroups", list_usergroups),
    ("POST", f"{_TENANT}/usergroups", create_usergroup),
    ("GET", f"{_TENANT}/usergroups/{{usergroup}}", get_usergroup),
    ("DELETE", f"{_TENANT}/usergroups/{{usergroup}}", delete_usergroup),
    ("GET", f"{_TENANT}/users", list_users),
    ("POST", f"{_TENANT}/users", create_user),
    ("GET", f"{_TENANT}/users/{{user}}", get_user),
    ("PUT", f"{_TENANT}/users/{{user}}", replace_user),
    ("DELETE", f"{_TENANT}/users/{{user}}", delete_user),
    ("GET", f"{BASE}/keys", list_keys),
    ("POST", f"{BASE}/keys", create_key),
    ("GET", f"{BASE}/keys/{{key_id}}", get_key),
    ("DELETE", f"{BASE}/keys/{{key_id}}", revoke_key),
)
