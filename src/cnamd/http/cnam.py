"""Seed 000's CNAM endpoints: the user, usergroup and enterprise phone books.

``GET .../cnam`` lists by phone with ``next``/``count``; ``POST .../cnam/{phone}``
creates or replaces; ``DELETE .../cnam/{phone}`` answers ``wrong-cnam`` when
there is nothing to delete. The list's array is ``cnam``, as the seed's
example has it (its parameter table says ``cname``). ``POST .../cnam-ranges``
stores a range of numbers as the fewest prefixes that cover it; prefixes are
listed with the numbers, flagged ``"prefix": true``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web

from cnamd.access import Principal
from cnamd.errors import InvalidName, InvalidNumber, NotFound
from cnamd.http.auth import principal
from cnamd.http.bodies import json_object, query_int, string_field
from cnamd.http.db import connection
from cnamd.http.family import Route
from cnamd.http.keys import SETTINGS, main_app
from cnamd.model import CnamEntry, Owner
from cnamd.names import validate_name
from cnamd.numbers import normalize_prefix, range_to_prefixes, written_number
from cnamd.store import cnam, owners

__all__ = ["BOOKS", "ROUTES"]

#: seed 000: "range: 1…500, default: 50"
PAGE_DEFAULT, PAGE_MAX = 50, 500

Resolve = Callable[[web.Request, asyncpg.Connection, Principal], Awaitable[Owner]]


def entry_json(entry: CnamEntry) -> dict[str, object]:
    """Seed 000's ``{"phone", "name"}``; a prefix entry adds ``"prefix": true``."""
    body: dict[str, object] = {"phone": entry.phone, "name": entry.name}
    if entry.prefix:
        body["prefix"] = True
    return body


def _page_start(raw: str | None) -> str | None:
    """The ``next`` parameter as a key. An unencoded ``+`` arrives as a space
    (form decoding), and a bare digit string can only mean ``+`` and those digits."""
    if raw is None:
        return None
    text = raw.strip()
    if text.isdigit():
        text = "+" + text
    return normalize_prefix(text, field="next")


def _delete_keys(raw: str, region: str | None) -> list[str]:
    """The keys ``raw`` may name: the number read with the owner's region, then
    the prefix written exactly so (``+4922166987``)."""
    try:
        keys = [written_number(raw, region, field="phone")]
    except InvalidNumber as exc:
        try:
            return [normalize_prefix(raw, field="phone")]
        except InvalidNumber:
            raise exc from None
    with contextlib.suppress(InvalidNumber):
        keys.append(normalize_prefix(raw, field="phone"))
    return keys


class PhoneBook:
    """The four handlers of one family of paths, bound to how it finds its owner."""

    def __init__(self, resolve: Resolve) -> None:
        self.resolve = resolve

    async def list(self, request: web.Request) -> web.Response:
        who = await principal(request)
        count = query_int(request, "count", default=PAGE_DEFAULT, low=1, high=PAGE_MAX)
        start = _page_start(request.query.get("next"))
        async with connection(request) as conn:
            owner = await self.resolve(request, conn, who)
            entries, following = await cnam.list_entries(conn, owner, start, count)
        return web.json_response({"cnam": [entry_json(e) for e in entries], "next": following})

    async def put(self, request: web.Request) -> web.Response:
        who = await principal(request)
        body = await json_object(request)
        max_length = main_app(request)[SETTINGS].names.max_length
        async with connection(request) as conn:
            owner = await self.resolve(request, conn, who)
            phone = written_number(request.match_info["phone"], owner.region, field="phone")
            name = validate_name(
                string_field(body, "name", error=InvalidName), max_length=max_length
            )
            await cnam.put_entries(conn, owner, [phone], name, prefix=False)
        return web.json_response({})

    async def delete(self, request: web.Request) -> web.Response:
        who = await principal(request)
        raw = request.match_info["phone"]
        async with connection(request) as conn:
            owner = await self.resolve(request, conn, who)
            if not await cnam.delete_entry(conn, owner, _delete_keys(raw, owner.region)):
                raise NotFound(f"no CNAM entry for {raw!r}", field="phone", status="wrong-cnam")
        return web.json_response({})

    async def put_range(self, request: web.Request) -> web.Response:
        who = await principal(request)
        body = await json_object(request)
        settings = main_app(request)[SETTINGS]
        async with connection(request) as conn:
            owner = await self.resolve(request, conn, who)
            start = written_number(string_field(body, "start"), owner.region, field="start")
            end = written_number(string_field(body, "end"), owner.region, field="end")
            name = validate_name(
                string_field(body, "name", error=InvalidName), max_length=settings.names.max_length
            )
            prefixes = range_to_prefixes(start, end, max_span=settings.ranges.max_span)
            await cnam.put_entries(conn, owner, prefixes, name, prefix=True)
        entries = [CnamEntry(p, name, prefix=True) for p in prefixes]
        return web.json_response(
            {"start": start, "end": end, "name": name, "cnam": [entry_json(e) for e in entries]}
        )


async def _user(request: web.Request, conn: asyncpg.Connection, who: Principal) -> Owner:
    return await owners.user_owner(conn, who)


async def _usergroup(request: web.Request, conn: asyncpg.Connection, who: Principal) -> Owner:
    return await owners.usergroup_owner(conn, who, request.match_info["usergroup"])


async def _enterprise(request: web.Request, conn: asyncpg.Connection, who: Principal) -> Owner:
    return await owners.enterprise_owner(conn, who, request.match_info["enterprise"])


BOOKS: list[tuple[str, Resolve]] = [
    ("/api/user", _user),
    ("/api/partner/usergroup/{usergroup}", _usergroup),
    ("/api/partner/enterprise/{enterprise}", _enterprise),
]


def _routes(base: str, book: PhoneBook) -> tuple[Route, ...]:
    return (
        ("GET", f"{base}/cnam", book.list),
        ("POST", f"{base}/cnam/{{phone}}", book.put),
        ("DELETE", f"{base}/cnam/{{phone}}", book.delete),
        ("POST", f"{base}/cnam-ranges", book.put_range),
    )


ROUTES = tuple(route for base, resolve in BOOKS for route in _routes(base, PhoneBook(resolve)))
