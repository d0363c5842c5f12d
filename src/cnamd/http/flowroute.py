"""Flowroute-compatible CNAM records (seed 001, Flowroute's Numbers v2 ``/v2/cnams``).

JSON:API bodies (``application/vnd.api+json``), HTTP Basic with the key id as
the user and the secret as the password (the vendor's ``accessKey:secretKey``).
Checked against flowroute-sdk-v3-python's ``cnams_controller.py``: it sends
``Accept: application/json`` (both are served), creates with a form-encoded
``value=``, associates by ``GET /v2/numbers?contains=`` then ``PATCH
/v2/numbers/{data[0].id}/relationships/cnam/{cnam_id}`` with no body, and
treats any 2xx as success. Errors keep the vendor's ``errors`` array here
(``error_shape``, the family's: http/family.py), not cnamd's own error body.
"""

from __future__ import annotations

import datetime
import json
import uuid
from typing import Any

from aiohttp import web
from yarl import URL

from cnamd import errors
from cnamd.http.auth import principal
from cnamd.http.bodies import read_form, read_json
from cnamd.http.db import connection
from cnamd.http.errors import status_of
from cnamd.http.family import Route
from cnamd.http.keys import SETTINGS, main_app
from cnamd.http.tenant_header import TENANT_HEADER, select_tenant
from cnamd.store import cnam_records
from cnamd.store.cnam_records import CnamRecord, NumberRow
from cnamd.store.phone_numbers import require_manager

__all__ = ["ROUTES", "error_shape"]

JSONAPI = "application/vnd.api+json"
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
_INVALID = "Invalid value."


def _answer(body: object, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type=JSONAPI, charset="utf-8")


def error_shape(_request: web.Request, exc: errors.CnamdError) -> web.Response:
    """The vendor's error array; a 422 details the field as ``{field: [reason]}``."""
    code = status_of(exc)
    if code == 400:
        code = 422
    detail: object = exc.reason
    if code == 422:
        detail = {exc.field or "body": [exc.reason]}
    response = _answer({"errors": [{"detail": detail, "id": str(uuid.uuid4()), "status": code}]})
    response.set_status(code)
    if code == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="cnamd"'
    elif isinstance(exc, errors.TooManyRequests):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


# --- query parameters: 422 {"field": ["Invalid value."]} as the seed shows ---


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise errors.InvalidRequest(_INVALID, field=name)
    return int(raw)


def _bool(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    word = raw.strip().lower()
    if word in ("true", "1"):
        return True
    if word in ("false", "0"):
        return False
    raise errors.InvalidRequest(_INVALID, field=name)


def _page_links(request: web.Request, limit: int, offset: int, more: bool) -> dict[str, str]:
    """``self`` and, when a page follows, ``next`` (seed: ``?is_approved=True&limit=..``)."""
    here = request.url.update_query(limit=str(limit), offset=str(offset))
    links = {"self": str(here)}
    if more:
        links["next"] = str(here.update_query(offset=str(offset + limit)))
    return links


def _stamp(at: datetime.datetime | None) -> str | None:
    """UTC with microseconds, as the seed prints them: ``2018-04-16 16:20:32.939166+00:00``."""
    if at is None:
        return None
    return at.astimezone(datetime.UTC).isoformat(sep=" ", timespec="microseconds")


def _cnam(record: CnamRecord, base: URL) -> dict[str, object]:
    return {
        "type": "cnam",
        "id": str(record.id),
        "attributes": {
            "value": record.value,
            "is_approved": record.is_approved,
            "approval_datetime": _stamp(record.approved_at),
            "creation_datetime": _stamp(record.created_at),
            "rejection_reason": record.rejection_reason,
        },
        "links": {"self": str(base.with_path(f"/v2/cnams/{record.id}"))},
    }


def _number(row: NumberRow, base: URL) -> dict[str, object]:
    cnam = None if row.cnam_record_id is None else {"type": "cnam", "id": str(row.cnam_record_id)}
    return {
        "type": "number",
        "id": row.digits,
        "attributes": {
            "value": row.digits,
            "alias": None,
            "caller_id_name": row.caller_id_name,
            "cnam_lookups_enabled": True,
            "number_type": "standard",
        },
        "relationships": {"cnam": {"data": cnam}},
        "links": {"self": str(base.with_path(f"/v2/numbers/{row.digits}"))},
    }


def _base(request: web.Request) -> URL:
    return request.url.with_path("/").with_query(None)


# --- handlers ---


async def list_cnams(request: web.Request) -> web.Response:
    """``GET /v2/cnams``: the tenant's records, filtered and paged."""
    limit = _int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _int(request, "offset", 0, 0, 2**31 - 1)
    approved = _bool(request, "is_approved")
    value = request.query.get("value") or None
    approval = None if approved is None else ("approved",) if approved else ("pending", "rejected")
    who = await principal(request)
    async with connection(request) as conn:
        tenant = await select_tenant(conn, who, request.headers.get(TENANT_HEADER))
        found, more = await cnam_records.list_records(
            conn, tenant, approval=approval, value=value, limit=limit, offset=offset
        )
    base = _base(request)
    return _answer(
        {
            "data": [_cnam(r, base) for r in found],
            "links": _page_links(request, limit, offset, more),
        }
    )


async def get_cnam(request: web.Request) -> web.Response:
    who = await principal(request)
    async with connection(request) as conn:
        tenant = await select_tenant(conn, who, request.headers.get(TENANT_HEADER))
        record = await cnam_records.get_record(conn, tenant, request.match_info["cnam_id"])
    return _answer({"data": _cnam(record, _base(request))})


async def _value(request: web.Request) -> str:
    """``value`` from a form (the SDK's way), flat JSON, or a JSON:API document."""
    if request.content_type in ("application/json", JSONAPI):
        body: Any = await read_json(request, unreadable="the body is not JSON")
        if isinstance(body, dict) and isinstance(body.get("data"), dict):
            body = body["data"].get("attributes") or {}
        raw = body.get("value") if isinstance(body, dict) else None
    else:
        raw = (await read_form(request)).get("value")
    if raw is None or raw == "":
        raise errors.InvalidRequest("Missing data for required field.", field="value")
    if not isinstance(raw, str):
        raise errors.InvalidRequest("Not a valid string.", field="value")
    return raw


async def create_cnam(request: web.Request) -> web.Response:
    """``POST /v2/cnams``: a new record, pending an operator's approval (201)."""
    who = await principal(request)
    require_manager(who)
    value = cnam_records.check_value(
        await _value(request), main_app(request)[SETTINGS].names.max_length
    )
    async with connection(request) as conn:
        tenant = await select_tenant(conn, who, request.headers.get(TENANT_HEADER))
        record = await cnam_records.create_record(conn, tenant, value)
    return _answer({"data": _cnam(record, _base(request))}, status=201)


async def delete_cnam(request: web.Request) -> web.Response:
    """``DELETE /v2/cnams/{id}``: the record and every name it published go (204)."""
    who = await principal(request)
    require_manager(who)
    async with connection(request) as conn:
        tenant = await select_tenant(conn, who, request.headers.get(TENANT_HEADER))
        await cnam_records.delete_record(conn, tenant, request.match_info["cnam_id"])
    return web.Response(status=204)


def _digits(request: web.Request, name: str) -> str | None:
    """A digit-string filter of ``/v2/numbers`` (the SDK sends them as integers)."""
    raw = request.query.get(name) or None
    if raw is not None and not (raw.isascii() and raw.isdigit() and len(raw) <= 15):
        raise errors.InvalidRequest(_INVALID, field=name)
    return raw


async def list_numbers(request: web.Request) -> web.Response:
    """``GET /v2/numbers``: the tenant's E.164 numbers, filtered on their digits by
    ``starts_with``, ``ends_with`` and ``contains`` (all must match), and paged."""
    limit = _int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _int(request, "offset", 0, 0, 2**31 - 1)
    digits = cnam_records.DigitFilter(
        _digits(request, "starts_with"), _digits(request, "ends_with"), _digits(request, "contains")
    )
    who = await principal(request)
    async with connection(request) as conn:
        tenant = await select_tenant(conn, who, request.headers.get(TENANT_HEADER))
        found, more = await cnam_records.list_numbers(conn, tenant, digits, limit, offset)
    base = _base(request)
    return _answer(
        {
            "data": [_number(n, base) for n in found],
            "links": _page_links(request, limit, offset, more),
        }
    )


async def get_number(request: web.Request) -> web.Response:
    """``GET /v2/numbers/{id}``: one of the tenant's numbers by its digits."""
    who = await principal(request)
    async with connection(request) as conn:
        tenant = await select_tenant(conn, who, request.headers.get(TENANT_HEADER))
        row = await cnam_records.get_number(conn, tenant, request.match_info["number_id"])
    return _answer({"data": _number(row, _base(request))})


def _relationship(record_id: int | None) -> dict[str, object]:
    """The vendor's answer to a relationship change: the record's id and when
    the change was made (``{"data": {"attributes": {"date_created"}, "id", "type"}}``)."""
    now = datetime.datetime.now(datetime.UTC)
    return {
        "data": {
            "attributes": {"date_created": _stamp(now)},
            "id": None if record_id is None else str(record_id),
            "type": "cnam",
        }
    }


async def associate(request: web.Request) -> web.Response:
    """``PATCH /v2/numbers/{id}/relationships/cnam/{cnam_id}`` (202)."""
    who = await principal(request)
    require_manager(who)
    async with connection(request) as conn:
        tenant = await select_tenant(conn, who, request.headers.get(TENANT_HEADER))
        record = await cnam_records.associate(
            conn, tenant, request.match_info["number_id"], request.match_info["cnam_id"]
        )
    return _answer(_relationship(record.id), status=202)


async def dissociate(request: web.Request) -> web.Response:
    """``DELETE /v2/numbers/{id}/relationships/cnam`` (202): the number shows no name;
    the answer names the record it was associated with (``id`` null: none)."""
    who = await principal(request)
    require_manager(who)
    async with connection(request) as conn:
        tenant = await select_tenant(conn, who, request.headers.get(TENANT_HEADER))
        record_id = await cnam_records.dissociate(conn, tenant, request.match_info["number_id"])
    return _answer(_relationship(record_id), status=202)


ROUTES: tuple[Route, ...] = (
    ("GET", "/v2/cnams", list_cnams),
    ("POST", "/v2/cnams", create_cnam),
    ("GET", "/v2/cnams/{cnam_id}", get_cnam),
    ("DELETE", "/v2/cnams/{cnam_id}", delete_cnam),
    ("GET", "/v2/numbers", list_numbers),
    ("GET", "/v2/numbers/{number_id}", get_number),
    ("PATCH", "/v2/numbers/{number_id}/relationships/cnam/{cnam_id}", associate),
    ("DELETE", "/v2/numbers/{number_id}/relationships/cnam", dissociate),
)
