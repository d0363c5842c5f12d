"""An OpenCNAM-compatible source: ``GET {url}/v3/phone/{number}?format=json`` with
``account_sid``/``auth_token`` (or HTTP Basic): OpenCNAM itself, the providers
that copied its API, and another cnamd (http/opencnam.py is its server side)."""

from __future__ import annotations

import aiohttp

from cnamd.settings import SourceSettings
from cnamd.upstream.http_json import HttpJsonSource


def opencnam_source(
    settings: SourceSettings, session: aiohttp.ClientSession, max_length: int
) -> HttpJsonSource:
    """An HttpJsonSource reading ``/name`` from ``/v3/phone/{number}``."""
    params = {"format": "json"}
    if settings.account_sid:
        params["account_sid"] = settings.account_sid
        params["auth_token"] = settings.auth_token
    template = settings.url.rstrip("/") + "/v3/phone/{number}"
    return HttpJsonSource(settings, session, max_length, template=template, params=params)
