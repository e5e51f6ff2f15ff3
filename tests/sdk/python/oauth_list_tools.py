"""The official Python MCP SDK (mcp 1.x) against Gatehouse: OAuth through the
consent pages (driven headlessly, as a browser would: cookies kept, forms
submitted), then initialize and tools/list, optionally tools/call.

Usage: python oauth_list_tools.py MCP_URL [TOOL [JSON_ARGUMENTS]]
Prints one JSON object: {"tools": [...], "call": {...} | null}.
"""

import asyncio
import html.parser
import json
import sys
from urllib.parse import parse_qs, urljoin, urlparse

import httpx
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from pydantic import AnyUrl

REDIRECT = "http://127.0.0.1:33418/callback"  # never listened on: the redirect is read from Location


class MemoryStorage(TokenStorage):
    def __init__(self):
        self.tokens = None
        self.client = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull):
        self.client = client_info


class Forms(html.parser.HTMLParser):
    """Collects every form: its action and its named inputs and buttons."""

    def __init__(self):
        super().__init__()
        self.forms = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append({"action": attrs.get("action", ""), "fields": {}, "buttons": []})
        elif tag in ("input", "button") and self.forms and attrs.get("name"):
            if tag == "button" or attrs.get("type") == "submit":
                self.forms[-1]["buttons"].append((attrs["name"], attrs.get("value", "")))
            elif attrs.get("type") == "hidden":
                self.forms[-1]["fields"][attrs["name"]] = attrs.get("value", "")


def form(page: str, action_suffix: str):
    parser = Forms()
    parser.feed(page)
    for f in parser.forms:
        if urlparse(f["action"]).path.endswith(action_suffix):
            return f
    raise AssertionError(f"no form posting to …{action_suffix} in the page:\n{page[:2000]}")


got = {}
browser = httpx.AsyncClient(follow_redirects=False, timeout=30)


async def follow(response: httpx.Response) -> httpx.Response:
    """Follows redirects as a browser would, stopping at the client's redirect URI."""
    for _ in range(10):
        if response.status_code not in (301, 302, 303, 307, 308):
            return response
        location = urljoin(str(response.url), response.headers["location"])
        if location.startswith(REDIRECT):
            got.update({k: v[0] for k, v in parse_qs(urlparse(location).query).items()})
            return response
        response = await browser.get(location)
    raise AssertionError("too many redirects")


async def redirect_handler(url: str) -> None:
    page = await follow(await browser.get(url))
    assert page.status_code == 200, f"identity page: {page.status_code} {page.text[:500]}"
    identity = form(page.text, "/identity")
    data = dict(identity["fields"], choice="skip")
    page = await follow(await browser.post(urljoin(str(page.url), identity["action"]), data=data))
    assert page.status_code == 200, f"services page: {page.status_code} {page.text[:500]}"
    approve = form(page.text, "/approve")
    await follow(await browser.post(urljoin(str(page.url), approve["action"]), data=approve["fields"]))
    assert "code" in got, f"no code came back: {got}"


async def callback_handler():
    return got["code"], got.get("state")


async def main():
    mcp_url = sys.argv[1]
    tool = sys.argv[2] if len(sys.argv) > 2 else None
    arguments = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    oauth = OAuthClientProvider(
        server_url=mcp_url,
        client_metadata=OAuthClientMetadata(
            client_name="gatehouse-python-sdk-test",
            redirect_uris=[AnyUrl(REDIRECT)],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=MemoryStorage(),
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    async with streamablehttp_client(mcp_url, auth=oauth) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            call = None
            if tool:
                result = await session.call_tool(tool, arguments)
                call = result.model_dump(mode="json")
    print(json.dumps({"tools": [t.name for t in tools.tools], "call": call, "iss": got.get("iss")}))


asyncio.run(main())
