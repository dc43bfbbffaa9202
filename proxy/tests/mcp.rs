//! The MCP gateway with real peers: Python SDK 1.x FastMCP servers as targets and the
//! SDK's own client (`streamablehttp_client` + `ClientSession`) connecting through the
//! proxy; raw HTTP for the transport's status and error rules.
#![allow(clippy::unwrap_used, missing_docs)]

mod mcp_peers;
mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use mcp_peers::{
    ALPHA_BETA_TOOLS, FastMcp, call_ok, client_v1, client_v2, dead_port, gateway, gateway_config,
    gateway_config_yaml, http_target, or_logs, post, processes_marked, stdio_target, strings,
    unique_mark,
};
use serde_json::{Value, json};
use support::client::{self, Got};
use support::{Proxy, eventually, free_port};

fn targets(list: &[&FastMcp]) -> Vec<(&'static str, String)> {
    list.iter()
        .map(|s| (if s.name == "alpha" { "alpha" } else { "beta" }, s.url()))
        .collect()
}

#[test]
fn python_client_lists_calls_prompts_and_reads_across_two_targets() {
    let (alpha, beta) = (FastMcp::start("alpha"), FastMcp::start("beta"));
    let (proxy, _, url) = gateway(&targets(&[&alpha, &beta]));

    let out = or_logs(client_v1(&url, "tour", &[]), &proxy);

    assert_eq!(out["serverName"], "tools");
    assert_eq!(out["protocolVersion"], "2025-11-25");
    let instructions = out["instructions"].as_str().unwrap();
    assert!(
        instructions.contains("[alpha] alpha offers")
            && instructions.contains("[beta] beta offers"),
        "{instructions}"
    );
    assert_eq!(strings(&out["tools"]), ALPHA_BETA_TOOLS);
    assert_eq!(out["calls"]["alpha_echo"], call_ok("alpha: hi"));
    assert_eq!(out["calls"]["beta_echo"], call_ok("beta: hi"));
    assert_eq!(out["calls"]["alpha_add"], call_ok("5"));
    assert!(
        out["unknownTool"]["error"]
            .as_str()
            .unwrap()
            .contains("unknown tool"),
        "{out}"
    );
    assert_eq!(strings(&out["prompts"]), ["alpha_greet", "beta_greet"]);
    assert_eq!(
        out["promptTexts"]["beta_greet"],
        json!(["Hello Ada, from beta."])
    );

    let readme = "agentmesh://alpha/notes%3A%2F%2Falpha%2Freadme";
    assert_eq!(
        strings(&out["resources"]),
        [readme, "agentmesh://beta/notes%3A%2F%2Fbeta%2Freadme"]
    );
    assert_eq!(
        out["reads"][readme],
        json!([{ "uri": readme, "text": "readme of alpha" }])
    );
    assert_eq!(
        strings(&out["templates"]),
        [
            "agentmesh://alpha/notes%3A%2F%2Falpha%2F{topic}",
            "agentmesh://beta/notes%3A%2F%2Fbeta%2F{topic}"
        ]
    );
    // The client-facing session id is ours (encrypted), not an upstream's.
    let sid = out["sessionId"].as_str().unwrap();
    assert!(sid.len() > 60 && !sid.contains(&alpha.name), "{sid}");

    let m = |labels: &[(&str, &str)]| proxy.metric("agentmesh_mcp_requests_total", labels);
    assert_eq!(
        m(&[
            ("method", "tools/call"),
            ("target", "alpha"),
            ("tool", "alpha_echo"),
            ("outcome", "ok")
        ]),
        1.0
    );
    assert_eq!(
        m(&[
            ("method", "tools/list"),
            ("target", "beta"),
            ("outcome", "ok")
        ]),
        1.0
    );
    assert_eq!(m(&[("method", "initialize"), ("outcome", "ok")]), 2.0);
    assert!(proxy.metrics_text().contains("agentmesh_mcp_request_duration_seconds_count{backend=\"tools\",method=\"tools/call\",target=\"beta\"} 1"));
    // One log line per tool call, with target, tool, duration and outcome.
    let logs = proxy.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("mcp tool call") && l.contains("alpha_echo"))
        .unwrap_or_else(|| panic!("no tool-call log line:\n{logs}"));
    for field in ["target=alpha", "duration_ms=", "outcome=", "ok"] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
}

#[test]
fn fail_open_leaves_a_down_target_out_and_says_so() {
    let alpha = FastMcp::start("alpha");
    let port = free_port();
    let down = format!("http://127.0.0.1:{}/mcp", dead_port());
    let cfg = gateway_config(
        port,
        &[("alpha", alpha.url()), ("beta", down)],
        "    failureMode: FAIL_OPEN\n",
    );
    let proxy = Proxy::start(&cfg);
    let url = format!("http://127.0.0.1:{port}/mcp");

    let out =
        client_v1(&url, "list-tools", &[]).unwrap_or_else(|e| panic!("{e}\n{}", proxy.logs()));
    assert_eq!(
        strings(&out["tools"]),
        ["alpha_add", "alpha_echo", "alpha_pid", "alpha_whoami"]
    );
    let out = client_v1(&url, "call", &["alpha_whoami", "{}"]).unwrap();
    assert_eq!(out["text"], json!(["alpha"]));

    assert!(
        proxy.metric(
            "agentmesh_mcp_requests_total",
            &[("target", "beta"), ("outcome", "failed_open")]
        ) >= 2.0
    );
    assert!(
        proxy
            .logs()
            .contains("target left out of the answer (failOpen)"),
        "{}",
        proxy.logs()
    );
}

#[test]
fn fail_closed_fails_the_request_naming_the_down_target() {
    let alpha = FastMcp::start("alpha");
    let port = free_port();
    let down = format!("http://127.0.0.1:{}/mcp", dead_port());
    let proxy = Proxy::start(&gateway_config(
        port,
        &[("alpha", alpha.url()), ("beta", down)],
        "",
    ));

    let err = client_v1(&format!("http://127.0.0.1:{port}/mcp"), "list-tools", &[]).unwrap_err();
    assert!(err.contains("target beta is unavailable"), "{err}");
    assert_eq!(
        proxy.metric(
            "agentmesh_mcp_requests_total",
            &[
                ("method", "initialize"),
                ("target", "beta"),
                ("outcome", "upstream_failed")
            ]
        ),
        1.0
    );
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#;

async fn initialize(port: u16) -> String {
    let got = post(port, INIT, &[]).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(
        got.json()["result"]["protocolVersion"],
        "2025-06-18",
        "{}",
        got.body
    );
    got.header("mcp-session-id").unwrap().to_string()
}

fn call(tool: &str) -> String {
    json!({"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":tool,"arguments":{}}})
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn transport_rules_and_malformed_messages_get_clear_errors() {
    let alpha = FastMcp::start("alpha");
    let port = free_port();
    let proxy = Proxy::start(&gateway_config(
        port,
        &[("alpha", alpha.url())],
        "    prefixMode: ALWAYS\n",
    ));
    let sid = initialize(port).await;
    let s = [("mcp-session-id", sid.as_str())];

    let code = |g: &Got| g.json()["error"]["code"].as_i64().unwrap();
    let got = post(port, "{not json", &s).await;
    assert_eq!((got.status, code(&got)), (400, -32700), "{}", got.body);
    let got = post(port, r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, &s).await;
    assert_eq!((got.status, code(&got)), (400, -32600), "{}", got.body);
    assert!(got.body.contains("batches are not supported"));
    let got = post(port, r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, &s).await;
    assert_eq!((got.status, code(&got)), (400, -32600));
    let got = post(
        port,
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/destroy"}"#,
        &s,
    )
    .await;
    assert_eq!(
        (got.status, code(&got), got.json()["id"].as_i64()),
        (200, -32601, Some(3))
    );
    let got = post(
        port,
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{"cursor":"bogus"}}"#,
        &s,
    )
    .await;
    assert_eq!((got.status, code(&got)), (200, -32602));
    let got = post(port, &call("whoami"), &s).await;
    assert_eq!(
        code(&got),
        -32602,
        "unprefixed name under ALWAYS is unknown: {}",
        got.body
    );

    // Sessions: none, forged, and (later) ended.
    let got = post(port, &call("alpha_whoami"), &[]).await;
    assert_eq!((got.status, code(&got)), (400, -32600));
    let got = post(
        port,
        &call("alpha_whoami"),
        &[(
            "mcp-session-id",
            "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA",
        )],
    )
    .await;
    assert_eq!(got.status, 404);
    let got = post(
        port,
        &call("alpha_whoami"),
        &[
            ("mcp-session-id", &sid),
            ("mcp-protocol-version", "1999-01-01"),
        ],
    )
    .await;
    assert_eq!((got.status, code(&got)), (400, -32022), "{}", got.body);
    assert_eq!(got.json()["error"]["data"]["requested"], "1999-01-01");
    assert!(strings(&got.json()["error"]["data"]["supported"]).contains(&"2025-06-18".to_string()));

    // Accept and Content-Type rules; SSE when the client accepts only that.
    let req = |accept: &str, ct: &str| {
        Request::post(format!("http://127.0.0.1:{port}/mcp"))
            .header("content-type", ct)
            .header("accept", accept)
            .header("mcp-session-id", sid.as_str())
            .body(Full::new(Bytes::from(call("alpha_whoami"))))
            .unwrap()
    };
    assert_eq!(
        client::send(&client::http1(), req("text/html", "application/json"))
            .await
            .status,
        406
    );
    assert_eq!(
        client::send(&client::http1(), req("application/json", "text/plain"))
            .await
            .status,
        415
    );
    let got = client::send(
        &client::http1(),
        req("text/event-stream", "application/json"),
    )
    .await;
    assert_eq!(got.header("content-type"), Some("text/event-stream"));
    assert!(
        got.body.starts_with("event: message\ndata: {") && got.body.contains(r#""text":"alpha""#),
        "{}",
        got.body
    );
    let got = post(
        port,
        r#"{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}"#,
        &s,
    )
    .await;
    assert_eq!((got.status, got.body.as_str()), (202, ""));

    let got = client::send(
        &client::http1(),
        Request::get(format!("http://127.0.0.1:{port}/mcp"))
            .header("mcp-session-id", sid.as_str())
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 406, "GET must accept text/event-stream");

    // DELETE ends the session here and upstream.
    let del = Request::delete(format!("http://127.0.0.1:{port}/mcp"))
        .header("mcp-session-id", sid.as_str())
        .body(Full::default())
        .unwrap();
    assert_eq!(client::send(&client::http1(), del).await.status, 200);
    assert_eq!(post(port, &call("alpha_whoami"), &s).await.status, 404);

    // The proxy is still fine.
    let sid = initialize(port).await;
    let got = post(port, &call("alpha_whoami"), &[("mcp-session-id", &sid)]).await;
    assert_eq!(
        got.json()["result"]["content"][0]["text"],
        "alpha",
        "{}",
        got.body
    );
    assert!(proxy.try_exited().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn restarted_target_is_reinitialized_and_the_client_keeps_its_session() {
    let alpha_port = free_port();
    let alpha = FastMcp::start_on("alpha", alpha_port);
    let beta = FastMcp::start("beta");
    let port = free_port();
    let proxy = Proxy::start(&gateway_config(port, &targets(&[&alpha, &beta]), ""));
    let sid = initialize(port).await;
    let s = [("mcp-session-id", sid.as_str())];
    let got = post(port, &call("alpha_whoami"), &s).await;
    assert_eq!(
        got.json()["result"]["content"][0]["text"],
        "alpha",
        "{}",
        got.body
    );

    alpha.stop();
    let _alpha = FastMcp::start_on("alpha", alpha_port);
    let got = post(port, &call("alpha_whoami"), &s).await;
    assert_eq!(
        got.json()["result"]["content"][0]["text"],
        "alpha",
        "{}\n{}",
        got.body,
        proxy.logs()
    );
    let got = post(port, &call("beta_whoami"), &s).await;
    assert_eq!(got.json()["result"]["content"][0]["text"], "beta");
    assert!(
        eventually(Duration::from_secs(2), || proxy.metric(
            "agentmesh_mcp_upstream_session_inits_total",
            &[("target", "alpha")]
        ) == 1.0),
        "{}",
        proxy.metrics_text()
    );
    assert!(
        proxy
            .logs()
            .contains("upstream session lost; re-initializing")
    );
}

#[test]
fn python_client_uses_a_stdio_target_federated_with_an_http_target() {
    let alpha = FastMcp::start("alpha");
    let mark = unique_mark("federated");
    let port = free_port();
    let targets = http_target("alpha", &alpha.url()) + &stdio_target("gamma", &mark, "PER_SESSION");
    let proxy = Proxy::start(&gateway_config_yaml(port, &targets, ""));
    let url = format!("http://127.0.0.1:{port}/mcp");

    let out = or_logs(client_v1(&url, "tour", &[]), &proxy);
    let tools = strings(&out["tools"]);
    assert!(
        tools.contains(&"alpha_echo".to_string()) && tools.contains(&"gamma_echo".to_string()),
        "{tools:?}"
    );
    assert_eq!(out["calls"]["gamma_echo"], call_ok("gamma: hi"));
    assert_eq!(
        out["promptTexts"]["gamma_greet"],
        json!(["Hello Ada, from gamma."])
    );
    let readme = "agentmesh://gamma/notes%3A%2F%2Fgamma%2Freadme";
    assert_eq!(
        out["reads"][readme],
        json!([{ "uri": readme, "text": "readme of gamma" }])
    );
    // The client ended its session on exit (DELETE): its process is gone.
    assert!(
        eventually(Duration::from_secs(5), || processes_marked(&mark)
            .is_empty()),
        "stdio process left behind: {:?}\n{}",
        processes_marked(&mark),
        proxy.logs()
    );
    let logs = proxy.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("gamma stdio server ready"))
        .unwrap_or_else(|| panic!("stderr of the stdio target not logged:\n{logs}"));
    assert!(line.contains("target=gamma"), "{line}");
}

/// `tools/call` of `tool` in session `sid`, returning the text of the first content.
async fn call_text(port: u16, sid: &str, tool: &str) -> String {
    let got = post(port, &call(tool), &[("mcp-session-id", sid)]).await;
    got.json()["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text: {}", got.body))
        .to_string()
}

async fn delete(port: u16, sid: &str) -> u16 {
    let del = Request::delete(format!("http://127.0.0.1:{port}/mcp"))
        .header("mcp-session-id", sid)
        .body(Full::default())
        .unwrap();
    client::send(&client::http1(), del).await.status
}

#[tokio::test(flavor = "multi_thread")]
async fn per_session_stdio_processes_end_with_their_session_or_its_expiry() {
    let mark = unique_mark("per-session");
    let port = free_port();
    let proxy = Proxy::start(&gateway_config_yaml(
        port,
        &stdio_target("gamma", &mark, "PER_SESSION"),
        // Long enough that starting the second session's process on a loaded machine
        // does not expire the first one meanwhile.
        "    sessions: { idleTimeout: 6s }\n",
    ));
    let (a, b) = (initialize(port).await, initialize(port).await);
    let (pid_a, pid_b) = (
        call_text(port, &a, "pid").await,
        call_text(port, &b, "pid").await,
    );
    assert_ne!(pid_a, pid_b, "one process per session");
    assert_eq!(processes_marked(&mark).len(), 2);
    assert_eq!(
        call_text(port, &a, "pid").await,
        pid_a,
        "a session keeps its process"
    );

    assert_eq!(delete(port, &a).await, 200);
    assert!(
        eventually(Duration::from_secs(5), || processes_marked(&mark).len()
            == 1),
        "{:?}",
        processes_marked(&mark)
    );
    // No more requests: the idle session expires, and its process with it.
    assert!(
        eventually(Duration::from_secs(30), || processes_marked(&mark)
            .is_empty()),
        "{:?}\n{}",
        processes_marked(&mark),
        proxy.logs()
    );
    // An expired session is refused; a new one gets a new process.
    assert_eq!(
        post(port, &call("pid"), &[("mcp-session-id", &b)])
            .await
            .status,
        404
    );
    let c = initialize(port).await;
    assert_eq!(call_text(port, &c, "whoami").await, "gamma");
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_stdio_process_serves_every_session_and_is_restarted_when_it_dies() {
    let mark = unique_mark("shared");
    let port = free_port();
    let _proxy = Proxy::start(&gateway_config_yaml(
        port,
        &stdio_target("gamma", &mark, "SHARED"),
        "",
    ));
    let (a, b) = (initialize(port).await, initialize(port).await);
    let pid = call_text(port, &a, "pid").await;
    assert_eq!(call_text(port, &b, "pid").await, pid);
    assert_eq!(processes_marked(&mark).len(), 1);

    std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || processes_marked(
        &mark
    )
    .is_empty()));
    let again = call_text(port, &a, "pid").await;
    assert_ne!(again, pid, "a new process");
    assert_eq!(call_text(port, &b, "pid").await, again);
    // Ending a session leaves the shared process running.
    assert_eq!(delete(port, &a).await, 200);
    assert_eq!(call_text(port, &b, "whoami").await, "gamma");
    assert_eq!(processes_marked(&mark).len(), 1);
}

#[test]
fn python_2x_client_discovers_lists_and_calls_through_held_sessions() {
    let (alpha, beta) = (FastMcp::start("alpha"), FastMcp::start("beta"));
    let mark = unique_mark("modern");
    let port = free_port();
    let targets = http_target("alpha", &alpha.url())
        + &http_target("beta", &beta.url())
        + &stdio_target("gamma", &mark, "PER_SESSION");
    let proxy = Proxy::start(&gateway_config_yaml(port, &targets, ""));
    let url = format!("http://127.0.0.1:{port}/mcp");

    let out = or_logs(client_v2(&url, "tour", &[]), &proxy);
    // The 2026-07-28 style end to end: discover, never initialize.
    assert_eq!(out["protocolVersion"], "2026-07-28", "{out}");
    assert_eq!(
        (&out["discovered"], &out["initialized"]),
        (&json!(true), &json!(false))
    );
    assert_eq!(out["serverName"], "tools");
    let instructions = out["instructions"].as_str().unwrap();
    assert!(
        instructions.contains("[gamma] gamma offers"),
        "{instructions}"
    );
    for cap in ["prompts", "resources", "tools"] {
        assert!(
            strings(&out["capabilities"]).contains(&cap.to_string()),
            "{out}"
        );
    }
    assert_eq!(strings(&out["tools"]).len(), 12, "{out}");
    for t in ["alpha", "beta", "gamma"] {
        assert_eq!(
            out["calls"][format!("{t}_echo")],
            json!({ "text": [format!("{t}: hi")], "isError": false })
        );
    }
    assert!(
        out["unknownTool"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown tool"),
        "{out}"
    );
    assert_eq!(
        out["promptTexts"]["beta_greet"],
        json!(["Hello Ada, from beta."])
    );
    assert_eq!(
        out["reads"]["agentmesh://gamma/notes%3A%2F%2Fgamma%2Freadme"],
        json!(["readme of gamma"])
    );
    // The gateway initialized each target once for this caller and reuses the sessions.
    let inits = |t: &str| {
        proxy.metric(
            "agentmesh_mcp_requests_total",
            &[("method", "initialize"), ("target", t), ("outcome", "ok")],
        )
    };
    assert_eq!((inits("alpha"), inits("gamma")), (1.0, 1.0));
    let again = client_v2(&url, "call", &["gamma_whoami", "{}"]).unwrap();
    assert_eq!(again["text"], json!(["gamma"]));
    assert_eq!(inits("gamma"), 1.0, "same caller, same held session");
    assert_eq!(processes_marked(&mark).len(), 1);

    // The 1.x client still works on the same endpoint.
    let out = client_v1(&url, "call", &["alpha_echo", r#"{"text":"old"}"#]).unwrap();
    assert_eq!(out["text"], json!(["alpha: old"]));
}

/// A 2026-07-28 request: `_meta` envelope, routing headers (overridable).
async fn modern(port: u16, method: &str, params: Value, headers: &[(&str, &str)]) -> Got {
    let mut params = params;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": { "name": "raw", "version": "0" },
    });
    let body = json!({ "jsonrpc": "2.0", "id": 5, "method": method, "params": params });
    let mut all = vec![
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", method),
    ];
    for (k, v) in headers {
        all.retain(|(x, _)| x != k);
        all.push((k, v));
    }
    post(port, &body.to_string(), &all).await
}

#[tokio::test(flavor = "multi_thread")]
async fn modern_requests_check_headers_and_versions_as_the_spec_says() {
    let alpha = FastMcp::start("alpha");
    let port = free_port();
    let proxy = Proxy::start(&gateway_config(
        port,
        &[("alpha", alpha.url())],
        "    prefixMode: ALWAYS\n",
    ));
    let code = |g: &Got| g.json()["error"]["code"].as_i64().unwrap_or(0);

    let got = modern(port, "server/discover", json!({}), &[]).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let r = &got.json()["result"];
    assert!(strings(&r["supportedVersions"]).contains(&"2026-07-28".to_string()));
    assert_eq!(r["resultType"], "complete");
    assert!(got.header("mcp-session-id").is_none(), "no session");

    let call = json!({ "name": "alpha_whoami", "arguments": {} });
    let got = modern(
        port,
        "tools/call",
        call.clone(),
        &[("mcp-name", "alpha_whoami")],
    )
    .await;
    assert_eq!(
        got.json()["result"]["content"][0]["text"],
        "alpha",
        "{}",
        got.body
    );
    assert_eq!(got.json()["result"]["resultType"], "complete");

    let got = modern(
        port,
        "tools/call",
        call.clone(),
        &[("mcp-name", "alpha_echo")],
    )
    .await;
    assert_eq!((got.status, code(&got)), (400, -32020), "{}", got.body);
    let got = modern(
        port,
        "tools/call",
        call.clone(),
        &[("mcp-method", "tools/list")],
    )
    .await;
    assert_eq!((got.status, code(&got)), (400, -32020), "{}", got.body);

    // A version nobody supports: the error lists those the gateway speaks.
    let mut body = json!({ "jsonrpc": "2.0", "id": 6, "method": "server/discover", "params": {
        "_meta": { "io.modelcontextprotocol/protocolVersion": "2099-01-01",
                   "io.modelcontextprotocol/clientCapabilities": {} } } });
    let got = post(
        port,
        &body.to_string(),
        &[
            ("mcp-protocol-version", "2099-01-01"),
            ("mcp-method", "server/discover"),
        ],
    )
    .await;
    assert_eq!((got.status, code(&got)), (400, -32022), "{}", got.body);
    let supported = strings(&got.json()["error"]["data"]["supported"]);
    assert!(
        supported.contains(&"2026-07-28".to_string())
            && supported.contains(&"2025-06-18".to_string())
    );
    // No envelope: invalid params.
    body["params"] = json!({});
    let got = post(
        port,
        &body.to_string(),
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "server/discover"),
        ],
    )
    .await;
    assert_eq!((got.status, code(&got)), (400, -32602), "{}", got.body);
    let got = modern(port, "tools/destroy", json!({}), &[]).await;
    assert_eq!((got.status, code(&got)), (404, -32601), "{}", got.body);
    assert!(proxy.try_exited().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_origins_other_than_loopback_or_allowed_are_refused() {
    let alpha = FastMcp::start("alpha");
    let port = free_port();
    let proxy = Proxy::start(&gateway_config(
        port,
        &[("alpha", alpha.url())],
        "    allowedOrigins: [\"https://app.example.com\"]\n",
    ));
    // A page whose name was re-pointed at the gateway (DNS rebinding): refused.
    let evil = [
        ("host", "evil.example.com"),
        ("origin", "http://evil.example.com"),
    ];
    let got = post(port, INIT, &evil).await;
    assert_eq!(got.status, 403, "{}", got.body);
    assert!(proxy.logs().contains("origin that is not allowed"));
    // Loopback origins, a listed origin, and clients without Origin (SDKs, agents) pass.
    for origin in [
        Some(format!("http://localhost:{port}")),
        Some("http://127.0.0.1:8080".to_string()),
        Some("https://app.example.com".to_string()),
        None,
    ] {
        let headers: Vec<(&str, &str)> = origin.iter().map(|o| ("origin", o.as_str())).collect();
        let got = post(port, INIT, &headers).await;
        assert_eq!(got.status, 200, "origin {origin:?}: {}", got.body);
    }
}
