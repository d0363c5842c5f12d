"""Operators approve or reject tenants' CNAM records (issue #6): cnamd's own JSON API.

Only approved names are served; approving serves the record's name for every
number associated with it, rejecting withdraws it from every cache.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cnamd.access import Duty, Principal, require
from cnamd.errors import InvalidRequest
from cnamd.http.auth import principal
from cnamd.http.bodies import query_int, read_json
from cnamd.http.db import connection
from cnamd.http.family import Route
from cnamd.store import cnam_records
from cnamd.store.cnam_records import CnamRecord

__all__ = ["ROUTES", "record_json"]

_STATES = ("pending", "approved", "rejected")


def record_json(record: CnamRecord) -> dict[str, object]:
    def stamp(at: Any) -> str | None:
        return None if at is None else at.isoformat()

    return {
        "id": str(record.id),
        "tenant": record.tenant,
        "value": record.value,
        "approval": record.approval,
        "rejection_reason": record.rejection_reason,
        "created_at": stamp(record.created_at),
        "approved_at": stamp(record.approved_at),
        "numbers": record.numbers,
    }


def _operator(who: Principal) -> None:
    require(who, Duty.APPROVE)


async def list_records(request: web.Request) -> web.Response:
    """Records in one approval state (default ``pending``), oldest first."""
    _operator(await principal(request))
    state = request.query.get("approval", "pending")
    if state not in _STATES:
        raise InvalidRequest(f"approval is one of {', '.join(_STATES)}", field="approval")
    limit = query_int(request, "limit", default=100, low=1, high=1000)
    offset = query_int(request, "offset", default=0, low=0)
    async with connection(request) as conn:
        found, more = await cnam_records.list_records(
            conn, None, approval=(state,), value=None, limit=limit, offset=offset
        )
    return web.json_response({"items": [record_json(r) for r in found], "more": more})


async def approve(request: web.Request) -> web.Response:
    _operator(await principal(request))
    async with connection(request) as conn:
        record = await cnam_records.approve(conn, request.match_info["record_id"])
    return web.json_response(record_json(record))


async def reject(request: web.Request) -> web.Response:
    """Reject with ``{"reason": "..."}``; Flowroute shows the reason as ``rejection_reason``."""
    _operator(await principal(request))
    body = await read_json(request, unreadable="the body is a JSON object with a reason")
    reason = body.get("reason") if isinstance(body, dict) else None
    if not isinstance(reason, str):
        raise InvalidRequest("a rejection needs a reason (a string)", field="reason")
    async with connection(request) as conn:
        record = await cnam_records.reject(conn, request.match_info["record_id"], reason)
    return web.json_response(record_json(record))


ROUTES: tuple[Route, ...] = (
    ("GET", "/api/operator/cnam-records", list_records),
    ("POST", "/api/operator/cnam-records/{record_id}/approve", approve),
    ("POST", "/api/operator/cnam-records/{record_id}/reject", reject),
)
