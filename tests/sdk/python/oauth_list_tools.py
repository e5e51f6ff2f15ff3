"""The official Python MCP SDK (mcp 1.x) against Gatehouse: OAuth through the
consent pages (driven headlessly, as a browser would: cookies kept, forms
submitted), then initialize and tools/list, optionally tools/call.

Usage: python oauth_list_tools.py MCP_URL [TOOL [JSON_ARGUMENTS]]
       python oauth_list_tools.py MCP_URL --connect TOOL ACCOUNT
Prints one JSON object: {"tools": [...], "call": {...} | null, "iss": ...}.

With --connect, TOOL belongs to a service the flow did not connect: the call
first answers with the connect link (a tool error), then, from a session that
declares URL elicitation, with -32042; the script opens that link as a browser
would, allows at the upstream as ACCOUNT, and calls TOOL again with the same
tokens. The object then also has "unconnected" (the tool error) and
"elicitation" ({"code", "url"}).
"""

import asyncio
import html
import html.parser
import json
import re
import sys
from urllib.parse import parse_qs, urljoin, urlparse

import httpx
from mcp import ClientSession
from mcp.shared.exceptions import McpError
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
            else:
                self.forms[-1].setdefault("inputs", []).append(attrs["name"])


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


async def open_connect_link(link: str, account: str) -> None:
    """Opens a connect link as its person would: the page, Continue, the
    upstream's consent (allow as `account`), back to Gatehouse."""
    page = await browser.get(link)
    assert page.status_code == 200, f"connect page: {page.status_code} {page.text[:500]}"
    connect = form(page.text, urlparse(link).path)
    page = await follow(await browser.post(urljoin(link, connect["action"]), data=connect["fields"]))
    assert page.status_code == 200, f"continuation page: {page.status_code} {page.text[:500]}"
    upstream = html.unescape(re.search(r'<a class="button" href="([^"]+)"', page.text).group(1))
    page = await browser.get(upstream)
    assert page.status_code == 200, f"upstream consent: {page.status_code} {page.text[:500]}"
    consent = form(page.text, "/authorize")
    data = dict(consent["fields"], account=account, decision="allow")
    response = await browser.post(urljoin(upstream, consent["action"]), data=data)
    done = await follow(response)
    assert done.status_code == 200 and "Connected" in done.text, f"after the upstream: {done.status_code} {done.text[:500]}"


async def accept_elicitation(context, params):
    raise AssertionError("Gatehouse sends no elicitation requests; it answers with -32042")


async def main():
    mcp_url = sys.argv[1]
    connect = len(sys.argv) > 2 and sys.argv[2] == "--connect"
    tool = sys.argv[3] if connect else (sys.argv[2] if len(sys.argv) > 2 else None)
    account = sys.argv[4] if connect else None
    arguments = {} if connect else (json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})
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
    out = {"call": None}
    async with streamablehttp_client(mcp_url, auth=oauth) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            out["tools"] = [t.name for t in tools.tools]
            if tool and not connect:
                result = await session.call_tool(tool, arguments)
                out["call"] = result.model_dump(mode="json")
            if connect:
                result = await session.call_tool(tool, {})
                out["unconnected"] = result.model_dump(mode="json")
    if connect:
        # A session that declares URL elicitation gets -32042 with the link.
        async with streamablehttp_client(mcp_url, auth=oauth) as (read, write, _):
            async with ClientSession(read, write, elicitation_callback=accept_elicitation) as session:
                await session.initialize()
                try:
                    await session.call_tool(tool, {})
                    raise AssertionError("the call of an unconnected service succeeded")
                except McpError as err:
                    url = err.error.data["elicitations"][0]["url"]
                    out["elicitation"] = {"code": err.error.code, "url": url}
                await open_connect_link(url, account)
                result = await session.call_tool(tool, {})
                out["call"] = result.model_dump(mode="json")
    out["iss"] = got.get("iss")
    print(json.dumps(out))


asyncio.run(main())
