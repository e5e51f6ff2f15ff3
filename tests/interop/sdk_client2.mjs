// The official TypeScript MCP client, v2 (@modelcontextprotocol/client 2.x),
// in the interop suite at 2026-07-28: OAuth against Gatehouse with the browser
// step done by chromium (browser.mjs signs in at oidc-provider, connects
// SERVICE, approves), then version negotiation pinned to REVISION (the client
// sends server/discover and must be offered it; no fallback to initialize),
// tools/list with the per-request `_meta` envelope, and TOOL called.
//
// Usage: node sdk_client2.mjs MCP_URL REVISION ACCOUNT SERVICE TOOL
// Environment: ARTIFACTS (screenshots).
// Prints one JSON object: {"negotiated", "era", "tools", "call", "iss", "wire"};
// "wire" is every POST to MCP_URL as sent: the body's method, its `_meta` keys
// and protocol version, the MCP-Protocol-Version, Mcp-Method and Mcp-Name
// headers, and the status Gatehouse answered.
import { Client, StreamableHTTPClientTransport, UnauthorizedError } from '@modelcontextprotocol/client';
import { BrowserProvider } from './browser.mjs';

const REDIRECT = 'http://127.0.0.1:33422/callback'; // intercepted by the browser, never listened on
const [mcpUrl, revision, account, service, tool] = process.argv.slice(2);
const wire = [];
/** fetch that records each POST to the MCP endpoint (the transport's every request goes through it). */
async function recording(url, init = {}) {
  const response = await fetch(url, init);
  if ((init.method ?? 'GET') === 'POST' && String(url) === mcpUrl) {
    const headers = new Headers(init.headers);
    let body = {};
    try {
      body = JSON.parse(init.body);
    } catch {}
    const meta = body?.params?._meta ?? {};
    wire.push({
      method: body?.method,
      status: response.status,
      protocolVersionHeader: headers.get('mcp-protocol-version'),
      methodHeader: headers.get('mcp-method'),
      nameHeader: headers.get('mcp-name'),
      metaVersion: meta['io.modelcontextprotocol/protocolVersion'],
      metaKeys: Object.keys(meta).sort(),
    });
  }
  return response;
}

const options = { versionNegotiation: { mode: { pin: revision } } };
const info = { name: 'interop-typescript-client-2', version: '1.0.0' };
const provider = new BrowserProvider({
  clientName: 'interop-typescript-client-2',
  redirect: REDIRECT,
  account,
  service,
  artifacts: process.env.ARTIFACTS,
});
const got = provider.got;
const first = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider, fetch: recording });
try {
  await new Client(info, options).connect(first);
  throw new Error('connected without OAuth');
} catch (err) {
  if (!(err instanceof UnauthorizedError)) throw err;
  await first.finishAuth(got.code, got.iss);
}
const client = new Client(info, options);
await client.connect(new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider, fetch: recording }));
const out = { negotiated: client.getNegotiatedProtocolVersion(), era: client.getProtocolEra() };
out.tools = (await client.listTools()).tools.map((x) => x.name);
out.call = await client.callTool({ name: tool, arguments: {} });
await client.close();
out.iss = got.iss;
out.wire = wire;
console.log(JSON.stringify(out));
