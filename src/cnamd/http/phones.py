"""``GET /v1/directory/{vendor}``: desk phones look a caller up, or fetch a phone book, as XML.

Phones cannot add headers, so their URL carries the credentials as
``account_sid``/``auth_token`` (a per-phone or per-user API key), as for
OpenCNAM; ``tenant``/``user`` pick the scopes within the key's reach.

* ``yealink`` and ``cisco`` take ``term`` (Yealink fills ``#SEARCH`` with it),
  ``gigaset`` takes ``hm`` (a number) or ``ln``/``fn`` (a name), and optional
  ``reqid``, echoed. A number is the scoped lookup a ``/v1/lookup`` would make,
  from the cache: one entry, whose number is the term as the phone sent it
  (the phone matches its caller against that string), or none. A withheld
  caller (``anonymous``) gets ``names.private_name``. Any other term is a name
  search -- the names it begins, or begins a word of -- capped at
  ``directory.search_limit``; no term lists the first names.
* ``snom``, ``grandstream`` and ``polycom`` are exports of every name the
  phone's user (or tenant) sees in their own scopes, up to
  ``directory.export_limit``, for phones that download a directory and match
  callers locally.

Names for searches and exports come from the database (store/directories.py
says why), each checked against the cache, so a phone lists the name a lookup
of that number would answer (a more specific scope's prefix block wins there).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from aiohttp import web

from cnamd import phonebooks
from cnamd.access import Principal
from cnamd.errors import InvalidNumber, NotFound
from cnamd.http.answers import ask, context
from cnamd.http.auth import lookup_principal
from cnamd.http.db import connection
from cnamd.http.family import Route
from cnamd.http.keys import DIRECTORY, SETTINGS, main_app
from cnamd.phonebooks import Entry
from cnamd.presentation import Unavailable, unavailable
from cnamd.store import directories

__all__ = ["ROUTES", "VENDORS"]

_EXPORTS: dict[str, Callable[[Iterable[Entry]], bytes]] = {
    "snom": phonebooks.snom,
    "grandstream": phonebooks.grandstream,
    "polycom": phonebooks.polycom,
}
_SEARCHES = ("yealink", "cisco", "gigaset")
VENDORS = (*_SEARCHES, *_EXPORTS)
# What a phone sends for a caller: digits, a leading "+", separators.
_NUMBER = re.compile(r"\+?[0-9][0-9 ()./-]*")
# Gigaset's request id is echoed into an attribute: take only what it sends.
_REQID = re.compile(r"[A-Za-z0-9_-]{1,32}")


async def directory(request: web.Request) -> web.Response:
    vendor = request.match_info["vendor"]
    if vendor not in VENDORS:
        raise NotFound(
            f"no phone directory {vendor[:32]!r}; one of {', '.join(VENDORS)}", field="vendor"
        )
    who = lookup_principal(request)
    limits = main_app(request)[SETTINGS].directory
    query = request.query
    if vendor in _EXPORTS:
        body = _EXPORTS[vendor](await _names(request, who, None, limits.export_limit))
    elif vendor == "gigaset":
        field, term = _gigaset_term(query)
        reqid = query.get("reqid", "")
        entries = await _search(request, who, term)
        body = phonebooks.gigaset(
            entries, searched=field, reqid=reqid if _REQID.fullmatch(reqid) else None
        )
    else:
        entries = await _search(request, who, query.get("term"))
        if vendor == "yealink":
            body = phonebooks.yealink(entries)
        else:
            prompt = f"{len(entries)} found" if entries else "No name found"
            body = phonebooks.cisco(entries, "Directory", prompt)
    return web.Response(body=body, content_type="text/xml", charset="utf-8")


def _gigaset_term(query: Mapping[str, str]) -> tuple[str, str | None]:
    """The searched field and its value: ``hm`` (a number) first, then ``ln``, ``fn``."""
    for field in ("hm", "ln", "fn"):
        if query.get(field):
            return field, query[field]
    return "hm", None


async def _search(request: web.Request, who: Principal | None, term: str | None) -> list[Entry]:
    """A per-call lookup when ``term`` is a number (or a withheld caller), else a name search."""
    text = (term or "").strip()
    if term and term[0] == " " and text[:1].isdigit():
        text = "+" + text  # an unencoded "+" in a query string arrives as a space
    limit = main_app(request)[SETTINGS].directory.search_limit
    if not text:
        return await _names(request, who, None, limit)
    if not (_NUMBER.fullmatch(text) or unavailable(text) is not None):
        return await _names(request, who, text.lower(), limit)
    try:
        answer = ask(request, text, who)
    except InvalidNumber:
        return []  # a phone can show "not found", not an error
    if answer.unavailable is Unavailable.PRIVATE:
        return [Entry(main_app(request)[SETTINGS].names.private_name, text)]
    return [] if answer.found is None else [Entry(answer.found.name, text)]


async def _names(
    request: web.Request, who: Principal | None, term: str | None, limit: int
) -> list[Entry]:
    """The asker's names in name order (``term``: lower case), as a lookup would show them."""
    ctx, _ = context(request, who)
    async with connection(request) as conn:
        rows = await directories.visible_numbers(conn, ctx, term, limit)
    cache = main_app(request)[DIRECTORY]
    entries = []
    for number, stored in rows:
        found = cache.resolve(number, ctx)
        name = stored if found is None else found.name
        if term and name != stored and f" {term}" not in f" {name.lower()}":
            continue
        entries.append(Entry(name, number))
    return entries


ROUTES: tuple[Route, ...] = (("GET", "/v1/directory/{vendor}", directory),)
