"""wazo-confd-client's ``phone_numbers`` command, replayed request for request.

wazo-confd-client and wazo-lib-rest-client are not on the package index, so
this module repeats what their source does (wazo_confd_client/session.py
``ConfdSession``, crud.py ``MultiTenantCommand``, commands/phone_numbers.py)
over aiohttp: the same method, URL, query encoding (requests' ``urlencode``,
so ``False`` is ``"False"``), headers and JSON body, and the same reading of
the answer. An error is raised as requests' ``raise_for_status`` words it,
after ``check_response`` has set the reason to ``". ".join(response.json())``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import aiohttp

READ_HEADERS = {"Accept": "application/json"}
WRITE_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}
OK_STATUSES = (200, 201, 204)


class HTTPError(Exception):
    """requests.HTTPError as raise_for_status() words it for a 4xx."""

    def __init__(self, status: int, reason: str, url: str) -> None:
        kind = "Client" if status < 500 else "Server"
        super().__init__(f"{status} {kind} Error: {reason} for url: {url}")
        self.status = status
        self.reason = reason


class PhoneNumbers:
    """``client.phone_numbers`` of ``ConfdClient(host, token=..., tenant=...)``."""

    resource = "phone-numbers"

    def __init__(
        self, session: aiohttp.ClientSession, base: str, token: str, tenant: str | None = None
    ) -> None:
        self.session = session
        self.base_url = f"{base}/api/confd/1.1"
        self.token = token
        self._tenant = tenant

    async def _send(
        self,
        method: str,
        part: str,
        headers: dict[str, str],
        params: dict[str, Any] | None = None,
        body: object = None,
    ) -> tuple[int, Any]:
        url = f"{self.base_url.rstrip('/')}/{part.lstrip('/')}"
        if params:
            url += "?" + urlencode(list(params.items()), doseq=True)
        sent = {"X-Auth-Token": self.token, **headers}
        data = None if body is None else json.dumps(body)
        async with self.session.request(method, url, headers=sent, data=data) as resp:
            text = await resp.text()
            if resp.status not in OK_STATUSES:
                reason = resp.reason or ""
                try:
                    messages = json.loads(text)
                except ValueError:
                    pass
                else:
                    reason = ". ".join(messages)
                raise HTTPError(resp.status, reason, url)
            return resp.status, (json.loads(text) if text else None)

    async def list(self, **kwargs: Any) -> Any:
        kwargs.setdefault("recurse", False)
        tenant_uuid = kwargs.pop("tenant_uuid", self._tenant)
        headers = dict(kwargs.get("headers", READ_HEADERS))
        if tenant_uuid:
            headers["Wazo-Tenant"] = tenant_uuid
        return (await self._send("GET", self.resource, headers, params=kwargs))[1]

    async def get(self, resource_id: str, **kwargs: Any) -> Any:
        headers = dict(READ_HEADERS)
        tenant_uuid = kwargs.pop("tenant_uuid", None)
        if tenant_uuid:
            headers["Wazo-Tenant"] = tenant_uuid
        part = f"{self.resource}/{resource_id}"
        return (await self._send("GET", part, headers, params=kwargs))[1]

    async def create(self, body: dict[str, Any], **kwargs: Any) -> Any:
        tenant_uuid = kwargs.pop("tenant_uuid", self._tenant)
        headers = dict(kwargs.get("headers", WRITE_HEADERS))
        if tenant_uuid:
            headers["Wazo-Tenant"] = tenant_uuid
        return (await self._send("POST", self.resource, headers, body=body))[1]

    async def update(self, body: dict[str, Any]) -> None:
        """CRUDCommand.update: PUT the resource back without its ``links``."""
        resource_id = body.get("uuid") or body["id"]
        sent = {k: v for k, v in body.items() if k != "links"}
        await self._send("PUT", f"{self.resource}/{resource_id}", WRITE_HEADERS, body=sent)

    async def delete(self, resource_id: str) -> None:
        await self._send("DELETE", f"{self.resource}/{resource_id}", READ_HEADERS)

    # set_main is left out: the client raises ConfdClientError on any status but 200,
    # and wazo-confd (seed 003) answers PUT /main with 204.
