// Clicks through Gatehouse's consent pages in Debian's chromium, as a person
// would: identity (Skip) → services → Connect → the upstream's consent page →
// back → Approve. Saves a screenshot of each page and prints the authorization
// response ({code, state, iss}) as JSON on stdout.
//
// Inputs (environment): AUTHORIZE_URL (a complete /authorize URL), REDIRECT_URI
// (the client's redirect URI, intercepted, never really loaded), SERVICE
// (display name of the service to connect), ACCOUNT (upstream account name),
// ARTIFACTS (folder for screenshots), CHROMIUM (default /usr/bin/chromium).
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is required`);
  return value;
};
const authorizeUrl = env('AUTHORIZE_URL');
const redirectUri = env('REDIRECT_URI');
const service = env('SERVICE');
const account = env('ACCOUNT', 'alice');
const artifacts = env('ARTIFACTS');
mkdirSync(artifacts, { recursive: true });

const browser = await chromium.launch({
  executablePath: env('CHROMIUM', '/usr/bin/chromium'),
  args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let step = 0;
const shot = async (page, name) => {
  step += 1;
  await page.screenshot({ path: join(artifacts, `${String(step).padStart(2, '0')}-${name}.png`), fullPage: true });
};
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  let response;
  // The client's redirect URI: capture the authorization response instead of loading it.
  await page.route((url) => url.href.startsWith(redirectUri), async (route) => {
    response = Object.fromEntries(new URL(route.request().url()).searchParams);
    await route.fulfill({ status: 200, contentType: 'text/html', body: '<h1>Back in the application</h1>' });
  });

  await page.goto(authorizeUrl);
  await page.getByRole('heading').first().waitFor();
  await shot(page, 'identity');
  await page.getByRole('button', { name: /skip/i }).click();

  await page.waitForURL(/\/services/);
  await shot(page, 'services');
  const row = page.locator('li, tr, section, article').filter({ hasText: service }).last();
  await row.getByRole('button', { name: /^connect/i }).click();

  // The upstream's own consent page (the demo provider).
  const accountField = page.getByLabel(/account/i);
  await accountField.waitFor();
  await shot(page, 'upstream-consent');
  await accountField.fill(account);
  await page.getByRole('button', { name: /allow/i }).click();

  await page.waitForURL(/\/services/);
  await page.getByText(new RegExp(`connected as ${account}`, 'i')).first().waitFor();
  await shot(page, 'services-connected');
  await page.getByRole('button', { name: /approve/i }).click();

  await page.getByRole('heading', { name: /back in the application/i }).waitFor();
  await shot(page, 'back-in-the-application');
  if (!response) throw new Error('the browser never reached the redirect URI');
  process.stdout.write(JSON.stringify(response) + '\n');
} finally {
  await browser.close();
}
