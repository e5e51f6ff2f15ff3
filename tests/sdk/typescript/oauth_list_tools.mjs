// The official TypeScript MCP SDK (@modelcontextprotocol/sdk 1.x) against
// Gatehouse: OAuth through the consent pages (driven headlessly, as a browser
// would: cookies kept, redirects followed by hand, forms submitted), then
// initialize, tools/list, the connect link of a service the flow did not
// connect (a tool error, then -32042 from a client declaring URL elicitation),
// the link opened, and the tool called again with the same tokens.
//
// Usage: node oauth_list_tools.mjs MCP_URL TOOL ACCOUNT
// Prints one JSON object: {"tools", "unconnected", "elicitation", "call", "iss"}.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';

const REDIRECT = 'http://127.0.0.1:33418/callback'; // never listened on: the redirect is read from Location
const [mcpUrl, tool, account] = process.argv.slice(2);

// === A browser: a cookie jar and hand-followed redirects ===

const jar = new Map();

async function browse(url, init = {}) {
  const headers = { ...(init.headers ?? {}) };
  if (jar.size) headers.cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
  const response = await fetch(url, { ...init, headers, redirect: 'manual' });
  for (const cookie of response.headers.getSetCookie()) {
    const [pair, ...attributes] = cookie.split(';');
    const eq = pair.indexOf('=');
    const name = pair.slice(0, eq).trim();
    if (attributes.some((a) => a.trim().toLowerCase() === 'max-age=0')) jar.delete(name);
    else jar.set(name, pair.slice(eq + 1).trim());
  }
  return response;
}

const got = {};

/** Follows redirects, stopping at the client's redirect URI (whose query is kept). */
async function follow(response) {
  for (let i = 0; i < 10; i++) {
    if (![301, 302, 303, 307, 308].includes(response.status)) return response;
    const location = new URL(response.headers.get('location'), response.url).toString();
    if (location.startsWith(REDIRECT)) {
      for (const [k, v] of new URL(location).searchParams) got[k] = v;
      return response;
    }
    response = await browse(location);
  }
  throw new Error('too many redirects');
}

const unescape = (s) => s.replace(/&#(\d+);/g, (_, n) => String.fromCharCode(Number(n))).replace(/&amp;/g, '&').replace(/&quot;/g, '"').replace(/&lt;/g, '<').replace(/&gt;/g, '>');

/** The form posting to a path ending in `suffix`: its absolute action and hidden fields. */
function form(html, base, suffix) {
  for (const match of html.matchAll(/<form\b[^>]*action="([^"]*)"[^>]*>([\s\S]*?)<\/form>/g)) {
    const action = new URL(unescape(match[1]), base);
    if (!action.pathname.endsWith(suffix)) continue;
    const fields = {};
    for (const input of match[2].matchAll(/<input\b[^>]*>/g)) {
      const tag = input[0];
      if (!/type="hidden"/.test(tag)) continue;
      const name = /name="([^"]*)"/.exec(tag)?.[1];
      const value = /value="([^"]*)"/.exec(tag)?.[1] ?? '';
      if (name) fields[unescape(name)] = unescape(value);
    }
    return { action: action.toString(), fields };
  }
  throw new Error(`no form posting to …${suffix} in:\n${html.slice(0, 2000)}`);
}

const post = (url, fields) =>
  browse(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(fields).toString(),
  });

async function page(response, what) {
  const text = await response.text();
  if (response.status !== 200) throw new Error(`${what}: ${response.status} ${text.slice(0, 500)}`);
  return text;
}

// === The OAuth client provider, headless ===

class HeadlessProvider {
  constructor() {
    this._state = crypto.randomUUID();
  }
  get redirectUrl() {
    return REDIRECT;
  }
  get clientMetadata() {
    return {
      client_name: 'gatehouse-typescript-sdk-test',
      redirect_uris: [REDIRECT],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }
  state() {
    return this._state;
  }
  clientInformation() {
    return this._client;
  }
  saveClientInformation(client) {
    this._client = client;
  }
  tokens() {
    return this._tokens;
  }
  saveTokens(tokens) {
    this._tokens = tokens;
  }
  saveCodeVerifier(verifier) {
    this._verifier = verifier;
  }
  codeVerifier() {
    return this._verifier;
  }
  /** Plays the person: Skip on the identity page, Approve on the services page. */
  async redirectToAuthorization(url) {
    let response = await follow(await browse(url.toString()));
    let html = await page(response, 'identity page');
    const identity = form(html, response.url, '/identity');
    response = await follow(await post(identity.action, { ...identity.fields, choice: 'skip' }));
    html = await page(response, 'services page');
    const approve = form(html, response.url, '/approve');
    await follow(await post(approve.action, approve.fields));
    if (!got.code) throw new Error(`no code came back: ${JSON.stringify(got)}`);
    if (got.state !== this._state) throw new Error('state mismatch');
  }
}

/** Opens a connect link: its page, Continue, the upstream's consent (allow as `account`), back. */
async function openConnectLink(link) {
  let response = await browse(link);
  let html = await page(response, 'connect page');
  const connect = form(html, link, new URL(link).pathname);
  response = await follow(await post(connect.action, connect.fields));
  html = await page(response, 'continuation page');
  const upstream = unescape(/<a class="button" href="([^"]+)"/.exec(html)[1]);
  response = await browse(upstream);
  html = await page(response, 'upstream consent');
  const consent = form(html, upstream, '/authorize');
  response = await follow(await post(consent.action, { ...consent.fields, account, decision: 'allow' }));
  html = await page(response, 'after the upstream');
  if (!html.includes('Connected')) throw new Error(`not connected: ${html.slice(0, 500)}`);
}

// === The run ===

const provider = new HeadlessProvider();
const connect = async (capabilities = {}) => {
  const client = new Client({ name: 'gatehouse-typescript-sdk-test', version: '1.0.0' }, { capabilities });
  await client.connect(new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider }));
  return client;
};

const first = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider });
try {
  await new Client({ name: 'gatehouse-typescript-sdk-test', version: '1.0.0' }).connect(first);
  throw new Error('connected without OAuth');
} catch (err) {
  if (!(err instanceof UnauthorizedError)) throw err;
  await first.finishAuth(got.code);
}

const out = {};
let client = await connect();
out.tools = (await client.listTools()).tools.map((t) => t.name);
out.unconnected = await client.callTool({ name: tool, arguments: {} });
await client.close();

client = await connect({ elicitation: { url: {} } });
try {
  await client.callTool({ name: tool, arguments: {} });
  throw new Error('the call of an unconnected service succeeded');
} catch (err) {
  if (err.code !== -32042) throw err;
  out.elicitation = { code: err.code, url: err.data.elicitations[0].url };
}
await openConnectLink(out.elicitation.url);
out.call = await client.callTool({ name: tool, arguments: {} });
await client.close();
out.iss = got.iss;
console.log(JSON.stringify(out));
