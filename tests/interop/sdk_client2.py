"""The official Python MCP SDK client, 2.x (mcp 2.3.0, its own venv .tools/py2),
in the interop suite at 2026-07-28: OAuth against Gatehouse with the browser
step done by chromium (browser.mjs signs in at oidc-provider, connects SERVICE,
approves), then the SDK's own era negotiation (mode "auto": server/discover,
then per-request `_meta` and the Mcp-* headers), tools/list, and TOOL called.

"auto" falls back to the initialize handshake when discover fails, so the
negotiated revision and whether discover answered are both reported; the
suite fails the cell unless it is REVISION through discover.

Usage: python sdk_client2.py MCP_URL REVISION ACCOUNT SERVICE TOOL
Environment: NODE (a node binary), ARTIFACTS (screenshots).
Prints one JSON object: {"negotiated", "discovered", "tools", "call", "iss",
"wire"}; "wire" is every POST to MCP_URL as sent: the body's method, its
`_meta` keys and protocol version, the MCP-Protocol-Version, Mcp-Method and
Mcp-Name headers, and the status Gatehouse answered.
"""

import asyncio
import json
import sys

from mcp import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import OAuthClientMetadata
from pydantic import AnyUrl

from browser_step import MemoryStorage, browser_consent

REDIRECT = "http://127.0.0.1:33421/callback"  # intercepted by the browser, never listened on
MCP_URL, REVISION, ACCOUNT, SERVICE, TOOL = sys.argv[1:6]


got = {}
wire = []


async def record(response) -> None:
    request = response.request
    if request.method != "POST" or str(request.url) != MCP_URL:
        return
    try:
        body = json.loads(request.content)
    except ValueError:
        body = {}
    meta = (body.get("params") or {}).get("_meta") or {}
    wire.append(
        {
            "method": body.get("method"),
            "status": response.status_code,
            "protocolVersionHeader": request.headers.get("mcp-protocol-version"),
            "methodHeader": request.headers.get("mcp-method"),
            "nameHeader": request.headers.get("mcp-name"),
            "metaVersion": meta.get("io.modelcontextprotocol/protocolVersion"),
            "metaKeys": sorted(meta),
        }
    )


async def redirect_handler(url: str) -> None:
    got.update(await browser_consent(url, REDIRECT, ACCOUNT, SERVICE))


async def callback_handler() -> AuthorizationCodeResult:
    return AuthorizationCodeResult(code=got["code"], state=got.get("state"), iss=got.get("iss"))


async def main():
    oauth = OAuthClientProvider(
        server_url=MCP_URL,
        client_metadata=OAuthClientMetadata(
            client_name="interop-python-sdk-2",
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
    async with create_mcp_http_client(auth=oauth) as http:
        http.event_hooks = {"request": [], "response": [record]}
        transport = streamable_http_client(MCP_URL, http_client=http)
        async with Client(transport, mode="auto", raise_exceptions=True) as client:
            out["negotiated"] = client.protocol_version
            out["discovered"] = client.session.discover_result is not None
            out["tools"] = [t.name for t in (await client.list_tools()).tools]
            out["call"] = (await client.call_tool(TOOL, {})).model_dump(mode="json", by_alias=True)
    out["iss"] = got.get("iss")
    out["wire"] = wire
    print(json.dumps(out))


asyncio.run(main())
