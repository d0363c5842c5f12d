"""Desk phones' directories over a real socket: per-call lookups, name searches and exports,
parsed back as XML. Demo data: tenant demo (region DE), usergroup sales, user alice."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import pytest
from api_client import Api

from cnamd.model import Role


async def xml(api: Api, path: str) -> ET.Element:
    reply = await api.call("GET", path)
    assert reply.status == 200, (reply.status, reply.body)
    assert reply.headers["Content-Type"] == "text/xml; charset=utf-8"
    return ET.fromstring(reply.body.encode())


def directory_entries(root: ET.Element) -> list[tuple[str | None, str | None]]:
    return [(e.findtext("Name"), e.findtext("Telephone")) for e in root.iter("DirectoryEntry")]


async def add_names(api: Api, rows: list[tuple[str, str, str]]) -> None:
    """(scope, key, name) rows of tenant demo / group sales / user alice; waits until served."""
    async with api.pool.acquire() as conn:
        ids = await conn.fetchrow(
            "SELECT t.id AS t, g.id AS g, u.id AS u FROM tenants t"
            " JOIN usergroups g ON g.tenant_id = t.id JOIN users u ON u.tenant_id = t.id"
            " WHERE t.slug = 'demo' AND g.slug = 'sales' AND u.slug = 'alice'"
        )
        await conn.executemany(
            "INSERT INTO cnam_entries (scope, tenant_id, usergroup_id, user_id, key, is_prefix,"
            " name, approved_at) VALUES ($1, $2, $3, $4, $5, $6, $7, now())",
            [
                (
                    scope,
                    ids["t"],
                    ids["g"] if scope == "usergroup" else None,
                    ids["u"] if scope == "user" else None,
                    key,
                    len(key) < 12,
                    name,
                )
                for scope, key, name in rows
            ],
        )
    scope, key, name = rows[-1]
    ctx = {"tenant": "demo", "user": "alice"} if scope == "user" else {"tenant": "demo"}
    number = key + "1" * (12 - len(key)) if len(key) < 12 else key
    await api.until_served(number, name, **ctx)


# -- per-call lookups -----------------------------------------------------------


@pytest.mark.parametrize(
    "term", ["+492216698712", "%2B492216698712", "02216698712", "492216698712"]
)
async def test_yealink_incoming_call_lookup_echoes_the_phones_number(api: Api, term: str) -> None:
    root = await xml(api, f"/v1/directory/yealink?tenant=demo&term={term}")
    shown = term.replace("%2B", "+")
    assert root.tag == "YealinkIPPhoneDirectory"
    assert directory_entries(root) == [("John Doe", shown)]


async def test_per_call_lookup_uses_the_scope_chain(api: Api) -> None:
    user = await xml(api, "/v1/directory/yealink?tenant=demo&user=alice&term=%2B492216698713")
    block = await xml(api, "/v1/directory/cisco?tenant=demo&term=%2B492216698799")
    global_name = await xml(api, "/v1/directory/yealink?term=%2B12125550001")
    assert directory_entries(user) == [("Jane (mobile)", "+492216698713")]
    assert directory_entries(block) == [("ACME Cologne", "+492216698799")]
    assert directory_entries(global_name) == [("NYC Pizza", "+12125550001")]


@pytest.mark.parametrize("vendor", ["yealink", "cisco"])
async def test_a_miss_is_an_empty_directory(api: Api, vendor: str) -> None:
    root = await xml(api, f"/v1/directory/{vendor}?term=%2B15555550100")
    assert directory_entries(root) == []


async def test_cisco_prompt_says_what_was_found(api: Api) -> None:
    hit = await xml(api, "/v1/directory/cisco?tenant=demo&term=%2B492216698712")
    miss = await xml(api, "/v1/directory/cisco?term=%2B15555550100")
    assert (hit.findtext("Title"), hit.findtext("Prompt")) == ("Directory", "1 found")
    assert miss.findtext("Prompt") == "No name found"


async def test_withheld_caller_gets_the_private_name(api: Api) -> None:
    root = await xml(api, "/v1/directory/yealink?term=anonymous")
    assert directory_entries(root) == [("PRIVATE NAME", "anonymous")]


async def test_unreadable_number_is_not_found_not_an_error(api: Api) -> None:
    root = await xml(api, "/v1/directory/yealink?term=%2B1")
    assert directory_entries(root) == []


async def test_gigaset_reverse_search_hit_and_miss(api: Api) -> None:
    hit = await xml(
        api, "/v1/directory/gigaset?tenant=demo&command=get_list&type=pb&hm=02216698712"
    )
    assert (hit.get("response"), hit.get("type"), hit.get("total")) == ("get_list", "pb", "1")
    assert [(e.findtext("ln"), e.findtext("hm")) for e in hit.iter("entry")] == [
        ("John Doe", "02216698712")
    ]
    miss = await xml(
        api, "/v1/directory/gigaset?command=get_list&type=pb&hm=0015555550100&reqid=X1"
    )
    assert miss.attrib == {
        "response": "get_list",
        "type": "pb",
        "reqid": "X1",
        "notfound": "hm",
        "total": "0",
    }


async def test_gigaset_drops_a_request_id_it_cannot_echo_safely(api: Api) -> None:
    root = await xml(api, "/v1/directory/gigaset?hm=%2B12125550001&reqid=%3Cx%3E")
    assert root.get("reqid") is None and root.get("total") == "1"


# -- name searches ----------------------------------------------------------------


async def test_name_search_matches_the_start_of_any_word(api: Api) -> None:
    doe = await xml(api, "/v1/directory/yealink?tenant=demo&term=doe")
    jo = await xml(api, "/v1/directory/yealink?tenant=demo&term=JO")
    assert directory_entries(doe) == [("Jane Doe", "+492216698713"), ("John Doe", "+492216698712")]
    assert directory_entries(jo) == [("John Doe", "+492216698712")]


async def test_name_search_shows_what_the_user_sees(api: Api) -> None:
    jane = await xml(api, "/v1/directory/yealink?tenant=demo&user=alice&term=jane")
    sales = await xml(api, "/v1/directory/cisco?tenant=demo&user=alice&term=sal")
    assert directory_entries(jane) == [("Jane (mobile)", "+492216698713")]
    assert directory_entries(sales) == [("Sales Lead Berlin", "+4930901820")]


async def test_name_search_leaves_out_prefix_blocks_and_the_global_directory(api: Api) -> None:
    acme = await xml(api, "/v1/directory/yealink?tenant=demo&term=acme")
    pizza = await xml(api, "/v1/directory/yealink?tenant=demo&term=nyc")
    assert directory_entries(acme) == directory_entries(pizza) == []


async def test_gigaset_name_search_by_ln(api: Api) -> None:
    root = await xml(api, "/v1/directory/gigaset?tenant=demo&ln=john")
    assert [(e.findtext("ln"), e.findtext("hm")) for e in root.iter("entry")] == [
        ("John Doe", "+492216698712")
    ]
    miss = await xml(api, "/v1/directory/gigaset?tenant=demo&ln=zz")
    assert (miss.get("notfound"), miss.get("total")) == ("ln", "0")


async def test_names_with_markup_characters_come_back_intact(api: Api) -> None:
    await add_names(api, [("enterprise", "+492216698720", "Smith & O'Neil")])
    root = await xml(api, "/v1/directory/yealink?tenant=demo&term=smith")
    assert directory_entries(root) == [("Smith & O'Neil", "+492216698720")]
    reply = await api.call("GET", "/v1/directory/snom?tenant=demo")
    assert "Smith &amp; O'Neil" in reply.body


async def test_name_search_is_capped(api: Api) -> None:
    await add_names(api, [("enterprise", f"+4930555{i:04d}", f"Test {i:02d}") for i in range(40)])
    yealink = await xml(api, "/v1/directory/yealink?tenant=demo&term=test")
    cisco = await xml(api, "/v1/directory/cisco?tenant=demo&term=test")
    assert len(directory_entries(yealink)) == len(directory_entries(cisco)) == 32
    assert directory_entries(yealink)[0] == ("Test 00", "+49305550000")


async def test_no_term_lists_the_first_names(api: Api) -> None:
    root = await xml(api, "/v1/directory/yealink?tenant=demo")
    assert directory_entries(root) == [("Jane Doe", "+492216698713"), ("John Doe", "+492216698712")]


class TestSmallerSearchLimit:
    @pytest.fixture
    def api_settings(self) -> list[str]:
        return ["directory.search_limit=1", "directory.export_limit=2"]

    async def test_the_settings_cap_searches_and_exports(self, api: Api) -> None:
        search = await xml(api, "/v1/directory/yealink?tenant=demo&user=alice&term=j")
        export = await xml(api, "/v1/directory/snom?tenant=demo&user=alice")
        assert directory_entries(search) == [("Jane (mobile)", "+492216698713")]
        assert len(export.findall("item")) == 2


# -- exports ----------------------------------------------------------------------


async def test_snom_export_of_a_tenant(api: Api) -> None:
    root = await xml(api, "/v1/directory/snom?tenant=demo")
    assert root.tag == "tbook" and root.get("complete") == "true"
    assert [(i.findtext("name"), i.findtext("number"), i.get("index")) for i in root] == [
        ("Jane Doe", "+492216698713", "0"),
        ("John Doe", "+492216698712", "1"),
    ]


async def test_grandstream_export_of_a_user(api: Api) -> None:
    root = await xml(api, "/v1/directory/grandstream?tenant=demo&user=alice")
    got = [(c.findtext("LastName"), c.findtext("Phone/phonenumber")) for c in root.iter("Contact")]
    assert got == [
        ("Jane (mobile)", "+492216698713"),
        ("John Doe", "+492216698712"),
        ("Sales Lead Berlin", "+4930901820"),
    ]


async def test_polycom_export_of_a_user(api: Api) -> None:
    root = await xml(api, "/v1/directory/polycom?tenant=demo&user=alice")
    got = [(i.findtext("ln"), i.findtext("ct")) for i in root.iter("item")]
    assert got == [
        ("Jane (mobile)", "+492216698713"),
        ("John Doe", "+492216698712"),
        ("Sales Lead Berlin", "+4930901820"),
    ]


async def test_exports_show_the_name_a_lookup_answers(api: Api) -> None:
    """A user's prefix block outranks the enterprise's entry for a number inside it."""
    await add_names(api, [("user", "+4922166987", "My Cologne")])
    root = await xml(api, "/v1/directory/polycom?tenant=demo&user=alice")
    got = dict((i.findtext("ct"), i.findtext("ln")) for i in root.iter("item"))
    assert got["+492216698712"] == "My Cologne"
    assert got["+492216698713"] == "Jane (mobile)"


async def test_without_a_tenant_the_export_is_empty(api: Api) -> None:
    root = await xml(api, "/v1/directory/polycom")
    assert root.findall("item_list/item") == []


async def test_unknown_vendor_is_404_naming_the_field(api: Api) -> None:
    reply = await api.call("GET", "/v1/directory/nokia")
    assert reply.status == 404 and reply.body["field"] == "vendor"


async def test_unknown_tenant_is_404(api: Api) -> None:
    reply = await api.call("GET", "/v1/directory/snom?tenant=nosuch")
    assert reply.status == 404 and reply.body["field"] == "tenant"


class TestPhonesWithKeys:
    """From an untrusted source a phone's URL carries account_sid/auth_token."""

    @pytest.fixture
    def api_settings(self) -> list[str]:
        return ["http.trusted_networks="]

    async def _user_key(self, api: Api) -> tuple[str, str]:
        token = await api.key(Role.USER, user="alice")
        key_id, secret = token.split(".")
        for _ in range(200):
            contexts = api.directory.contexts
            if contexts is not None and key_id in contexts.keys:
                return key_id, secret
            await asyncio.sleep(0.025)
        raise AssertionError("key never reached the cache")

    async def test_a_user_key_in_the_url_sees_its_users_names(self, api: Api) -> None:
        key_id, secret = await self._user_key(api)
        creds = f"account_sid={key_id}&auth_token={secret}"
        lookup = await xml(api, f"/v1/directory/yealink?{creds}&term=%2B492216698713")
        export = await xml(api, f"/v1/directory/snom?{creds}")
        assert directory_entries(lookup) == [("Jane (mobile)", "+492216698713")]
        assert [i.findtext("name") for i in export] == [
            "Jane (mobile)",
            "John Doe",
            "Sales Lead Berlin",
        ]

    @pytest.mark.parametrize("query", ["", "account_sid=nosuchkey1&auth_token=x"])
    async def test_without_a_valid_key_it_is_401(self, api: Api, query: str) -> None:
        reply = await api.call("GET", f"/v1/directory/polycom?{query}")
        assert reply.status == 401 and reply.body["field"] == "authorization"

    async def test_a_user_key_cannot_read_another_user(self, api: Api) -> None:
        key_id, secret = await self._user_key(api)
        reply = await api.call(
            "GET",
            f"/v1/directory/snom?account_sid={key_id}&auth_token={secret}&tenant=demo&user=bob",
        )
        assert reply.status == 404 and reply.body["field"] == "user"
