//! The legacy HTTP+SSE transport (protocol 2024-11-05) through the MCP gateway, both
//! ways, and the fallback between transports, with real peers: the Python SDK 1.x
//! `sse_client` and the TypeScript SDK `SSEClientTransport` as clients; FastMCP servers
//! run with `transport="sse"` (GET /sse, POST /messages/) and with streamable HTTP as
//! targets; raw HTTP for the legacy endpoint's error rules.
#![allow(clippy::unwrap_used, missing_docs)]

mod mcp_peers;
mod node_peers;
mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use mcp_peers::{
    ALPHA_BETA_TOOLS, FastMcp, assert_counted, call_ok, client_v1, client_v1_sse, client_v2,
    gateway_config_yaml, http_target, or_logs, post, sse_target, strings,
};
use node_peers::{inspector_over, ts_client_sse};
use serde_json::{Value, json};
use support::client::{self, Got};
use support::{Proxy, eventually, free_port};

/// A gateway on a free port with the targets' YAML items; its port and its
/// streamable-HTTP and legacy SSE URLs.
fn gateway(targets: &[String]) -> (Proxy, u16, String, String) {
    let port = free_port();
    let proxy = Proxy::start(&gateway_config_yaml(port, &targets.concat(), ""));
    let base = format!("http://127.0.0.1:{port}/mcp");
    (proxy, port, base.clone(), format!("{base}/sse"))
}

#[test]
fn python_sse_client_lists_calls_prompts_and_reads_across_two_targets() {
    let (alpha, beta) = (FastMcp::start("alpha"), FastMcp::start("beta"));
    let (proxy, _, _, sse) = gateway(&[
        http_target("alpha", &alpha.url()),
        http_target("beta", &beta.url()),
    ]);

    let out = or_logs(client_v1_sse(&sse, "tour", &[]), &proxy);

    assert_eq!(out["serverName"], "tools");
    assert_eq!(strings(&out["tools"]), ALPHA_BETA_TOOLS);
    assert_eq!(out["calls"]["beta_echo"], call_ok("beta: hi"));
    assert_eq!(out["calls"]["alpha_add"], call_ok("5"));
    assert!(
        out["unknownTool"]["error"]
            .as_str()
            .unwrap()
            .contains("unknown tool"),
        "{out}"
    );
    assert_eq!(
        out["promptTexts"]["alpha_greet"],
        json!(["Hello Ada, from alpha."])
    );
    let readme = "agentmesh://beta/notes%3A%2F%2Fbeta%2Freadme";
    assert_eq!(
        out["reads"][readme],
        json!([{ "uri": readme, "text": "readme of beta" }])
    );
    // The client's POST endpoint names its stream with a key of the gateway's own.
    let key = out["sessionId"].as_str().unwrap();
    assert!(
        key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit()),
        "{key}"
    );
    // Served by the same federation code: counted like any tool call.
    let calls = proxy.metric(
        "agentmesh_mcp_requests_total",
        &[
            ("method", "tools/call"),
            ("tool", "beta_echo"),
            ("outcome", "ok"),
        ],
    );
    assert_eq!(calls, 1.0, "{}", proxy.metrics_text());
    // The client closed its stream: the session ended with it.
    assert!(
        eventually(Duration::from_secs(10), || proxy
            .metric("agentmesh_mcp_sessions_active", &[("backend", "tools")])
            == 0.0),
        "{}",
        proxy.metrics_text()
    );
}

#[test]
fn typescript_sse_client_lists_calls_and_reads() {
    let (alpha, beta) = (FastMcp::start("alpha"), FastMcp::start("beta"));
    let (proxy, _, _, sse) = gateway(&[
        http_target("alpha", &alpha.url()),
        http_target("beta", &beta.url()),
    ]);

    let out = or_logs(ts_client_sse(&sse, "tour", &[]), &proxy);

    assert_eq!(out["serverName"], "tools");
    assert_eq!(strings(&out["tools"]), ALPHA_BETA_TOOLS);
    assert_eq!(out["calls"]["alpha_echo"], call_ok("alpha: hi"));
    assert_eq!(
        out["promptTexts"]["beta_greet"],
        json!(["Hello Ada, from beta."])
    );
    let readme = "agentmesh://alpha/notes%3A%2F%2Falpha%2Freadme";
    assert_eq!(
        out["reads"][readme],
        json!([{ "uri": readme, "text": "readme of alpha" }])
    );
}

#[test]
fn inspector_cli_over_sse_lists_and_calls_tools() {
    let (alpha, beta) = (FastMcp::start("alpha"), FastMcp::start_sse("beta"));
    let (proxy, _, _, sse) = gateway(&[
        http_target("alpha", &alpha.url()),
        sse_target("beta", &beta.sse_url()),
    ]);

    let listed = or_logs(
        inspector_over("sse", &sse, &["--method", "tools/list"]),
        &proxy,
    );
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"alpha_echo") && names.contains(&"beta_add"),
        "{listed}"
    );
    let args = [
        "--method",
        "tools/call",
        "--tool-name",
        "beta_add",
        "--tool-arg",
        "a=20",
        "--tool-arg",
        "b=22",
    ];
    let called = or_logs(inspector_over("sse", &sse, &args), &proxy);
    assert_eq!(called["content"][0]["text"], "42", "{called}");
}

#[test]
fn server_requests_and_progress_cross_legacy_sse_on_both_sides() {
    // alpha speaks streamable HTTP, beta only the legacy transport; the client speaks
    // the legacy transport too.
    let (alpha, beta) = (
        FastMcp::start_relay("alpha"),
        FastMcp::start_relay_sse("beta"),
    );
    let (proxy, _, url, sse) = gateway(&[
        http_target("alpha", &alpha.url()),
        sse_target("beta", &beta.sse_url()),
    ]);

    for (client, tool) in [
        (&sse, "alpha_favourite"),
        (&sse, "beta_favourite"),
        (&url, "beta_favourite"),
    ] {
        let out = if client == &sse {
            client_v1_sse(client, "answer", &[tool])
        } else {
            client_v1(client, "answer", &[tool])
        };
        let out = or_logs(out, &proxy);
        let who = &tool[..tool.find('_').unwrap()];
        assert_eq!(
            out["text"],
            json!([format!("{who}: teal")]),
            "{tool}: {out}"
        );
        assert_eq!(
            out["requests"][0]["message"],
            format!("{who} asks: your favourite colour?")
        );
    }

    let out = or_logs(client_v1_sse(&sse, "answer", &["beta_compose"]), &proxy);
    assert_eq!(
        out["text"],
        json!(["beta got: sampled: a line on tides"]),
        "{out}"
    );
    assert_eq!(out["requests"][0]["method"], "sampling/createMessage");

    let out = or_logs(
        client_v1_sse(&sse, "progress", &["beta_count", r#"{"n": 3}"#]),
        &proxy,
    );
    assert_counted(&out, "beta", 3);

    let out = or_logs(
        client_v1_sse(&sse, "cancel", &["beta_linger", "beta_cancellations"]),
        &proxy,
    );
    assert_eq!(out["counter"], json!(["1"]), "{out}");

    // alpha tells of its new tool on its GET stream, which the gateway relays onto the
    // legacy client's event stream.
    let out = or_logs(client_v1_sse(&sse, "list-changed", &["alpha_grow"]), &proxy);
    assert!(
        strings(&out["tools"]).contains(&"alpha_extra".to_string()),
        "{out}"
    );
    assert!(
        strings(&out["notifications"]).contains(&"notifications/tools/list_changed".into()),
        "{out}"
    );

    let out = or_logs(client_v1(&url, "list-changed", &["beta_grow"]), &proxy);
    assert!(
        strings(&out["tools"]).contains(&"beta_extra".to_string()),
        "{out}"
    );
    assert!(
        strings(&out["notifications"]).contains(&"notifications/tools/list_changed".into()),
        "{out}"
    );
}

#[test]
fn sse_target_serves_streamable_http_clients() {
    let (alpha, beta) = (FastMcp::start_sse("alpha"), FastMcp::start("beta"));
    let (proxy, _, url, _) = gateway(&[
        sse_target("alpha", &alpha.sse_url()),
        http_target("beta", &beta.url()),
    ]);

    let out = or_logs(client_v1(&url, "tour", &[]), &proxy);

    assert_eq!(strings(&out["tools"]), ALPHA_BETA_TOOLS);
    assert_eq!(out["calls"]["alpha_echo"], call_ok("alpha: hi"));
    let readme = "agentmesh://alpha/notes%3A%2F%2Falpha%2Freadme";
    assert_eq!(
        out["reads"][readme],
        json!([{ "uri": readme, "text": "readme of alpha" }])
    );
    assert!(
        out["instructions"]
            .as_str()
            .unwrap()
            .contains("[alpha] alpha offers"),
        "{out}"
    );
    // A client of the 2026-07-28 style too, over sessions the gateway holds.
    let out = or_logs(client_v2(&url, "tour", &[]), &proxy);
    assert_eq!(out["protocolVersion"], "2026-07-28", "{out}");
    assert_eq!(out["calls"]["alpha_echo"], call_ok("alpha: hi"));
    // Configured as SSE and spoken as SSE: no fallback.
    assert_eq!(
        proxy.metric("agentmesh_mcp_transport_fallbacks_total", &[]),
        0.0
    );
}

#[test]
fn streamable_target_that_answers_like_a_legacy_server_is_used_over_sse() {
    let alpha = FastMcp::start_sse("alpha");
    // The SSE URL configured as streamable HTTP: POST /sse gets 405.
    let (proxy, _, url, _) = gateway(&[http_target("alpha", &alpha.sse_url())]);

    let out = or_logs(
        client_v1(&url, "call", &["echo", r#"{"text": "x"}"#]),
        &proxy,
    );
    assert_eq!(out["text"], json!(["alpha: x"]), "{out}");
    let out = or_logs(client_v1(&url, "call", &["whoami", "{}"]), &proxy);
    assert_eq!(out["text"], json!(["alpha"]), "{out}");

    let logs = proxy.logs();
    let switched: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("answers like a server of the other transport"))
        .collect();
    assert_eq!(switched.len(), 1, "logged once:\n{logs}");
    assert!(
        switched[0].contains(r#"configured="streamable_http""#)
            && switched[0].contains(r#"now="sse""#),
        "{}",
        switched[0]
    );
    let fallbacks = proxy.metric(
        "agentmesh_mcp_transport_fallbacks_total",
        &[("target", "alpha"), ("transport", "sse")],
    );
    assert_eq!(
        fallbacks,
        2.0,
        "one per upstream session\n{}",
        proxy.metrics_text()
    );
}

#[test]
fn sse_target_that_is_streamable_http_is_used_over_streamable_http() {
    let alpha = FastMcp::start("alpha");
    // A streamable endpoint configured as SSE: GET without a session gets 400.
    let (proxy, _, _, sse) = gateway(&[sse_target("alpha", &alpha.url())]);

    let out = or_logs(
        client_v1_sse(&sse, "call", &["add", r#"{"a": 4, "b": 5}"#]),
        &proxy,
    );

    assert_eq!(out["text"], json!(["9"]), "{out}");
    let logs = proxy.logs();
    assert!(
        logs.lines().any(
            |l| l.contains("answers like a server of the other transport")
                && l.contains(r#"now="streamable_http""#)
        ),
        "{logs}"
    );
    let fallbacks = proxy.metric(
        "agentmesh_mcp_transport_fallbacks_total",
        &[("target", "alpha"), ("transport", "streamable_http")],
    );
    assert_eq!(fallbacks, 1.0, "{}", proxy.metrics_text());
}

/// A POST of `body` to `path` with `content_type`.
async fn post_to(port: u16, path: &str, content_type: &str, body: &str) -> Got {
    let req = Request::post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    client::send(&client::http1(), req).await
}

/// A legacy event stream read event by event.
struct EventReader {
    body: hyper::body::Incoming,
    buf: String,
}

impl EventReader {
    async fn open(port: u16) -> (u16, Option<String>, EventReader) {
        let req = Request::get(format!("http://127.0.0.1:{port}/mcp/sse"))
            .header("accept", "text/event-stream")
            .body(Full::default())
            .unwrap();
        let resp = client::http1().request(req).await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let reader = EventReader {
            body: resp.into_body(),
            buf: String::new(),
        };
        (status, ct, reader)
    }

    /// The next event (name, data), skipping comments; fails after 20 s without one.
    async fn next(&mut self) -> (String, String) {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let (mut name, mut data) = ("message".to_owned(), String::new());
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = v.to_owned();
                    }
                }
                if !data.is_empty() {
                    return (name, data);
                }
                continue;
            }
            let frame = tokio::time::timeout(Duration::from_secs(20), self.body.frame())
                .await
                .expect("an event within 20 s")
                .expect("the stream is open")
                .unwrap();
            if let Ok(bytes) = frame.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }

    async fn next_message(&mut self) -> Value {
        let (name, data) = self.next().await;
        assert_eq!(name, "message", "{data}");
        serde_json::from_str(&data).unwrap()
    }
}

/// Asserts that `got` is an HTTP `status` carrying a JSON-RPC error `code`.
#[track_caller]
fn assert_rpc_error(got: &Got, status: u16, code: i64) {
    let got_code = got.json()["error"]["code"].as_i64().unwrap_or(0);
    assert_eq!((got.status, got_code), (status, code), "{}", got.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_endpoint_answers_bad_input_with_clear_errors() {
    let (alpha, beta) = (FastMcp::start("alpha"), FastMcp::start("beta"));
    let (proxy, port, _, _) = gateway(&[
        http_target("alpha", &alpha.url()),
        http_target("beta", &beta.url()),
    ]);

    let got = post_to(port, "/mcp?sessionId=0123", "application/json", "{}").await;
    assert_rpc_error(&got, 404, -32003);
    assert!(got.body.contains("SSE stream"), "{}", got.body);

    let (status, content_type, mut stream) = EventReader::open(port).await;
    assert_eq!(status, 200);
    assert_eq!(content_type.as_deref(), Some("text/event-stream"));
    let (name, endpoint) = stream.next().await;
    assert_eq!(name, "endpoint");
    assert!(endpoint.starts_with("/mcp/sse?sessionId="), "{endpoint}");

    // Another caller cannot use the stream: answered as if it did not exist.
    let req = Request::post(format!("http://127.0.0.1:{port}{endpoint}"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer someone-else")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let got = client::send(&client::http1(), req).await;
    assert_rpc_error(&got, 404, -32003);

    let got = post_to(port, &endpoint, "text/plain", "hello").await;
    assert_eq!(got.status, 415, "{}", got.body);
    let got = post_to(port, &endpoint, "application/json", "{not json").await;
    assert_rpc_error(&got, 400, -32700);
    let got = post_to(port, &endpoint, "application/json", "[]").await;
    assert_rpc_error(&got, 400, -32600);
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let got = post_to(port, &endpoint, "application/json", list).await;
    assert_rpc_error(&got, 400, -32600);
    assert!(got.body.contains("initialize"), "{}", got.body);

    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#;
    let got = post_to(port, &endpoint, "application/json", init).await;
    assert_eq!((got.status, got.body.as_str()), (202, ""));
    let answer = stream.next_message().await;
    assert_eq!(answer["id"], 1);
    assert_eq!(
        answer["result"]["protocolVersion"], "2024-11-05",
        "{answer}"
    );
    let got = post_to(port, &endpoint, "application/json", init).await;
    assert_rpc_error(&got, 400, -32600);
    let ping = r#"{"jsonrpc":"2.0","id":"p","method":"ping"}"#;
    let got = post_to(port, &endpoint, "application/json", ping).await;
    assert_eq!((got.status, got.body.as_str()), (202, ""));
    let answer = stream.next_message().await;
    assert_eq!(
        (&answer["id"], &answer["result"]),
        (&json!("p"), &json!({}))
    );

    let unknown = r#"{"jsonrpc":"2.0","id":"u","method":"tools/call","params":{"name":"nope","arguments":{}}}"#;
    assert_eq!(
        post_to(port, &endpoint, "application/json", unknown)
            .await
            .status,
        202
    );
    let answer = stream.next_message().await;
    assert_eq!(
        (&answer["id"], &answer["error"]["code"]),
        (&json!("u"), &json!(-32602)),
        "{answer}"
    );
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"alpha_whoami","arguments":{}}}"#;
    assert_eq!(
        post_to(port, &endpoint, "application/json", call)
            .await
            .status,
        202
    );
    let answer = stream.next_message().await;
    assert_eq!(answer["result"]["content"][0]["text"], "alpha", "{answer}");

    // Closing the stream ends the session: its endpoint is gone.
    drop(stream);
    let mut last = 0;
    let gone = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            last = post_to(port, &endpoint, "application/json", call)
                .await
                .status;
            if last == 404 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "still {last}\n{}", proxy.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn restarted_sse_target_gets_a_new_stream_and_the_client_keeps_its_session() {
    let alpha_port = free_port();
    let alpha = FastMcp::start_sse_on("alpha", alpha_port);
    let (proxy, port, _, _) = gateway(&[sse_target("alpha", &alpha.sse_url())]);
    let got = post(
        port,
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#,
        &[],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let sid = got.header("mcp-session-id").unwrap().to_owned();
    let pid_call =
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"pid","arguments":{}}}"#;
    let first = post(port, pid_call, &[("mcp-session-id", &sid)])
        .await
        .json()["result"]["content"][0]["text"]
        .clone();
    assert!(first.is_string(), "{first}");

    alpha.stop();
    let _alpha = FastMcp::start_sse_on("alpha", alpha_port);
    let got = post(port, pid_call, &[("mcp-session-id", &sid)]).await;
    let second = got.json()["result"]["content"][0]["text"].clone();
    assert!(
        second.is_string() && second != first,
        "{}\n{}",
        got.body,
        proxy.logs()
    );
    assert_eq!(
        proxy.metric(
            "agentmesh_mcp_upstream_session_inits_total",
            &[("target", "alpha")]
        ),
        1.0,
        "{}",
        proxy.metrics_text()
    );
}

#[test]
fn stateless_gateway_serves_legacy_sse_clients_on_their_own_stream() {
    // Stateless: no gateway session; the client's event stream is the only state. One
    // target over streamable HTTP, one over the legacy transport.
    let (alpha, beta) = (
        FastMcp::start_relay("alpha"),
        FastMcp::start_relay_sse("beta"),
    );
    let (tour_alpha, tour_beta) = (FastMcp::start("alpha"), FastMcp::start_sse("beta"));
    let stateless = "    sessions:\n      stateless: true\n";
    let port = free_port();
    let proxy = Proxy::start(&gateway_config_yaml(
        port,
        &[
            http_target("alpha", &tour_alpha.url()),
            sse_target("beta", &tour_beta.sse_url()),
        ]
        .concat(),
        stateless,
    ));
    let sse = format!("http://127.0.0.1:{port}/mcp/sse");

    let out = or_logs(client_v1_sse(&sse, "tour", &[]), &proxy);
    assert_eq!(strings(&out["tools"]), ALPHA_BETA_TOOLS);
    assert_eq!(out["calls"]["beta_echo"], call_ok("beta: hi"));
    assert_eq!(out["calls"]["alpha_add"], call_ok("5"));
    let readme = "agentmesh://beta/notes%3A%2F%2Fbeta%2Freadme";
    assert_eq!(
        out["reads"][readme],
        json!([{ "uri": readme, "text": "readme of beta" }])
    );

    // Server requests, sampling and progress cross on the stream: each request has
    // upstream sessions of its own, and the client's answer reaches the one that asked.
    let relay_port = free_port();
    let relay = Proxy::start(&gateway_config_yaml(
        relay_port,
        &[
            http_target("alpha", &alpha.url()),
            sse_target("beta", &beta.sse_url()),
        ]
        .concat(),
        stateless,
    ));
    let sse = format!("http://127.0.0.1:{relay_port}/mcp/sse");
    for tool in ["alpha_favourite", "beta_favourite"] {
        let out = or_logs(client_v1_sse(&sse, "answer", &[tool]), &relay);
        let who = &tool[..tool.find('_').unwrap()];
        assert_eq!(
            out["text"],
            json!([format!("{who}: teal")]),
            "{tool}: {out}"
        );
        assert_eq!(
            out["requests"][0]["message"],
            format!("{who} asks: your favourite colour?")
        );
    }
    let out = or_logs(client_v1_sse(&sse, "answer", &["beta_compose"]), &relay);
    assert_eq!(
        out["text"],
        json!(["beta got: sampled: a line on tides"]),
        "{out}"
    );
    let out = or_logs(
        client_v1_sse(&sse, "progress", &["beta_count", r#"{"n": 3}"#]),
        &relay,
    );
    assert_counted(&out, "beta", 3);

    // Nothing was kept: no gateway session, and the upstream sessions were ended.
    for p in [&proxy, &relay] {
        assert_eq!(
            p.metric("agentmesh_mcp_sessions_active", &[("backend", "tools")]),
            0.0
        );
        assert_eq!(
            p.metric("agentmesh_mcp_upstream_session_inits_total", &[]),
            0.0
        );
    }
}
