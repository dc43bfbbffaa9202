//! MCP protocol generations through the gateway, with real peers: version narrowing
//! across targets pinned to different versions (Python SDK 1.x FastMCP speaking only
//! what it is told to), targets that speak only the 2026-07-28 style (Python SDK 2.x
//! `MCPServer`, e2e/mcp/modern_server.py) reached by clients of both styles (the SDK
//! 1.x client over streamable HTTP and legacy SSE, the TypeScript SDK client, the SDK
//! 2.x client), alone and federated with
//! a session-style FastMCP target; and stateless mode, where the gateway keeps no
//! session at all.
#![allow(clippy::unwrap_used, missing_docs)]

mod mcp_peers;
mod node_peers;
mod support;

use std::time::Duration;

use mcp_peers::{
    FastMcp, call_ok, client_v1, client_v1_sse, client_v2, gateway, gateway_config,
    gateway_config_yaml, http_target, or_logs, post, processes_marked, stdio_target, strings,
    unique_mark,
};
use node_peers::ts_client;
use serde_json::{Value, json};
use support::client;
use support::{Proxy, eventually, free_port};

fn initialize(version: &str) -> String {
    json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion": version, "capabilities": {}, "clientInfo": {"name":"raw","version":"0"}}})
    .to_string()
}

#[test]
fn initialize_narrows_to_the_newest_version_every_target_speaks() {
    let new = FastMcp::start("alpha");
    let old = FastMcp::start_pinned("beta", "2024-11-05");
    let (proxy, _, url) = gateway(&[("alpha", new.url()), ("beta", old.url())]);

    // The SDK client asks for 2025-11-25; beta speaks only 2024-11-05.
    let out = or_logs(client_v1(&url, "tour", &[]), &proxy);
    assert_eq!(out["protocolVersion"], "2024-11-05", "{out}");
    assert_eq!(out["calls"]["alpha_echo"], call_ok("alpha: hi"));
    assert_eq!(out["calls"]["beta_echo"], call_ok("beta: hi"));
    assert_eq!(
        out["promptTexts"]["beta_greet"],
        json!(["Hello Ada, from beta."])
    );
    // alpha was asked twice (2025-11-25, then 2024-11-05), beta once.
    let inits = |target| {
        proxy.metric(
            "agentmesh_mcp_requests_total",
            &[
                ("method", "initialize"),
                ("target", target),
                ("outcome", "ok"),
            ],
        )
    };
    assert_eq!((inits("alpha"), inits("beta")), (2.0, 1.0));
    assert!(
        proxy
            .logs()
            .contains("protocol version narrowed to one every target speaks"),
        "{}",
        proxy.logs()
    );

    // The TypeScript SDK client accepts the narrowed version too.
    let out = or_logs(
        ts_client(&url, "call", &["beta_add", r#"{"a":2,"b":40}"#]),
        &proxy,
    );
    assert_eq!(out["text"], json!(["42"]), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_nobody_speaks_gets_the_error_listing_supported_versions() {
    let only_old = FastMcp::start_pinned("alpha", "2024-11-05");
    let only_new = FastMcp::start_pinned("beta", "2025-11-25");
    let port = free_port();
    let proxy = Proxy::start(&gateway_config(port, &[("alpha", only_old.url())], ""));

    let got = post(port, &initialize("1.0.0"), &[]).await;
    let body = got.json();
    assert_eq!(body["error"]["code"], -32602, "{}", got.body);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Unsupported protocol version"),
        "{}",
        got.body
    );
    assert_eq!(
        body["error"]["data"],
        json!({ "requested": "1.0.0",
            "supported": ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"] })
    );
    assert!(got.header("mcp-session-id").is_none());

    // One target: its version is the answer, whatever the client asked.
    let got = post(port, &initialize("2025-06-18"), &[]).await;
    assert_eq!(got.json()["result"]["protocolVersion"], "2024-11-05");
    drop(proxy);

    // Two targets that share no version: refused, naming what each speaks.
    let port = free_port();
    let proxy = Proxy::start(&gateway_config(
        port,
        &[("alpha", only_old.url()), ("beta", only_new.url())],
        "",
    ));
    let got = post(port, &initialize("2025-11-25"), &[]).await;
    let body = got.json();
    assert_eq!(body["error"]["code"], -32602, "{}", got.body);
    let message = body["error"]["message"].as_str().unwrap();
    // Asked 2025-11-25, alpha answered 2024-11-05; asked that, beta kept 2025-11-25.
    assert!(message.contains("beta answers 2025-11-25"), "{message}");
    assert_eq!(body["error"]["data"]["requested"], "2025-11-25");
    assert!(got.header("mcp-session-id").is_none());
    assert!(
        proxy
            .logs()
            .contains("MCP targets share no protocol version"),
        "{}",
        proxy.logs()
    );
}

#[test]
fn a_modern_only_target_serves_clients_of_both_generations() {
    let gamma = FastMcp::start_modern("gamma");
    let (proxy, _, url) = gateway(&[("gamma", gamma.url())]);
    let fail = |e: String| -> Value {
        panic!(
            "{e}\nproxy log:\n{}\nserver log:\n{}",
            proxy.logs(),
            gamma.logs()
        )
    };

    // Session style (SDK 1.x): initialize, list, call, prompts, resources.
    let out = client_v1(&url, "tour", &[]).unwrap_or_else(fail);
    assert_eq!(out["protocolVersion"], "2025-11-25");
    assert_eq!(strings(&out["tools"]), ["add", "echo", "whoami"]);
    assert_eq!(out["calls"]["echo"], call_ok("gamma: hi"));
    assert_eq!(out["calls"]["add"], call_ok("5"));
    assert_eq!(
        out["instructions"],
        "gamma (2026-07-28 only) offers echo, add and notes."
    );
    assert_eq!(
        out["promptTexts"]["greet"],
        json!(["Hello Ada, from gamma."])
    );
    assert_eq!(
        out["reads"]["notes://gamma/readme"],
        json!([{ "uri": "notes://gamma/readme", "text": "readme of gamma" }])
    );
    assert!(out["sessionId"].is_string(), "{out}");

    // Session style (TypeScript SDK).
    let out = ts_client(&url, "tour", &[]).unwrap_or_else(fail);
    assert_eq!(out["calls"]["echo"], call_ok("gamma: hi"), "{out}");

    // Legacy HTTP+SSE transport (SDK 1.x `sse_client`).
    let out = client_v1_sse(&format!("{url}/sse"), "call", &["whoami", "{}"]).unwrap_or_else(fail);
    assert_eq!(
        (out["protocolVersion"].as_str(), &out["text"]),
        (Some("2025-11-25"), &json!(["gamma"]))
    );

    // 2026-07-28 style (SDK 2.x): discover, list, call.
    let out = client_v2(&url, "tour", &[]).unwrap_or_else(fail);
    assert_eq!(out["protocolVersion"], "2026-07-28");
    assert_eq!(out["discovered"], true);
    assert_eq!(out["calls"]["echo"], call_ok("gamma: hi"));
    assert_eq!(
        out["reads"]["notes://gamma/readme"],
        json!(["readme of gamma"])
    );

    // The target refused one initialize, the first; from then on the gateway spoke its
    // style only.
    assert_eq!(gamma.session_style_requests(), 1, "{}", gamma.logs());
    assert!(
        proxy
            .logs()
            .contains("MCP target speaks only the 2026-07-28 protocol style"),
        "{}",
        proxy.logs()
    );
}

#[test]
fn mixed_federation_of_a_session_target_and_a_modern_only_target() {
    let alpha = FastMcp::start("alpha");
    let gamma = FastMcp::start_modern("gamma");
    let (proxy, port, url) = gateway(&[("alpha", alpha.url()), ("gamma", gamma.url())]);
    let fail = |e: String| -> Value {
        panic!(
            "{e}\nproxy log:\n{}\nserver log:\n{}",
            proxy.logs(),
            gamma.logs()
        )
    };

    for out in [
        client_v1(&url, "tour", &[]).unwrap_or_else(fail),
        ts_client(&url, "tour", &[]).unwrap_or_else(fail),
        client_v2(&url, "tour", &[]).unwrap_or_else(fail),
    ] {
        assert_eq!(
            strings(&out["tools"])
                .into_iter()
                .filter(|t| t.ends_with("echo"))
                .collect::<Vec<_>>(),
            ["alpha_echo", "gamma_echo"],
            "{out}"
        );
        assert_eq!(
            out["calls"]["alpha_echo"]["text"],
            json!(["alpha: hi"]),
            "{out}"
        );
        assert_eq!(
            out["calls"]["gamma_echo"]["text"],
            json!(["gamma: hi"]),
            "{out}"
        );
        let instructions = out["instructions"].as_str().unwrap_or_default();
        assert!(
            instructions.contains("[alpha] alpha offers")
                && instructions.contains("[gamma] gamma (2026-07-28 only)"),
            "{out}"
        );
    }
    // The session-style target kept the version the clients asked for.
    let out = client_v1(&url, "call", &["gamma_whoami", "{}"]).unwrap_or_else(fail);
    assert_eq!(
        (out["protocolVersion"].as_str(), &out["text"]),
        (Some("2025-11-25"), &json!(["gamma"]))
    );
    assert_eq!(gamma.session_style_requests(), 1);

    // A broadcast the 2026-07-28 target has no method for leaves it out.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let got = rt.block_on(post(port, &initialize("2025-11-25"), &[]));
    let sid = got.header("mcp-session-id").unwrap().to_owned();
    let level = r#"{"jsonrpc":"2.0","id":2,"method":"logging/setLevel","params":{"level":"info"}}"#;
    let got = rt.block_on(post(
        port,
        level,
        &[
            ("mcp-session-id", &sid),
            ("mcp-protocol-version", "2025-11-25"),
        ],
    ));
    assert_eq!(got.json()["result"], json!({}), "{}", got.body);
}

/// A stateless gateway config federating `servers` (HTTP, by name) and a per-session
/// stdio target marked `mark`.
fn stateless_config(port: u16, servers: &[&FastMcp], mark: &str) -> String {
    let mut targets: String = servers
        .iter()
        .map(|s| http_target(&s.name, &s.url()))
        .collect();
    targets.push_str(&stdio_target("local", mark, "PER_SESSION"));
    gateway_config_yaml(port, &targets, "    sessions:\n      stateless: true\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn stateless_mode_keeps_no_session_and_any_replica_serves_any_request() {
    let alpha = FastMcp::start("alpha");
    let gamma = FastMcp::start_modern("gamma");
    // An SDK 2.x server of both generations: stateless requests use its 2026-07-28
    // style, with no handshake per request.
    let delta = FastMcp::start_v2_both("delta");
    let mark = unique_mark("stateless");
    let (port, other_port) = (free_port(), free_port());
    // Two replicas, each with its own generated session key: only stateless serving
    // lets one answer what the other began.
    let servers = [&alpha, &gamma, &delta];
    let proxy = Proxy::start(&stateless_config(port, &servers, &mark));
    let replica = Proxy::start(&stateless_config(other_port, &servers, &mark));
    let url = format!("http://127.0.0.1:{port}/mcp");
    let fail = |e: String| -> Value { panic!("{e}\nproxy log:\n{}", proxy.logs()) };

    let out = tokio::task::block_in_place(|| client_v1(&url, "tour", &[])).unwrap_or_else(fail);
    assert_eq!(out["sessionId"], Value::Null, "{out}");
    for (tool, text) in [
        ("alpha_echo", "alpha: hi"),
        ("gamma_echo", "gamma: hi"),
        ("delta_echo", "delta: hi"),
        ("local_echo", "local: hi"),
    ] {
        assert_eq!(out["calls"][tool]["text"], json!([text]), "{out}");
    }
    let out = tokio::task::block_in_place(|| ts_client(&url, "tour", &[])).unwrap_or_else(fail);
    assert_eq!(out["sessionId"], Value::Null, "{out}");
    assert_eq!(
        out["calls"]["gamma_echo"]["text"],
        json!(["gamma: hi"]),
        "{out}"
    );
    let out = tokio::task::block_in_place(|| client_v2(&url, "call", &["alpha_whoami", "{}"]))
        .unwrap_or_else(fail);
    assert_eq!(out["text"], json!(["alpha"]), "{out}");

    // Initialize on one replica, list and call on the other, without a session id.
    let got = post(port, &initialize("2025-06-18"), &[]).await;
    assert_eq!(
        got.json()["result"]["protocolVersion"],
        "2025-06-18",
        "{}",
        got.body
    );
    assert!(got.header("mcp-session-id").is_none(), "{:?}", got.headers);
    let v = [("mcp-protocol-version", "2025-06-18")];
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let got = post(other_port, list, &v).await;
    let tools = got.json()["result"]["tools"].clone();
    assert!(
        tools
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "gamma_add"),
        "{}",
        got.body
    );
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"alpha_add","arguments":{"a":20,"b":22}}}"#;
    let got = post(other_port, call, &v).await;
    assert_eq!(
        got.json()["result"]["content"][0]["text"],
        "42",
        "{}",
        got.body
    );
    assert!(got.header("mcp-session-id").is_none());

    // No server-to-client stream of a session, no session to end. (A GET without a
    // session id is a legacy client's event stream, served: see mcp_sse.rs.)
    for method in ["GET", "DELETE"] {
        let (status, _, _) = client::curl(&[
            "-X",
            method,
            "-H",
            "accept: text/event-stream",
            "-H",
            "mcp-session-id: none",
            &url,
        ]);
        assert_eq!(status, 405, "{method}");
    }
    // Nothing is kept: no active session, no re-initialization, and every upstream
    // session opened for a request was ended (the per-session stdio processes exit).
    for p in [&proxy, &replica] {
        assert_eq!(
            p.metric("agentmesh_mcp_sessions_active", &[("backend", "tools")]),
            0.0
        );
        assert_eq!(
            p.metric("agentmesh_mcp_upstream_session_inits_total", &[]),
            0.0
        );
    }
    assert!(
        eventually(Duration::from_secs(20), || processes_marked(&mark)
            .is_empty()),
        "stdio processes left: {:?}",
        processes_marked(&mark)
    );
    // The 2.x server that speaks both styles was only ever spoken to in the new one.
    assert_eq!(delta.session_style_requests(), 0);
    assert!(
        proxy
            .logs()
            .contains("stateless requests use it without sessions"),
        "{}",
        proxy.logs()
    );
    // Each request initialized the session-style targets anew.
    assert!(
        proxy.metric(
            "agentmesh_mcp_requests_total",
            &[
                ("method", "initialize"),
                ("target", "alpha"),
                ("outcome", "ok")
            ]
        ) >= 10.0
    );
}

#[test]
fn input_requests_of_a_modern_only_target_reach_clients_of_both_generations() {
    // The 2026-07-28 way of asking: the SDK 2.x server answers the call `input_required`
    // (elicitation or sampling inside), and expects the call again with the answers.
    let gamma = FastMcp::start_modern_asking("gamma");
    let alpha = FastMcp::start("alpha");
    let (proxy, _, url) = gateway(&[("gamma", gamma.url()), ("alpha", alpha.url())]);
    let fail = |e: String| -> Value {
        panic!(
            "{e}\nproxy log:\n{}\nserver log:\n{}",
            proxy.logs(),
            gamma.logs()
        )
    };
    let asks = "gamma asks: your favourite colour?";

    // Session style (SDK 1.x, streamable HTTP and legacy SSE): the gateway puts each
    // input request to the client as a server request on its response stream, then
    // calls again with the answers.
    for out in [
        client_v1(&url, "answer", &["gamma_favourite"]).unwrap_or_else(fail),
        client_v1_sse(&format!("{url}/sse"), "answer", &["gamma_favourite"]).unwrap_or_else(fail),
    ] {
        assert_eq!(out["text"], json!(["gamma: teal"]), "{out}");
        assert_eq!(out["requests"][0]["message"], asks, "{out}");
    }
    let out = client_v1(&url, "answer", &["gamma_compose"]).unwrap_or_else(fail);
    assert_eq!(
        out["text"],
        json!(["gamma got: sampled: a line on tides"]),
        "{out}"
    );
    assert_eq!(out["requests"][0]["method"], "sampling/createMessage");

    // 2026-07-28 style (SDK 2.x): the result is passed on, and the client calls again
    // itself, through the gateway.
    let out = client_v2(&url, "answer", &["gamma_favourite"]).unwrap_or_else(fail);
    assert_eq!(out["text"], json!(["gamma: teal"]), "{out}");
    assert_eq!(out["requests"][0]["message"], asks, "{out}");
    let out = client_v2(&url, "answer", &["gamma_compose"]).unwrap_or_else(fail);
    assert_eq!(
        out["text"],
        json!(["gamma got: sampled: a line on tides"]),
        "{out}"
    );

    // Each round is a call to the target: two per answered call, five calls.
    let rounds = proxy.metric(
        "agentmesh_mcp_requests_total",
        &[
            ("method", "tools/call"),
            ("target", "gamma"),
            ("outcome", "ok"),
        ],
    );
    assert_eq!(rounds, 10.0, "{}", proxy.metrics_text());
}
