// The official MCP conformance suite (`conformance authorization`) against
// Gatehouse's issuer, with the browser step done by chromium through
// Gatehouse's consent pages (browser.mjs): the suite prints the authorization
// URL and waits on 127.0.0.1:PORT/callback; the browser signs in, connects a
// service, approves, and really lands on that callback.
//
// Inputs (environment): ISSUER, CLIENT_ID, CLIENT_SECRET (optional), PORT,
// RESOURCE (optional, RFC 8707), OUTPUT (results folder), ACCOUNT, SERVICE
// (optional), ARTIFACTS (screenshots).
// Prints one JSON line: {"exitCode", "checks": [{scenario, id, status, errorMessage}]}.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, dirname } from 'node:path';
import { consent } from './browser.mjs';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
};
const require = createRequire(import.meta.url);
const cli = join(dirname(require.resolve('@modelcontextprotocol/conformance/package.json')), 'dist/index.js');
const output = env('OUTPUT');
const args = [cli, 'authorization', '--url', env('ISSUER'), '--client-id', env('CLIENT_ID'), '--port', env('PORT'), '-o', output];
if (process.env.CLIENT_SECRET) args.push('--client-secret', process.env.CLIENT_SECRET);
if (process.env.RESOURCE) args.push('--resource', process.env.RESOURCE);

const suite = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
let log = '';
let browsing;
const browserStep = (url) =>
  consent({
    authorizeUrl: url,
    redirectUri: `http://127.0.0.1:${env('PORT')}/callback`,
    account: env('ACCOUNT'),
    service: process.env.SERVICE || undefined,
    artifacts: process.env.ARTIFACTS,
  });
let pending = '';
suite.stdout.on('data', (chunk) => {
  log += chunk;
  pending += chunk;
  let newline;
  while ((newline = pending.indexOf('\n')) >= 0) {
    const line = pending.slice(0, newline).trim();
    pending = pending.slice(newline + 1);
    if (!browsing && /^https?:\/\/\S*[?&]code_challenge=/.test(line)) {
      browsing = browserStep(line).catch((err) => {
        suite.kill('SIGTERM');
        throw err;
      });
    }
  }
});
suite.stderr.on('data', (chunk) => (log += chunk));
const exitCode = await new Promise((resolve) => suite.on('close', (code) => resolve(code ?? 1)));
let browserError;
if (browsing) {
  try {
    await browsing;
  } catch (err) {
    browserError = err.message;
  }
}

// Each scenario leaves <output>/<scenario>-<time>/checks.json.
const checks = [];
if (existsSync(output)) {
  for (const dir of readdirSync(output)) {
    const file = join(output, dir, 'checks.json');
    if (!existsSync(file)) continue;
    for (const check of JSON.parse(readFileSync(file, 'utf8'))) {
      checks.push({ scenario: dir.replace(/-\d{4}-\d\d-\d\dT.*$/, ''), id: check.id, status: check.status, errorMessage: check.errorMessage });
    }
  }
}
process.stdout.write(JSON.stringify({ exitCode, browserError, checks, log: exitCode === 0 ? undefined : log }) + '\n');
