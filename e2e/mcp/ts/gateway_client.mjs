// The conformance client (conformance_client.mjs) pointed through agentmesh: for the
// conformance suite's CLIENT scenarios run with agentmesh in between
// (`conformance client --command "node gateway_client.mjs"`).
//
// Usage: AGENTMESH_BIN=PATH node gateway_client.mjs URL
//
// Starts the agentmesh binary on free loopback ports with one `mcp` backend whose only
// target is the suite's scenario server at URL, waits until it is ready, runs the
// scenario's client against http://127.0.0.1:PORT/mcp, and stops agentmesh. The suite
// checks what its server saw, which is agentmesh's own upstream client. agentmesh's log
// goes to stderr (the suite keeps it in the scenario's stderr.txt).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { runScenario } from "./conformance_client.mjs";

/** A loopback port free right now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Polls agentmesh's readiness endpoint, for at most `limitMs`. */
async function waitReady(port, proxy, limitMs) {
  const until = Date.now() + limitMs;
  while (Date.now() < until) {
    if (proxy.exitCode !== null) throw new Error(`agentmesh exited with ${proxy.exitCode}`);
    try {
      const r = await fetch(`http://127.0.0.1:${port}/healthz/ready`);
      if (r.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`agentmesh was not ready within ${limitMs} ms`);
}

async function main() {
  const bin = process.env.AGENTMESH_BIN;
  if (!bin) throw new Error("AGENTMESH_BIN must name the agentmesh-proxy binary");
  const target = process.argv[process.argv.length - 1];
  const scenario = process.env.MCP_CONFORMANCE_SCENARIO ?? "initialize";
  const [port, admin, metrics, ready] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
  ];
  const dir = mkdtempSync(join(tmpdir(), "agentmesh-conformance-"));
  const config = join(dir, "agentmesh.yaml");
  writeFileSync(
    config,
    [
      "binds:",
      "- name: main",
      "  address: 127.0.0.1",
      `  port: ${port}`,
      "  listeners:",
      "  - name: http",
      "    routes:",
      "    - name: mcp",
      "      matches:",
      "      - path: { prefix: /mcp }",
      "      backends:",
      "      - backend: scenario",
      "backends:",
      "- name: scenario",
      "  mcp:",
      "    targets:",
      "    - name: suite",
      `      url: ${target}`,
      "",
    ].join("\n"),
  );
  // Under `timeout`, so agentmesh cannot outlive a client the suite killed by long.
  const proxy = spawn(
    "timeout",
    [
      "-k",
      "5",
      "150",
      bin,
      "--config",
      config,
      "--admin-addr",
      `127.0.0.1:${admin}`,
      "--metrics-addr",
      `127.0.0.1:${metrics}`,
      "--ready-addr",
      `127.0.0.1:${ready}`,
      "--log-level",
      "info,agentmesh_proxy=debug",
    ],
    { stdio: ["ignore", "inherit", "inherit"] },
  );
  try {
    await waitReady(ready, proxy, 20000);
    await runScenario(`http://127.0.0.1:${port}/mcp`, scenario);
  } finally {
    proxy.kill("SIGTERM"); // `timeout` passes it on to agentmesh
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e?.stack ?? String(e));
    process.exit(1);
  },
);
