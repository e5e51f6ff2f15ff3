// What stands between the conformance suite's `server` mode and Gatehouse.
//
// The suite speaks to an MCP server as an unauthenticated client and calls the
// fixture's tools by their bare names; Gatehouse wants a bearer on every
// request and names every tool <service>__<tool>. This proxy adds the bearer
// (an access token the test obtained through Gatehouse's OAuth flow) and maps
// the one service's namespace: `params.name` (and the 2026-07-28 `Mcp-Name`
// header) of tools/call gains the prefix, tool names in tools/list replies
// lose it. Every other byte, header and status passes through unchanged, SSE
// streams included, so what the suite judges is Gatehouse's own answer.
//
// Inputs: TARGET and PREFIX (e.g. "conf__") in the environment; the access
// token as the first line on stdin (never printed; 503 until it arrives).
// Listens on 127.0.0.1 port 0 and prints {"url": "http://127.0.0.1:PORT/mcp"}.
import http from 'node:http';

const target = new URL(process.env.TARGET);
const prefix = process.env.PREFIX ?? '';
let bearer;
let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  input += chunk;
  const newline = input.indexOf('\n');
  if (bearer === undefined && newline >= 0) bearer = input.slice(0, newline).trim();
});

const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length', 'host', 'authorization']);

const server = http.createServer(async (req, res) => {
  try {
    if (!bearer) {
      res.writeHead(503).end();
      return;
    }
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    let body = Buffer.concat(chunks);
    const headers = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (!HOP.has(name)) headers[name] = value;
    }
    headers.authorization = `Bearer ${bearer}`;
    let method;
    if (body.length) {
      try {
        const message = JSON.parse(body.toString('utf8'));
        method = message.method;
        if (method === 'tools/call' && typeof message.params?.name === 'string') {
          message.params.name = prefix + message.params.name;
          // The header is mapped on its own, so a header that disagrees with the body still disagrees.
          if (typeof headers['mcp-name'] === 'string') headers['mcp-name'] = prefix + headers['mcp-name'];
          body = Buffer.from(JSON.stringify(message));
        }
      } catch {
        // Not JSON: forwarded as it came, for Gatehouse to refuse.
      }
    }
    const upstream = await new Promise((resolve, reject) => {
      const request = http.request(
        target,
        { method: req.method, headers: { ...headers, host: req.headers.host ?? target.host, 'content-length': body.length } },
        resolve,
      );
      request.on('error', reject);
      request.end(body);
    });
    const out = { ...upstream.headers };
    delete out['transfer-encoding'];
    delete out.connection;
    const type = upstream.headers['content-type'] ?? '';
    if (method === 'tools/list' && type.startsWith('application/json')) {
      const parts = [];
      for await (const chunk of upstream) parts.push(chunk);
      const reply = JSON.parse(Buffer.concat(parts).toString('utf8'));
      for (const tool of reply.result?.tools ?? []) {
        if (tool.name.startsWith(prefix)) tool.name = tool.name.slice(prefix.length);
      }
      const text = JSON.stringify(reply);
      out['content-length'] = Buffer.byteLength(text);
      res.writeHead(upstream.statusCode, out).end(text);
      return;
    }
    res.writeHead(upstream.statusCode, out);
    upstream.pipe(res);
  } catch (err) {
    console.error(`bearer proxy: ${err.message}`);
    if (!res.headersSent) res.writeHead(502);
    res.end();
  }
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
process.stdout.write(JSON.stringify({ url: `http://127.0.0.1:${server.address().port}/mcp` }) + '\n');
const stop = () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.resume();
