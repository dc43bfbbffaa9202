// A conformant MCP client for the conformance suite's CLIENT scenarios
// (`conformance client --command "node conformance_client.mjs"`): the TypeScript SDK's
// `Client` over `StreamableHTTPClientTransport`, doing what each scenario asks of a client.
// The suite appends its scenario server's URL and names the scenario in
// MCP_CONFORMANCE_SCENARIO.
//
// Usage: node conformance_client.mjs URL
//
// Scenarios:
// - `initialize`: connect (initialize + initialized), list tools, close.
// - `tools_call`: list tools and call `add_numbers` with {a: 5, b: 3}.
// - `elicitation-sep1034-client-defaults`: call every tool; elicitation requests are
//   accepted with no content of our own, the SDK filling in the schema's defaults.
// - `sse-retry`: call every tool; the server closes the call's event stream early and
//   the SDK resumes it (Last-Event-ID, after the server's `retry`).
// - anything else (auth scenarios): connect, list tools, close; the SDK client here has
//   no OAuth provider, so those scenarios fail, direct and through a gateway alike.
//
// Exits non-zero with the error on stderr when the SDK throws.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ElicitRequestSchema } from "@modelcontextprotocol/sdk/types.js";

/** Runs the scenario `scenario` against the MCP server at `url`. */
export async function runScenario(url, scenario) {
  const client = new Client(
    { name: "agentmesh-conformance-client", version: "1.0.0" },
    { capabilities: { elicitation: { form: { applyDefaults: true } } } },
  );
  client.setRequestHandler(ElicitRequestSchema, async () => ({ action: "accept", content: {} }));
  const transport = new StreamableHTTPClientTransport(new URL(url));
  await client.connect(transport);
  try {
    const { tools } = await client.listTools();
    const log = (r) => console.log(JSON.stringify(r));
    switch (scenario) {
      case "tools_call":
        log(await client.callTool({ name: "add_numbers", arguments: { a: 5, b: 3 } }));
        break;
      case "elicitation-sep1034-client-defaults":
      case "sse-retry":
        for (const t of tools) {
          log(await client.callTool({ name: t.name, arguments: {} }));
        }
        break;
      default:
        log({ tools: tools.map((t) => t.name) });
    }
  } finally {
    await transport.terminateSession().catch(() => {});
    await client.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const url = process.argv[process.argv.length - 1];
  runScenario(url, process.env.MCP_CONFORMANCE_SCENARIO ?? "initialize").then(
    () => process.exit(0),
    (e) => {
      console.error(e?.stack ?? String(e));
      process.exit(1);
    },
  );
}
