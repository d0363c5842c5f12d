"""A generic HTTP JSON source, configured without code: a URL template, headers, a JSON
pointer to the name and the statuses that mean "no name" (Telnyx, Twilio Lookup's
``caller_name``, Bandwidth and the like; README "Upstream sources")."""

from __future__ import annotations

import contextlib
import json
from typing import Any
from urllib.parse import quote

import aiohttp
import phonenumbers

from cnamd.settings import SourceSettings
from cnamd.upstream.source import ERROR, MISS, Outcome, Result, clean_name

_MAX_BODY = 64 * 1024  # a CNAM answer is a few hundred bytes; more is not one


def expand(template: str, number: str) -> str:
    """The URL for ``number`` (E.164): ``{number}`` the URL-encoded E.164 (``%2B1...``),
    ``{e164}`` with a bare ``+``, ``{digits}`` without it, ``{national}`` the national
    significant number."""
    digits = number[1:]
    url = (
        template.replace("{number}", quote(number, safe=""))
        .replace("{e164}", number)
        .replace("{digits}", digits)
    )
    if "{national}" not in url:
        return url  # no parse: phonenumbers' is about 25 us of a burst's per-number cost
    national = digits
    with contextlib.suppress(phonenumbers.NumberParseException):
        national = str(phonenumbers.parse(number).national_number)
    return url.replace("{national}", national)


def pointed(document: Any, pointer: str) -> Any:
    """RFC 6901: the value at ``pointer`` in ``document``, or None when absent."""
    if not pointer:
        return document
    for raw in pointer.split("/")[1:]:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(document, dict):
            document = document.get(token)
        elif isinstance(document, list) and token.isdigit() and int(token) < len(document):
            document = document[int(token)]
        else:
            return None
    return document


class HttpJsonSource:
    """Asks one HTTP JSON provider over the process's shared ClientSession."""

    def __init__(
        self,
        settings: SourceSettings,
        session: aiohttp.ClientSession,
        max_length: int,
        *,
        template: str | None = None,
        params: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.session = session
        self.max_length = max_length
        self.template = template or settings.url
        self.params = params or {}
        self.headers = {}
        for header in settings.headers:
            name, _, value = header.partition(":")
            self.headers[name.strip()] = value.strip()
        if settings.username:  # RFC 7617, in place of any Authorization header set above
            self.headers = {k: v for k, v in self.headers.items() if k.lower() != "authorization"}
            self.headers["Authorization"] = aiohttp.encode_basic_auth(
                settings.username, settings.password
            )
        self.no_name = frozenset(int(s) for s in settings.no_name_statuses)
        # none of aiohttp's own: Chain._fetch bounds the whole fetch by the source's timeout,
        # and aiohttp's would be a second timer per request (about 10 us of the loop's
        # time a request, bench/README.md, "The burst with its callers on other cores")
        self.timeout = aiohttp.ClientTimeout()

    async def fetch(self, number: str) -> Outcome:
        url = expand(self.template, number)
        try:
            async with self.session.get(
                url,
                params=self.params,
                headers=self.headers,
                timeout=self.timeout,
                allow_redirects=False,
            ) as response:
                if response.status in self.no_name:
                    return MISS
                if response.status != 200:
                    return ERROR
                body = await response.content.read(_MAX_BODY + 1)
        except TimeoutError:
            return Outcome(Result.TIMEOUT)
        except (aiohttp.ClientError, OSError, ValueError):
            return ERROR
        if len(body) > _MAX_BODY:
            return ERROR
        try:
            document = json.loads(body)
        except ValueError:  # HTML, truncated JSON, garbage: never a name, never cached
            return ERROR
        raw = pointed(document, self.settings.name_pointer)
        if raw is None or raw == "":
            return MISS
        name = clean_name(raw, self.max_length)
        return MISS if name is None else Outcome(Result.HIT, name)

    async def close(self) -> None:
        """Nothing of its own: the ClientSession is the chain's, closed there."""
