"""What the Python SDK clients of the interop suite (sdk_client.py for mcp
1.x, sdk_client2.py for 2.x) share: tokens kept in memory, and the browser
step of OAuth, played by chromium through browser.mjs (it signs in at
oidc-provider, connects the service, approves, and reports the callback's
code, state and iss)."""

import asyncio
import json
import os
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


class MemoryStorage:
    """The SDK's TokenStorage protocol, in memory."""

    def __init__(self):
        self.tokens = None
        self.client = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, client_info):
        self.client = client_info


async def browser_consent(url: str, redirect: str, account: str, service: str) -> dict:
    """Opens the authorization URL in chromium as `account`, connects
    `service`, approves, and returns the intercepted callback's parameters."""
    env = dict(
        os.environ,
        AUTHORIZE_URL=url,
        REDIRECT_URI=redirect,
        ACCOUNT=account,
        SERVICE=service,
        INTERCEPT="1",
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [os.environ["NODE"], str(HERE / "browser.mjs")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise AssertionError(f"the browser step failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)
