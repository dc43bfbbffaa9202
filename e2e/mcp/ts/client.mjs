// A real MCP client for the gateway tests: TypeScript SDK (`Client` +
// `StreamableHTTPClientTransport`), the session style (initialize, Mcp-Session-Id).
//
// Usage: node client.mjs URL SCENARIO [ARGS...]
//
// With MCP_CLIENT_TRANSPORT=sse in the environment it connects with the legacy HTTP+SSE
// transport (`SSEClientTransport`, URL being the SSE endpoint) instead.
//
// Prints one JSON object (what the client observed) on stdout; the Rust test asserts on
// it. Exits non-zero with the error on stderr when the SDK throws.
//
// Scenarios:
// - `tour`: initialize, list tools, call every `*echo` tool with {text: "hi"} and the first
//   `*add` with {a: 2, b: 3}, list and get prompts (who: "Ada"), list and read resources,
//   then end the session.
// - `call TOOL JSON_ARGS`: initialize and call one tool.
// - `list`: names of the tools and prompts, URIs of the resources (first page of each).
// - `read URI`: read one resource (uri, mimeType, text of each content).
// - `prompt NAME JSON_ARGS`: get one prompt (role and text of each message).
// - `relay TOOL JSON_ARGS`: a client offering roots, sampling and elicitation calls one
//   tool asking for progress; prints the text, the server requests it answered (method
//   and the request's message or prompt text), the progress and the log messages seen.
//   Sampling answers "sampled: <last message text>", elicitation accepts with
//   {name: "Ada"} when the form asks a name, else {colour: "teal"}, roots/list gives
//   one root, file:///work/agentmesh.
// - `relay-then-wait TOOL JSON_ARGS`: as `relay`, then waits (at most 20 s) for a log
//   message sent after the call was answered (it reaches the client on its GET stream);
//   prints also `logsAfter`, the log messages seen after the answer.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
  LoggingMessageNotificationSchema,
} from "@modelcontextprotocol/sdk/types.js";

const [url, scenario, ...args] = process.argv.slice(2);
const texts = (r) => (r.content ?? []).filter((c) => c.type === "text").map((c) => c.text);

async function tour(client) {
  const out = {
    protocolVersion: transport.protocolVersion ?? null,
    serverName: client.getServerVersion()?.name ?? null,
    instructions: client.getInstructions() ?? null,
  };
  const { tools } = await client.listTools();
  out.tools = tools.map((t) => t.name).sort();
  out.calls = {};
  for (const t of out.tools.filter((t) => t.endsWith("echo"))) {
    const r = await client.callTool({ name: t, arguments: { text: "hi" } });
    out.calls[t] = { text: texts(r), isError: r.isError ?? false };
  }
  const add = out.tools.find((t) => t.endsWith("add"));
  if (add) {
    const r = await client.callTool({ name: add, arguments: { a: 2, b: 3 } });
    out.calls[add] = { text: texts(r), isError: r.isError ?? false };
  }
  const { prompts } = await client.listPrompts();
  out.prompts = prompts.map((p) => p.name).sort();
  out.promptTexts = {};
  for (const p of out.prompts) {
    const got = await client.getPrompt({ name: p, arguments: { who: "Ada" } });
    out.promptTexts[p] = got.messages.map((m) => m.content.text);
  }
  const { resources } = await client.listResources();
  out.resources = resources.map((r) => r.uri).sort();
  out.reads = {};
  for (const uri of out.resources) {
    const got = await client.readResource({ uri });
    out.reads[uri] = got.contents.map((c) => ({ uri: c.uri, text: c.text ?? null }));
  }
  return out;
}

const legacy = process.env.MCP_CLIENT_TRANSPORT === "sse";
const transport = legacy ? new SSEClientTransport(new URL(url)) : new StreamableHTTPClientTransport(new URL(url));
const relayed = { requests: [], logs: [] };
const client = scenario.startsWith("relay")
    ? relayClient()
    : new Client({ name: "agentmesh-ts-test-client", version: "1.0.0" });

/** A client that answers server requests and records them (scenario `relay`). */
function relayClient() {
  const c = new Client(
    { name: "agentmesh-ts-relay-client", version: "1.0.0" },
    { capabilities: { roots: { listChanged: true }, sampling: {}, elicitation: {} } },
  );
  c.setRequestHandler(CreateMessageRequestSchema, async (req) => {
    const last = req.params.messages[req.params.messages.length - 1];
    relayed.requests.push({ method: req.method, text: last?.content?.text ?? null });
    return {
      role: "assistant",
      model: "relay-test",
      content: { type: "text", text: `sampled: ${last?.content?.text ?? ""}` },
    };
  });
  c.setRequestHandler(ElicitRequestSchema, async (req) => {
    relayed.requests.push({ method: req.method, text: req.params.message ?? null });
    const wanted = req.params.requestedSchema?.properties ?? {};
    return { action: "accept", content: "name" in wanted ? { name: "Ada" } : { colour: "teal" } };
  });
  c.setRequestHandler(ListRootsRequestSchema, async (req) => {
    relayed.requests.push({ method: req.method, text: null });
    return { roots: [{ uri: "file:///work/agentmesh", name: "agentmesh" }] };
  });
  c.setNotificationHandler(LoggingMessageNotificationSchema, async (n) => {
    relayed.logs.push(n.params.data);
  });
  return c;
}
try {
  await client.connect(transport);
  let out;
  if (scenario === "tour") {
    out = await tour(client);
    out.sessionId = transport.sessionId ?? null;
  } else if (scenario === "call") {
    const r = await client.callTool({ name: args[0], arguments: JSON.parse(args[1] ?? "{}") });
    out = { text: texts(r), isError: r.isError ?? false };
  } else if (scenario === "list") {
    out = {
      tools: (await client.listTools()).tools.map((t) => t.name).sort(),
      prompts: (await client.listPrompts()).prompts.map((p) => p.name).sort(),
      resources: (await client.listResources()).resources.map((r) => r.uri).sort(),
    };
  } else if (scenario === "read") {
    const got = await client.readResource({ uri: args[0] });
    out = { contents: got.contents.map((c) => ({ uri: c.uri, mimeType: c.mimeType ?? null, text: c.text ?? null })) };
  } else if (scenario === "prompt") {
    const got = await client.getPrompt({ name: args[0], arguments: JSON.parse(args[1] ?? "{}") });
    out = { messages: got.messages.map((m) => ({ role: m.role, text: m.content.text ?? null })) };
  } else if (scenario === "relay" || scenario === "relay-then-wait") {
    const progress = [];
    const r = await client.callTool(
      { name: args[0], arguments: JSON.parse(args[1] ?? "{}") },
      undefined,
      { onprogress: (p) => progress.push(p.progress), timeout: 30000 },
    );
    out = { text: texts(r), isError: r.isError ?? false, progress, ...relayed };
    if (scenario === "relay-then-wait") {
      const answered = relayed.logs.length;
      const until = Date.now() + 20000;
      while (relayed.logs.length === answered && Date.now() < until) {
        await new Promise((done) => setTimeout(done, 100));
      }
      out.logs = relayed.logs.slice(0, answered);
      out.logsAfter = relayed.logs.slice(answered);
    }
  } else {
    throw new Error(`unknown scenario ${scenario}`);
  }
  if (!legacy) await transport.terminateSession().catch(() => {});
  await client.close();
  console.log(JSON.stringify(out));
} catch (e) {
  console.error(e?.stack ?? String(e));
  process.exit(1);
}
