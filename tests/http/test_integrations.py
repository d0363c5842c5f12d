"""The README's PBX recipes, as written in deploy/integrations/, against a running cnamd.

Each test reads its recipe file, builds the URL the PBX would build from it,
sends the request byte for byte as that PBX's HTTP client does (request line,
Host, credentials, User-Agent, Accept) over a plain socket, and then does with
the answer what the PBX does: Asterisk keeps a non-empty body, FreePBX puts any
body into the caller's name, Superfecta applies its regular expression to a
2xx body, KAZOO takes a non-404, non-empty body cut to 18 bytes. The source is
untrusted, so the recipe's credentials have to work. The Kamailio recipe runs
in `make interop` (scripts/interop-kamailio.sh).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from api_client import Api

from cnamd.model import Role

RECIPES = Path(__file__).parents[2] / "deploy" / "integrations"
HIT, MISS = "+492216698712", "+15555550100"
LIBCURL_ACCEPT = "*/*"  # libcurl adds it unless told otherwise


@pytest.fixture
def api_settings() -> list[str]:
    return ["http.trusted_networks="]


@dataclass
class Raw:
    status: int
    body: str


async def send(api: Api, url: str, headers: list[tuple[str, str]]) -> Raw:
    """GET ``url``'s path and query on cnamd's socket with exactly ``headers``."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    port = int(api.base.rsplit(":", 1)[1])
    lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        body = await reader.readexactly(int(fields.get("content-length", "0")))
    finally:
        writer.close()
        await writer.wait_closed()
    return Raw(int(head[0].split()[1]), body.decode())


async def key(api: Api) -> tuple[str, str]:
    """A partner key of the demo enterprise, once the cache knows it."""
    key_id, secret = (await api.key(Role.PARTNER, enterprises=["demo"])).split(".")
    for _ in range(200):
        contexts = api.directory.contexts
        if contexts is not None and key_id in contexts.keys:
            return key_id, secret
        await asyncio.sleep(0.025)
    raise AssertionError("key never reached the cache")


def local(url: str, api: Api) -> str:
    return url.replace("http://cnamd.example.net:8080", api.base)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def table(markdown: str, heading: str) -> dict[str, str]:
    """``| field | `value` |`` rows of the table under ``heading``."""
    section = markdown.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| ([^|]+?) \| `([^`]*)` \|$", section, re.M))


# -- Asterisk: CURL() in extensions.conf --------------------------------------------


async def asterisk_caller_name(api: Api, number: str, accept: bool = True) -> str | None:
    """The recipe's CURL() URL with CALLERID(num) filled in, fetched as func_curl's libcurl
    does; returns what CALLERID(name) is set to (None: left alone)."""
    dialplan = (RECIPES / "asterisk-extensions.conf").read_text()
    found = re.search(r"\$\{CURL\((.*)\)\}\)$", dialplan, re.M)
    assert found, "no CURL() in the Asterisk recipe"
    key_id, secret = await key(api)
    url = (
        local(found[1], api)
        .replace("${URIENCODE(${CALLERID(num)})}", quote(number, safe=""))
        .replace("KEYID", key_id)
        .replace("SECRET", secret)
    )
    headers = [("User-Agent", "asterisk-libcurl-agent/1.0")]
    if accept:
        headers.append(("Accept", LIBCURL_ACCEPT))
    reply = await send(api, url, headers)
    return reply.body or None  # ExecIf($["${CNAM}" != ""]?Set(CALLERID(name)=${CNAM}))


@pytest.mark.parametrize("accept", [True, False])
async def test_asterisk_recipe_names_a_known_caller(api: Api, accept: bool) -> None:
    assert await asterisk_caller_name(api, HIT, accept) == "John Doe"


async def test_asterisk_recipe_leaves_an_unknown_caller_alone(api: Api) -> None:
    assert await asterisk_caller_name(api, MISS) is None


async def test_asterisk_recipe_names_a_withheld_caller(api: Api) -> None:
    assert await asterisk_caller_name(api, "anonymous") == "PRIVATE NAME"


# -- FreePBX: CallerID Lookup Sources -------------------------------------------------


async def freepbx_lookup(api: Api, number: str, password: str | None = None) -> Raw:
    """cidlookup's URL: http://user:urlencode(pass)@host:port/path?query with [NUMBER] as
    ${STRREPLACE(CALLERID(num),"+",%2B)}; curl sends the user part as HTTP Basic."""
    source = table((RECIPES / "freepbx.md").read_text(), "CallerID Lookup Sources")
    assert source["Source type"] == "HTTP"
    key_id, secret = await key(api)
    user = source["Username"].replace("KEYID", key_id)
    secret = source["Password"].replace("SECRET", secret) if password is None else password
    cid = number.replace("+", "%2B")
    path = source["Path"].replace("[NUMBER]", cid)
    query = source["Query"].replace("[NUMBER]", cid)
    url = f"http://{source['Host']}:{source['Port']}/{path}?{query}"
    headers = [
        ("Authorization", basic(user, secret)),
        ("User-Agent", "asterisk-libcurl-agent/1.0"),
        ("Accept", LIBCURL_ACCEPT),
    ]
    return await send(api, local(url, api), headers)


async def test_freepbx_lookup_source_names_a_known_caller(api: Api) -> None:
    reply = await freepbx_lookup(api, HIT)
    assert (reply.status, reply.body) == (200, "John Doe")


@pytest.mark.parametrize("number", [MISS, "", "12ab"])
async def test_freepbx_gets_an_empty_body_for_misses_and_errors(api: Api, number: str) -> None:
    """FreePBX sets CALLERID(name) to the body whatever the status: it must be empty."""
    reply = await freepbx_lookup(api, number)
    assert reply.status in (400, 404) and reply.body == ""


async def test_freepbx_with_a_wrong_password_gets_401_and_an_empty_body(api: Api) -> None:
    reply = await freepbx_lookup(api, HIT, password="wrong")
    assert (reply.status, reply.body) == (401, "")


async def test_freepbx_national_caller_id_uses_the_tenants_region(api: Api) -> None:
    reply = await freepbx_lookup(api, "02216698712")
    assert (reply.status, reply.body) == (200, "John Doe")


# -- FreePBX: CID Superfecta "Regular Expressions 2" ----------------------------------

SUPERFECTA_AGENT = (
    "Mozilla/5.0 (Windows; U; Windows NT 5.1; en-US; rv:1.8.1.1) Gecko/20061204 Firefox/2.0.0.1"
)


async def superfecta_caller_name(api: Api, thenumber: str) -> str:
    """Regular_Expressions_2::get_caller_id: $thenumber into the URL, superfecta_base's
    curl (its User-Agent, FAILONERROR: no body for a status >= 400), then the first
    regular expression's capture group, trimmed."""
    source = table((RECIPES / "freepbx.md").read_text(), "CID Superfecta")
    key_id, secret = await key(api)
    url = (
        source["URL"]
        .replace("$thenumber", thenumber)
        .replace("KEYID", key_id)
        .replace("SECRET", secret)
    )
    reply = await send(api, local(url, api), [("User-Agent", SUPERFECTA_AGENT), ("Accept", "*/*")])
    body = reply.body.strip() if reply.status < 400 else ""
    delimited = re.fullmatch(r"/(.*)/([a-z]*)", source["Regular Expressions"], re.S)
    assert delimited, "a PHP regular expression: /pattern/flags"
    flags = re.S if "s" in delimited[2] else 0
    match = re.search(delimited[1], body, flags) if body else None
    return match[1].strip() if match else ""


@pytest.mark.parametrize("thenumber", ["492216698712", "+492216698712"])
async def test_superfecta_regex_source_captures_the_whole_name(api: Api, thenumber: str) -> None:
    assert await superfecta_caller_name(api, thenumber) == "John Doe"


async def test_superfecta_regex_source_finds_nothing_for_an_unknown_caller(api: Api) -> None:
    assert await superfecta_caller_name(api, MISS.lstrip("+")) == ""


# -- KAZOO: system_config/cnam ---------------------------------------------------------

KAZOO_ACCEPT = "text/pbx,text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


async def kazoo_caller_name(api: Api, phone_number: str) -> str | None:
    """stepswitch_cnam_opencnam:request/2 -- http_url rendered with {{phone_number}}, its
    default Accept, Content-Type and Basic auth; 404 or an empty body is no name, a longer
    body is cut to 18 bytes."""
    config = json.loads((RECIPES / "kazoo-cnam.json").read_text())["default"]
    key_id, secret = await key(api)
    url = local(config["http_url"].replace("{{phone_number}}", phone_number), api)
    user = config["http_basic_auth_username"].replace("KEYID", key_id)
    password = config["http_basic_auth_password"].replace("SECRET", secret)
    headers = [
        ("Authorization", basic(user, password)),
        ("Accept", KAZOO_ACCEPT),
        ("User-Agent", "Kazoo Stepswitch CNAM"),
        ("Content-Type", "application/json"),
    ]
    reply = await send(api, url, headers)
    if reply.status == 404 or not reply.body:
        return None
    return reply.body[:18]


async def test_kazoo_http_url_names_a_known_caller(api: Api) -> None:
    assert await kazoo_caller_name(api, HIT) == "John Doe"


async def test_kazoo_http_url_has_no_name_for_an_unknown_caller(api: Api) -> None:
    assert await kazoo_caller_name(api, MISS) is None
