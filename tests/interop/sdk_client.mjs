// The official TypeScript MCP SDK client (@modelcontextprotocol/sdk 1.x) in
// the interop suite: OAuth against Gatehouse with the browser step done by
// chromium (browser.mjs signs in at oidc-provider, connects SERVICE,
// approves), then initialize at REVISION, tools/list, and TOOL called.
//
// Usage: node sdk_client.mjs MCP_URL REVISION ACCOUNT SERVICE TOOL
// Environment: ARTIFACTS (screenshots).
// Prints one JSON object: {"negotiated", "tools", "call", "iss"}.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { BrowserProvider } from './browser.mjs';

const REDIRECT = 'http://127.0.0.1:33420/callback'; // intercepted by the browser, never listened on
const [mcpUrl, revision, account, service, tool] = process.argv.slice(2);
/** A transport whose initialize asks for `revision` (the SDK always asks for its latest). */
function transport(provider) {
  const t = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider });
  const send = t.send.bind(t);
  t.send = (message, options) => {
    if (message.method === 'initialize') message = { ...message, params: { ...message.params, protocolVersion: revision } };
    return send(message, options);
  };
  return t;
}

const provider = new BrowserProvider({
  clientName: 'interop-typescript-sdk',
  redirect: REDIRECT,
  account,
  service,
  artifacts: process.env.ARTIFACTS,
});
const got = provider.got;
const first = transport(provider);
try {
  await new Client({ name: 'interop-typescript-sdk', version: '1.0.0' }).connect(first);
  throw new Error('connected without OAuth');
} catch (err) {
  if (!(err instanceof UnauthorizedError)) throw err;
  await first.finishAuth(got.code);
}
const client = new Client({ name: 'interop-typescript-sdk', version: '1.0.0' });
const t = transport(provider);
await client.connect(t);
const out = { negotiated: t.protocolVersion };
out.tools = (await client.listTools()).tools.map((x) => x.name);
out.call = await client.callTool({ name: tool, arguments: {} });
await client.close();
out.iss = got.iss;
console.log(JSON.stringify(out));
