// oidc-provider (a certified OpenID provider) as a real upstream for the
// interop suite: the OpenID provider people sign in at on Gatehouse's identity
// page, and the OAuth server of the per-user MCP service (Gatehouse registers
// itself there dynamically, RFC 7591).
//
// Refresh tokens are issued to every client allowed the refresh_token grant
// and rotated on every use; revocation, introspection and resource indicators
// are on (the MCP server validates the bearer it receives by introspection).
//
// Listens on 127.0.0.1 port 0 and prints one JSON line on stdout:
// {"issuer": "http://127.0.0.1:PORT"}. Runs until stdin closes or SIGTERM.
//
// Inputs (environment): GATEHOUSE_URL (Gatehouse's public URL, for the
// sign-in client's redirect URI), SIGN_IN_SECRET (that client's secret),
// INTROSPECTION_SECRET (the MCP server's secret at the introspection endpoint).
import http from 'node:http';
import Provider, { errors } from 'oidc-provider';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
};
const gatehouse = env('GATEHOUSE_URL').replace(/\/$/, '');

let handler = (_req, res) => {
  res.statusCode = 503;
  res.end();
};
const server = http.createServer((req, res) => handler(req, res));
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      // Gatehouse's user sign-in (OpenID Connect, confidential).
      client_id: 'gatehouse-sign-in',
      client_secret: env('SIGN_IN_SECRET'),
      redirect_uris: [`${gatehouse}/signin/callback`],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      // The MCP server, as a resource server: it only introspects.
      client_id: 'interop-mcp-server',
      client_secret: env('INTROSPECTION_SECRET'),
      redirect_uris: [],
      grant_types: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    // RFC 8707: an MCP server on loopback is a resource server; its tokens are
    // opaque, carry only its scope, and are checked by introspection.
    resourceIndicators: {
      enabled: true,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resource) => {
        if (new URL(resource).hostname !== '127.0.0.1') throw new errors.InvalidTarget();
        return { scope: 'notes.read', accessTokenFormat: 'opaque', audience: resource };
      },
    },
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'notes.read'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  findAccount: async (_ctx, sub) => ({
    accountId: sub,
    claims: async () => ({ sub, email: `${sub}@interop.test`, email_verified: true, name: sub }),
  }),
  // Every client allowed the grant gets a refresh token, rotated on each use
  // (a reused one is refused and ends the grant).
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  pkce: { required: () => true },
  ttl: { AccessToken: 600, AuthorizationCode: 120, RefreshToken: 3600, IdToken: 600, Interaction: 600, Session: 3600, Grant: 3600 },
  cookies: { keys: ['interop-cookie-key-not-a-secret'] },
});
provider.proxy = false;
// The suite's own checks: nothing reaches the log but the event names.
provider.on('server_error', (_ctx, err) => console.error(`oidc-provider server_error: ${err.message}`));
handler = provider.callback();

process.stdout.write(JSON.stringify({ issuer }) + '\n');
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.resume();
