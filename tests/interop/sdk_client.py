"""The official Python MCP SDK client (mcp 1.x) in the interop suite: OAuth
against Gatehouse with the browser step done by chromium (browser.mjs signs
in at oidc-provider, connects SERVICE, approves), then initialize at
REVISION, tools/list, and TOOL called.

Usage: python sdk_client.py MCP_URL REVISION ACCOUNT SERVICE TOOL
Environment: NODE (a node binary), ARTIFACTS (screenshots).
Prints one JSON object: {"negotiated", "tools", "call", "iss"}.
"""

import asyncio
import json
import sys

import mcp.types
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.auth import OAuthClientMetadata
from pydantic import AnyUrl

from browser_step import MemoryStorage, browser_consent

REDIRECT = "http://127.0.0.1:33419/callback"  # intercepted by the browser, never listened on
MCP_URL, REVISION, ACCOUNT, SERVICE, TOOL = sys.argv[1:6]

# mcp 1.x asks for its latest revision; the matrix pins the one under test.
mcp.types.LATEST_PROTOCOL_VERSION = REVISION


got = {}


async def redirect_handler(url: str) -> None:
    got.update(await browser_consent(url, REDIRECT, ACCOUNT, SERVICE))


async def callback_handler():
    return got["code"], got.get("state")


async def main():
    oauth = OAuthClientProvider(
        server_url=MCP_URL,
        client_metadata=OAuthClientMetadata(
            client_name="interop-python-sdk",
            redirect_uris=[AnyUrl(REDIRECT)],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=MemoryStorage(),
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    out = {}
    async with streamablehttp_client(MCP_URL, auth=oauth) as (read, write, _):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            out["negotiated"] = init.protocolVersion
            out["tools"] = [t.name for t in (await session.list_tools()).tools]
            out["call"] = (await session.call_tool(TOOL, {})).model_dump(mode="json")
    out["iss"] = got.get("iss")
    print(json.dumps(out))


asyncio.run(main())
