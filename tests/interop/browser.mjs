// The person in the interop suite: Debian's chromium (driven by
// playwright-core) walks Gatehouse's consent pages as someone would.
//
// Identity page: "Sign in" → oidc-provider's login page (any login; ACCOUNT)
// and its consent page → back on Gatehouse's services page, signed in as
// ACCOUNT. If SERVICE is set, Connect that service → oidc-provider again
// (already signed in there: its consent page) → back, "connected as ACCOUNT".
// Approve → the client's redirect URI.
//
// The redirect URI is either intercepted (INTERCEPT=1: the client has no
// listener, e.g. an SDK client whose callback handler reads the code) or
// really loaded (the conformance suite listens there).
//
// As a command: prints the authorization response ({code, state, iss}) as JSON.
// Inputs (environment): AUTHORIZE_URL, REDIRECT_URI, ACCOUNT, SERVICE
// (display name, optional), INTERCEPT, ARTIFACTS (screenshots), CHROMIUM.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const ARGS = ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'];

/** Signs in or consents at oidc-provider until the browser is back at `home`. */
async function throughProvider(page, home, account, shot, what) {
  for (let step = 0; step < 6; step++) {
    if (page.url().startsWith(home)) return;
    const login = page.locator('input[name="login"]');
    const proceed = page.getByRole('button', { name: /continue|sign-in/i });
    await Promise.race([
      login.waitFor({ timeout: 20000 }),
      proceed.first().waitFor({ timeout: 20000 }),
      page.waitForURL((u) => u.href.startsWith(home), { timeout: 20000 }),
    ]);
    if (page.url().startsWith(home)) return;
    const before = page.url();
    if (await login.count()) {
      await shot(page, `${what}-provider-login`);
      await login.fill(account);
      await page.locator('input[name="password"]').fill('any password');
      await page.getByRole('button', { name: /sign-in/i }).click();
    } else {
      await shot(page, `${what}-provider-consent`);
      await proceed.first().click();
    }
    await page.waitForURL((u) => u.href !== before, { timeout: 20000 });
  }
  throw new Error(`never came back from the provider (at ${page.url()})`);
}

/**
 * Walks the consent pages from `authorizeUrl` to `redirectUri`; returns the
 * authorization response's query parameters.
 */
export async function consent({ authorizeUrl, redirectUri, account, service, intercept = false, artifacts, chromiumPath }) {
  const home = new URL(authorizeUrl).origin;
  if (artifacts) mkdirSync(artifacts, { recursive: true });
  let step = 0;
  const shot = async (page, name) => {
    step += 1;
    if (artifacts) await page.screenshot({ path: join(artifacts, `${String(step).padStart(2, '0')}-${name}.png`), fullPage: true });
  };
  const browser = await chromium.launch({ executablePath: chromiumPath ?? '/usr/bin/chromium', args: ARGS });
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    let response;
    if (intercept) {
      await page.route((url) => url.href.startsWith(redirectUri), async (route) => {
        response = Object.fromEntries(new URL(route.request().url()).searchParams);
        await route.fulfill({ status: 200, contentType: 'text/html', body: '<h1>Back in the application</h1>' });
      });
    }
    await page.goto(authorizeUrl);
    await page.getByRole('heading').first().waitFor();
    await shot(page, 'identity');
    await page.getByRole('button', { name: /^sign in$/i }).click();
    // 303 to Gatehouse's continuation page, then (meta refresh) the provider.
    await page.waitForURL((u) => !u.href.startsWith(home), { timeout: 20000 });
    await throughProvider(page, home, account, shot, 'sign-in');
    await page.waitForURL(/\/services/);
    await page.getByText(account).first().waitFor();
    await shot(page, 'services');
    if (service) {
      const row = page.locator('li.service').filter({ hasText: service });
      await row.getByRole('button', { name: /^(connect|reconnect)/i }).click();
      await page.waitForURL((u) => !u.href.startsWith(home), { timeout: 20000 });
      await throughProvider(page, home, account, shot, 'connect');
      await page.waitForURL(/\/services/);
      await page.locator('li.service').filter({ hasText: service }).getByText(/^connected/i).waitFor();
      await shot(page, 'services-connected');
    }
    await page.getByRole('button', { name: /^approve$/i }).click();
    await page.waitForURL((u) => u.href.startsWith(redirectUri), { timeout: 20000 });
    await page.waitForLoadState();
    await shot(page, 'back-in-the-application');
    return response ?? Object.fromEntries(new URL(page.url()).searchParams);
  } catch (err) {
    const pages = browser.contexts().flatMap((c) => c.pages());
    if (pages.length) await shot(pages[0], 'failure').catch(() => {});
    throw err;
  } finally {
    await browser.close();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const env = (name, fallback) => {
    const value = process.env[name] ?? fallback;
    if (value === undefined) throw new Error(`${name} is required`);
    return value;
  };
  const response = await consent({
    authorizeUrl: env('AUTHORIZE_URL'),
    redirectUri: env('REDIRECT_URI'),
    account: env('ACCOUNT'),
    service: process.env.SERVICE || undefined,
    intercept: process.env.INTERCEPT === '1',
    artifacts: process.env.ARTIFACTS,
    chromiumPath: process.env.CHROMIUM,
  });
  process.stdout.write(JSON.stringify(response) + '\n');
}

/**
 * An SDK `OAuthClientProvider` (the same shape in the 1.x and 2.x TypeScript
 * clients) whose redirect to the authorization server is a person in chromium
 * (`consent` above): a public client with `redirect` as its redirect URI
 * (intercepted, never listened on). After the redirect, `got` holds the
 * callback's `code`, `state` and `iss`.
 */
export class BrowserProvider {
  constructor({ clientName, redirect, account, service, artifacts }) {
    this._state = crypto.randomUUID();
    this._clientName = clientName;
    this._redirect = redirect;
    this._consent = { account, service, artifacts };
    this.got = {};
  }
  get redirectUrl() {
    return this._redirect;
  }
  get clientMetadata() {
    return {
      client_name: this._clientName,
      redirect_uris: [this._redirect],
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
  async redirectToAuthorization(url) {
    Object.assign(this.got, await consent({
      authorizeUrl: url.toString(),
      redirectUri: this._redirect,
      intercept: true,
      ...this._consent,
    }));
    if (this.got.state !== this._state) throw new Error('state mismatch');
  }
}
