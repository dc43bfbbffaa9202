//! Real MCP peers for the gateway tests: Python SDK 1.x FastMCP servers and the SDK's
//! client, from the venv `scripts/install-mcp-deps.sh` makes (target/venvs/mcp1, or
//! `AGENTMESH_MCP1_VENV`), and the SDK 2.x client (target/venvs/mcp2, or
//! `AGENTMESH_MCP2_VENV`). A missing venv fails the test, naming the install command.
//!
//! Every Python process runs under `timeout`, and servers are killed when dropped, so a
//! failing test leaves nothing behind. Everything listens on 127.0.0.1.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

use super::support::Proxy;
use super::support::client::{self, Got};
use super::support::process::ServerProcess;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The 1.x venv's python; panics with the fix when it is missing.
pub fn python() -> PathBuf {
    venv_python("AGENTMESH_MCP1_VENV", "target/venvs/mcp1")
}

/// The 2.x venv's python (`mcp>=2`, target/venvs/mcp2 or `AGENTMESH_MCP2_VENV`).
pub fn python2() -> PathBuf {
    venv_python("AGENTMESH_MCP2_VENV", "target/venvs/mcp2")
}

fn venv_python(var: &str, default: &str) -> PathBuf {
    let venv = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(default));
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/install-test-deps.sh (it calls scripts/install-mcp-deps.sh)",
        py.display()
    );
    py
}

fn fixture(name: &str) -> PathBuf {
    root().join("e2e/mcp").join(name)
}

/// A port nothing listens on (bound, then released).
pub fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A FastMCP server (e2e/mcp/fastmcp_server.py) named `name`; stopped when dropped.
pub struct FastMcp(ServerProcess);

impl std::ops::Deref for FastMcp {
    type Target = ServerProcess;
    fn deref(&self) -> &ServerProcess {
        &self.0
    }
}

impl FastMcp {
    /// Starts the server on a free port and waits until it accepts connections.
    pub fn start(name: &str) -> FastMcp {
        Self::start_on(name, super::support::free_port())
    }

    /// Starts the server on `port`.
    pub fn start_on(name: &str, port: u16) -> FastMcp {
        Self::start_script("fastmcp_server.py", name, port)
    }

    /// Starts e2e/mcp/relay_server.py (tools that report progress, log, elicit, sample,
    /// wait to be cancelled and change the tool list) on a free port.
    pub fn start_relay(name: &str) -> FastMcp {
        Self::start_script("relay_server.py", name, super::support::free_port())
    }

    /// Starts e2e/mcp/fastmcp_server.py with the legacy HTTP+SSE transport (GET /sse,
    /// POST /messages/) on a free port.
    pub fn start_sse(name: &str) -> FastMcp {
        Self::start_sse_on(name, super::support::free_port())
    }

    /// Starts e2e/mcp/fastmcp_server.py with the legacy HTTP+SSE transport on `port`.
    pub fn start_sse_on(name: &str, port: u16) -> FastMcp {
        Self::start_script_with("fastmcp_server.py", name, port, &["sse"])
    }

    /// Starts e2e/mcp/relay_server.py with the legacy HTTP+SSE transport.
    pub fn start_relay_sse(name: &str) -> FastMcp {
        Self::start_script_with(
            "relay_server.py",
            name,
            super::support::free_port(),
            &["sse"],
        )
    }

    /// The legacy SSE endpoint of a server started with `start_*sse*`.
    pub fn sse_url(&self) -> String {
        format!("http://{}/sse", self.addr)
    }

    /// Starts e2e/mcp/fastmcp_server.py speaking only `versions` (comma-separated,
    /// oldest first), the SDK's negotiation over a shorter list.
    pub fn start_pinned(name: &str, versions: &str) -> FastMcp {
        let port = super::support::free_port();
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", "300"])
            .arg(python())
            .arg(fixture("fastmcp_server.py"))
            .args([name, &port.to_string()])
            .env("MCP_PIN_VERSIONS", versions);
        FastMcp(ServerProcess::start(name, port, cmd))
    }

    /// Starts e2e/mcp/modern_server.py: SDK 2.x `MCPServer` speaking only the
    /// 2026-07-28 style (no `initialize`, no sessions).
    pub fn start_modern(name: &str) -> FastMcp {
        Self::start_v2(name, &[])
    }

    /// Starts e2e/mcp/modern_server.py serving both protocol generations, as an SDK
    /// 2.x `MCPServer` does by default.
    pub fn start_v2_both(name: &str) -> FastMcp {
        Self::start_v2(name, &["both"])
    }

    /// Starts e2e/mcp/modern_server.py speaking only the 2026-07-28 style, with the
    /// tools that ask the client for input (`favourite`, `compose`).
    pub fn start_modern_asking(name: &str) -> FastMcp {
        Self::start_v2(name, &["asks"])
    }

    fn start_v2(name: &str, extra: &[&str]) -> FastMcp {
        let port = super::support::free_port();
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", "300"])
            .arg(python2())
            .arg(fixture("modern_server.py"))
            .args([name, &port.to_string()])
            .args(extra);
        FastMcp(ServerProcess::start(name, port, cmd))
    }

    /// How many session-style requests a server of e2e/mcp/modern_server.py got
    /// (refused when it speaks only the 2026-07-28 style).
    pub fn session_style_requests(&self) -> u64 {
        let (status, body) = super::support::client::blocking_get(self.addr, "/session-style")
            .expect("the server answers /session-style");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["count"]
            .as_u64()
            .unwrap()
    }

    fn start_script(script: &str, name: &str, port: u16) -> FastMcp {
        Self::start_script_with(script, name, port, &[])
    }

    fn start_script_with(script: &str, name: &str, port: u16, extra: &[&str]) -> FastMcp {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", "300"])
            .arg(python())
            .arg(fixture(script))
            .args([name, &port.to_string()])
            .args(extra);
        FastMcp(ServerProcess::start(name, port, cmd))
    }

    /// Stops the server and waits until it is gone.
    pub fn stop(self) {
        self.0.stop();
    }
}

/// What `client_v1.py` (SDK 1.x, session style) printed, or its error output.
pub fn client_v1(url: &str, scenario: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    run_client(python(), "client_v1.py", url, scenario, args, &[])
}

/// What `client_v1.py` printed when connecting with the legacy HTTP+SSE transport
/// (`sse_client`; `url` is the SSE endpoint).
pub fn client_v1_sse(
    url: &str,
    scenario: &str,
    args: &[&str],
) -> Result<serde_json::Value, String> {
    run_client(
        python(),
        "client_v1.py",
        url,
        scenario,
        args,
        &[("MCP_CLIENT_TRANSPORT", "sse")],
    )
}

/// What `client_v2.py` (SDK 2.x, 2026-07-28 style) printed, or its error output.
pub fn client_v2(url: &str, scenario: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    run_client(python2(), "client_v2.py", url, scenario, args, &[])
}

fn run_client(
    python: PathBuf,
    script: &str,
    url: &str,
    scenario: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<serde_json::Value, String> {
    let out = Command::new("timeout")
        .args(["-k", "5", "90"])
        .arg(python)
        .arg(fixture(script))
        .args([url, scenario])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("timeout (coreutils) and python must be available");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("client exited with {}:\n{stderr}", out.status));
    }
    serde_json::from_str(stdout.trim())
        .map_err(|e| format!("client printed no JSON ({e}):\n{stdout}\n{stderr}"))
}

/// The proxy binary on a free port federating `targets` (name, URL) at `/mcp`: the
/// running proxy, its port and its MCP URL.
pub fn gateway(targets: &[(&str, String)]) -> (Proxy, u16, String) {
    let port = super::support::free_port();
    let proxy = Proxy::start(&gateway_config(port, targets, ""));
    (proxy, port, format!("http://127.0.0.1:{port}/mcp"))
}

/// A proxy config with one route on `port` to an `mcp` backend with `targets` (name, URL)
/// and extra backend YAML (already indented for the `mcp:` block).
pub fn gateway_config(port: u16, targets: &[(&str, String)], extra: &str) -> String {
    let mut t = String::new();
    for (name, url) in targets {
        t.push_str(&http_target(name, url));
    }
    gateway_config_yaml(port, &t, extra)
}

/// The YAML of a streamable-HTTP target (a `targets:` list item).
pub fn http_target(name: &str, url: &str) -> String {
    format!("    - name: {name}\n      url: {url}\n")
}

/// The YAML of a legacy HTTP+SSE target (a `targets:` list item).
pub fn sse_target(name: &str, url: &str) -> String {
    format!("    - name: {name}\n      sse: {url}\n")
}

/// The YAML of a stdio target running e2e/mcp/fastmcp_server.py in stdio mode, with
/// `mark` on its command line (see [`processes_marked`]) and `mode` (PER_SESSION or
/// SHARED).
pub fn stdio_target(name: &str, mark: &str, mode: &str) -> String {
    format!(
        "    - name: {name}\n      stdio:\n        command: {}\n        args: [{}, {name}, stdio, {mark}]\n        env: {{ PYTHONUNBUFFERED: \"1\" }}\n        mode: {mode}\n",
        python().display(),
        fixture("fastmcp_server.py").display(),
    )
}

/// The YAML of a per-session stdio target running e2e/mcp/relay_server.py.
pub fn relay_stdio_target(name: &str) -> String {
    format!(
        "    - name: {name}\n      stdio:\n        command: {}\n        args: [{}, {name}, stdio]\n        env: {{ PYTHONUNBUFFERED: \"1\" }}\n",
        python().display(),
        fixture("relay_server.py").display(),
    )
}

/// A word unique to this test run, to put on a command line.
pub fn unique_mark(test: &str) -> String {
    format!(
        "mark-{test}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )
}

/// Live processes whose command line contains `mark` (zombies have none).
pub fn processes_marked(mark: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(mark) {
            pids.push(pid);
        }
    }
    pids
}

/// A proxy config like [`gateway_config`] with the targets' YAML given.
pub fn gateway_config_yaml(port: u16, t: &str, extra: &str) -> String {
    format!(
        "binds:\n- name: main\n  address: 127.0.0.1\n  port: {port}\n  listeners:\n  - name: http\n    routes:\n    - name: mcp\n      matches:\n      - path: {{ prefix: /mcp }}\n      backends:\n      - backend: tools\nbackends:\n- name: tools\n  mcp:\n    targets:\n{t}{extra}"
    )
}

/// The tools of FastMCP servers `alpha` and `beta` behind one gateway, as listed.
pub const ALPHA_BETA_TOOLS: [&str; 8] = [
    "alpha_add",
    "alpha_echo",
    "alpha_pid",
    "alpha_whoami",
    "beta_add",
    "beta_echo",
    "beta_pid",
    "beta_whoami",
];

/// The strings of a JSON array a client printed (tool names, URIs); panics on anything
/// else.
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// What a client printed, or a panic with its error and the proxy's log.
pub fn or_logs<T>(r: Result<T, String>, proxy: &Proxy) -> T {
    r.unwrap_or_else(|e| panic!("{e}\nproxy log:\n{}", proxy.logs()))
}

/// A POST of `body` to the gateway's `/mcp` on `port` with the headers a spec-following
/// client sends, plus `extra`.
pub async fn post(port: u16, body: &str, extra: &[(&str, &str)]) -> Got {
    let mut req = Request::post(format!("http://127.0.0.1:{port}/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    client::send(
        &client::http1(),
        req.body(Full::new(Bytes::from(body.to_owned()))).unwrap(),
    )
    .await
}

/// A successful tool call answering `text`, as the clients print a call's result.
pub fn call_ok(text: &str) -> Value {
    json!({ "text": [text], "isError": false })
}

/// Asserts what the `progress` scenario printed for `target`'s `count` tool counting to
/// `n`: the result, `n` progress notifications carrying the client's own progress token,
/// and `n` log messages, in order.
#[track_caller]
pub fn assert_counted(out: &Value, target: &str, n: u32) {
    assert_eq!(
        out["text"],
        json!([format!("{target} counted to {n}")]),
        "{out}"
    );
    let progress: Vec<Value> = (1..=n)
        .map(|i| json!({ "progress": f64::from(i), "total": f64::from(n), "message": format!("step {i}") }))
        .collect();
    assert_eq!(
        out["progress"],
        Value::from(progress),
        "the client's own progress token came back: {out}"
    );
    let logs: Vec<String> = (1..=n).map(|i| format!("{target} step {i}")).collect();
    assert_eq!(out["logs"], json!(logs), "{out}");
}
