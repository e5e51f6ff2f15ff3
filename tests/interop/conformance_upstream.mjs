// The upstream MCP server behind Gatehouse for the conformance suite's
// `server` scenarios: the fixture tools those scenarios call (test_simple_text,
// test_image_content, …, json_schema_2020_12_tool), built with the official
// TypeScript MCP SDK (low-level Server, stateless Streamable HTTP, SSE replies
// so progress notifications travel with the response).
//
// Listens on 127.0.0.1 port 0 and prints one JSON line on stdout:
// {"url": "http://127.0.0.1:PORT/mcp"}. Runs until stdin closes or SIGTERM.
import http from 'node:http';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import {
  CallToolRequestSchema,
  CreateMessageResultSchema,
  ElicitResultSchema,
  ListToolsRequestSchema,
} from '@modelcontextprotocol/sdk/types.js';

// A 1×1 red PNG and a 44-byte WAV header with one silent sample.
const PNG =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==';
const WAV = Buffer.concat([
  Buffer.from('RIFF'), Buffer.from([38, 0, 0, 0]), Buffer.from('WAVEfmt '),
  Buffer.from([16, 0, 0, 0, 1, 0, 1, 0, 0x40, 0x1f, 0, 0, 0x80, 0x3e, 0, 0, 2, 0, 16, 0]),
  Buffer.from('data'), Buffer.from([2, 0, 0, 0, 0, 0]),
]).toString('base64');

const empty = { type: 'object', properties: {} };
const TOOLS = [
  { name: 'test_simple_text', description: 'Returns simple text', inputSchema: empty },
  { name: 'test_image_content', description: 'Returns an image', inputSchema: empty },
  { name: 'test_audio_content', description: 'Returns audio', inputSchema: empty },
  { name: 'test_embedded_resource', description: 'Returns an embedded resource', inputSchema: empty },
  { name: 'test_multiple_content_types', description: 'Returns text, an image and a resource', inputSchema: empty },
  { name: 'test_error_handling', description: 'Always fails', inputSchema: empty },
  { name: 'test_tool_with_progress', description: 'Reports progress', inputSchema: empty },
  // The 2026-07-28 diagnostics: this legacy server does what a legacy server
  // would (log, ask the client mid-call); Gatehouse must keep that off the
  // modern wire (no log without a log level, no server-to-client requests,
  // -32021 for a capability the client did not declare).
  { name: 'test_logging_tool', description: 'Logs a message, then answers', inputSchema: empty },
  { name: 'test_streaming_elicitation', description: 'Asks the client a question mid-call, then answers', inputSchema: empty },
  { name: 'test_missing_capability', description: 'Needs the client to sample', inputSchema: empty },
  {
    name: 'json_schema_2020_12_tool',
    description: 'Tool with JSON Schema 2020-12 features',
    inputSchema: {
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      type: 'object',
      $defs: {
        address: { $anchor: 'addressDef', type: 'object', properties: { street: { type: 'string' }, city: { type: 'string' } } },
      },
      properties: {
        name: { type: 'string' },
        address: { $ref: '#/$defs/address' },
        contactMethod: { type: 'string', enum: ['phone', 'email'] },
        phone: { type: 'string' },
        email: { type: 'string' },
      },
      allOf: [{ anyOf: [{ required: ['phone'] }, { required: ['email'] }] }],
      if: { properties: { contactMethod: { const: 'phone' } }, required: ['contactMethod'] },
      then: { required: ['phone'] },
      else: { required: ['email'] },
      additionalProperties: false,
    },
  },
];

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function call(name, request, extra) {
  switch (name) {
    case 'test_simple_text':
      return { content: [{ type: 'text', text: 'This is a simple text response for testing.' }] };
    case 'test_image_content':
      return { content: [{ type: 'image', data: PNG, mimeType: 'image/png' }] };
    case 'test_audio_content':
      return { content: [{ type: 'audio', data: WAV, mimeType: 'audio/wav' }] };
    case 'test_embedded_resource':
      return {
        content: [
          { type: 'resource', resource: { uri: 'test://embedded-resource', mimeType: 'text/plain', text: 'This is an embedded resource content.' } },
        ],
      };
    case 'test_multiple_content_types':
      return {
        content: [
          { type: 'text', text: 'Multiple content types test:' },
          { type: 'image', data: PNG, mimeType: 'image/png' },
          { type: 'resource', resource: { uri: 'test://mixed-content-resource', mimeType: 'application/json', text: '{"test":"data","value":123}' } },
        ],
      };
    case 'test_error_handling':
      return { isError: true, content: [{ type: 'text', text: 'This tool intentionally returns an error for testing' }] };
    case 'test_tool_with_progress': {
      const progressToken = request.params._meta?.progressToken;
      for (const progress of [0, 50, 100]) {
        if (progressToken !== undefined) {
          await extra.sendNotification({ method: 'notifications/progress', params: { progressToken, progress, total: 100 } });
        }
        if (progress < 100) await sleep(50);
      }
      return { content: [{ type: 'text', text: 'Progress test completed' }] };
    }
    case 'test_logging_tool':
      await extra.sendNotification({ method: 'notifications/message', params: { level: 'info', logger: 'conformance', data: 'a log line' } });
      return { content: [{ type: 'text', text: 'logged' }] };
    case 'test_streaming_elicitation':
      // Asked and not awaited: a legacy client would answer; the modern wire has no way to.
      extra
        .sendRequest({ method: 'elicitation/create', params: { message: 'Which colour?', requestedSchema: { type: 'object', properties: {} } } }, ElicitResultSchema)
        .catch(() => {});
      await sleep(50);
      return { content: [{ type: 'text', text: 'answered without the elicitation' }] };
    case 'test_missing_capability': {
      const sampled = await extra.sendRequest(
        { method: 'sampling/createMessage', params: { messages: [{ role: 'user', content: { type: 'text', text: 'hi' } }], maxTokens: 10 } },
        CreateMessageResultSchema,
      );
      return { content: [{ type: 'text', text: JSON.stringify(sampled) }] };
    }
    case 'json_schema_2020_12_tool':
      return { content: [{ type: 'text', text: JSON.stringify(request.params.arguments ?? {}) }] };
    default:
      throw new Error(`unknown tool ${name}`);
  }
}

function newServer() {
  const server = new Server({ name: 'interop-conformance-upstream', version: '1.0.0' }, { capabilities: { tools: {}, logging: {} } });
  server.setRequestHandler(ListToolsRequestSchema, async () => ({ tools: TOOLS }));
  server.setRequestHandler(CallToolRequestSchema, async (request, extra) => call(request.params.name, request, extra));
  return server;
}

const httpServer = http.createServer(async (req, res) => {
  if (new URL(req.url, 'http://x').pathname !== '/mcp') {
    res.writeHead(404).end();
    return;
  }
  if (req.method !== 'POST') {
    res.writeHead(405, { allow: 'POST' }).end();
    return;
  }
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  let body;
  try {
    body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    res.writeHead(400).end();
    return;
  }
  // Stateless: a server and transport per request.
  const server = newServer();
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
  res.on('close', () => {
    transport.close();
    server.close();
  });
  await server.connect(transport);
  await transport.handleRequest(req, res, body);
});
await new Promise((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
process.stdout.write(JSON.stringify({ url: `http://127.0.0.1:${httpServer.address().port}/mcp` }) + '\n');
const stop = () => httpServer.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.resume();
