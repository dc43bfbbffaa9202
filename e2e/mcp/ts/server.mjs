// A real MCP server for the gateway tests: TypeScript SDK (`McpServer` +
// `StreamableHTTPServerTransport` on node:http), stateless (no session id; a fresh server
// and transport per request, as the SDK's stateless example does).
//
// Usage: node server.mjs NAME PORT
//
// Offers, each mentioning NAME so a test can tell targets apart (the same surface as
// ../fastmcp_server.py, so tests can mix the two):
// - tools `echo(text)` and `add(a, b)`;
// - prompt `greet(who)`;
// - resource `notes://NAME/readme` (text).
// Listens on 127.0.0.1 only; prints "ready" on stdout once listening. Exits on SIGTERM.
import http from "node:http";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";

const [name, port] = process.argv.slice(2);
if (!name || !port) {
  console.error("usage: node server.mjs NAME PORT");
  process.exit(2);
}

function buildServer() {
  const server = new McpServer(
    { name, version: "1.0.0" },
    { instructions: `${name} (TypeScript) offers echo, add and notes.` },
  );
  server.registerTool(
    "echo",
    { description: "Echo the text back, tagged with the server name.", inputSchema: { text: z.string() } },
    async ({ text }) => ({ content: [{ type: "text", text: `${name}: ${text}` }] }),
  );
  server.registerTool(
    "add",
    { description: "Add two integers.", inputSchema: { a: z.number().int(), b: z.number().int() } },
    async ({ a, b }) => ({ content: [{ type: "text", text: String(a + b) }] }),
  );
  server.registerPrompt(
    "greet",
    { description: "A greeting prompt.", argsSchema: { who: z.string() } },
    ({ who }) => ({
      messages: [{ role: "user", content: { type: "text", text: `Hello ${who}, from ${name}.` } }],
    }),
  );
  server.registerResource(
    "readme",
    `notes://${name}/readme`,
    { description: "The readme.", mimeType: "text/plain" },
    async (uri) => ({ contents: [{ uri: uri.href, mimeType: "text/plain", text: `readme of ${name}` }] }),
  );
  return server;
}

const httpServer = http.createServer(async (req, res) => {
  if (!req.url.startsWith("/mcp")) {
    res.writeHead(404).end();
    return;
  }
  if (req.method !== "POST") {
    // Stateless: no server-to-client stream and no session to end.
    res.writeHead(405, { allow: "POST" }).end();
    return;
  }
  const server = buildServer();
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
  res.on("close", () => {
    transport.close();
    server.close();
  });
  try {
    await server.connect(transport);
    await transport.handleRequest(req, res);
  } catch (e) {
    console.error(`${name}: ${e?.stack ?? e}`);
    if (!res.headersSent) res.writeHead(500).end();
  }
});

httpServer.listen(Number(port), "127.0.0.1", () => console.log(`${name} ready on 127.0.0.1:${port}`));
process.on("SIGTERM", () => process.exit(0));
