"""A per-user upstream MCP server built with the official Python MCP SDK
(mcp 1.x, FastMCP over Streamable HTTP), for the interop suite.

It is an OAuth resource server of the provider in oidc_provider.mjs: it
publishes protected resource metadata naming that provider (RFC 9728), and
validates every bearer it receives by introspection (RFC 7662) as the
confidential client `interop-mcp-server`. Its tools answer with what the
validated token says, so a test sees whose token Gatehouse sent:

- `whoami`: "you are <sub>".
- `token_info`: {"sub", "client_id", "scope", "token_sha256"} (a hash, never the token).

Listens on 127.0.0.1 port 0 and prints one JSON line on stdout:
{"url": "http://127.0.0.1:PORT/mcp"}. Runs until stdin closes.

Usage: python per_user_server.py ISSUER INTROSPECTION_SECRET
"""

import asyncio
import hashlib
import json
import socket
import sys

import httpx
import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.fastmcp import FastMCP

ISSUER = sys.argv[1].rstrip("/")
SECRET = sys.argv[2]
CLIENT_ID = "interop-mcp-server"
SCOPE = "notes.read"


class IntrospectionVerifier(TokenVerifier):
    """RFC 7662 at the provider: active, issued by it, with the scope this server needs."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.http = httpx.AsyncClient(timeout=10)

    async def verify_token(self, token: str) -> AccessToken | None:
        response = await self.http.post(
            self.endpoint,
            data={"token": token, "token_type_hint": "access_token"},
            auth=(CLIENT_ID, SECRET),
        )
        if response.status_code != 200:
            print(f"introspection answered {response.status_code}", file=sys.stderr)
            return None
        claims = response.json()
        if not claims.get("active") or claims.get("iss", ISSUER) != ISSUER:
            return None
        scopes = claims.get("scope", "").split()
        return AccessToken(
            token=token,
            client_id=claims.get("client_id", ""),
            scopes=scopes,
            expires_at=claims.get("exp"),
            subject=claims.get("sub"),
            claims=claims,
        )


async def main():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mcp"
    metadata = httpx.get(f"{ISSUER}/.well-known/openid-configuration", timeout=10).json()

    app = FastMCP(
        "interop-per-user",
        host="127.0.0.1",
        port=port,
        token_verifier=IntrospectionVerifier(metadata["introspection_endpoint"]),
        auth=AuthSettings(
            issuer_url=ISSUER,
            resource_server_url=url,
            required_scopes=[SCOPE],
            validate_token_resource=False,
        ),
    )

    @app.tool(description="Who the bearer Gatehouse sent belongs to")
    def whoami() -> str:
        token = get_access_token()
        return f"you are {token.subject}"

    @app.tool(description="What the provider said about the bearer Gatehouse sent")
    def token_info() -> str:
        token = get_access_token()
        return json.dumps(
            {
                "sub": token.subject,
                "client_id": token.client_id,
                "scope": " ".join(token.scopes),
                "token_sha256": hashlib.sha256(token.token.encode()).hexdigest(),
            }
        )

    config = uvicorn.Config(app.streamable_http_app(), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.05)
    print(json.dumps({"url": url}), flush=True)
    # Stop when the test closes stdin (or dies).
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    server.should_exit = True
    await serving


asyncio.run(main())
