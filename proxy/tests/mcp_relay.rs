//! Messages outside the request/response pair, through the MCP gateway with real peers:
//! a Python SDK 1.x FastMCP server (e2e/mcp/relay_server.py) whose tools report
//! progress, log, elicit, sample, wait to be cancelled and change their tool list, and
//! the SDK 1.x client (session style) with callbacks for each. Each behaviour is proved
//! twice: with the server over streamable HTTP, and with the same server run by the
//! gateway as a stdio target (a process per client session).
#![allow(clippy::unwrap_used, missing_docs)]

mod mcp_peers;
mod support;

use mcp_peers::{
    FastMcp, client_v1, gateway_config, gateway_config_yaml, http_target, relay_stdio_target,
};
use serde_json::{Value, json};
use support::{Proxy, free_port};

/// Two relay servers behind the gateway (prefixed names), and the gateway's URL.
fn gateway() -> (FastMcp, FastMcp, Proxy, String) {
    let (alpha, beta) = (FastMcp::start_relay("alpha"), FastMcp::start_relay("beta"));
    let port = free_port();
    let targets = [("alpha", alpha.url()), ("beta", beta.url())];
    let proxy = Proxy::start(&gateway_config(port, &targets, ""));
    (alpha, beta, proxy, format!("http://127.0.0.1:{port}/mcp"))
}

fn run(proxy: &Proxy, url: &str, scenario: &str, args: &[&str]) -> Value {
    client_v1(url, scenario, args).unwrap_or_else(|e| panic!("{e}\nproxy log:\n{}", proxy.logs()))
}

#[test]
fn progress_and_log_messages_reach_the_calling_client_before_the_result() {
    let (_alpha, _beta, proxy, url) = gateway();

    let out = run(&proxy, &url, "progress", &["beta_count", r#"{"n": 3}"#]);

    assert_eq!(out["text"], json!(["beta counted to 3"]), "{out}");
    assert_eq!(
        out["progress"],
        json!([
            { "progress": 1.0, "total": 3.0, "message": "step 1" },
            { "progress": 2.0, "total": 3.0, "message": "step 2" },
            { "progress": 3.0, "total": 3.0, "message": "step 3" },
        ]),
        "the client's own progress token came back: {out}"
    );
    assert_eq!(
        out["logs"],
        json!(["beta step 1", "beta step 2", "beta step 3"])
    );
}

/// An HTTP relay server and the same server as a per-session stdio target `local`
/// behind the gateway, and the gateway's URL.
fn gateway_with_stdio() -> (FastMcp, Proxy, String) {
    let alpha = FastMcp::start_relay("alpha");
    let port = free_port();
    let targets = format!(
        "{}{}",
        http_target("alpha", &alpha.url()),
        relay_stdio_target("local")
    );
    let proxy = Proxy::start(&gateway_config_yaml(port, &targets, ""));
    (alpha, proxy, format!("http://127.0.0.1:{port}/mcp"))
}

#[test]
fn progress_and_log_messages_of_a_stdio_target_reach_the_calling_client() {
    let (_alpha, proxy, url) = gateway_with_stdio();

    let out = run(&proxy, &url, "progress", &["local_count", r#"{"n": 2}"#]);

    assert_eq!(out["text"], json!(["local counted to 2"]), "{out}");
    assert_eq!(
        out["progress"],
        json!([
            { "progress": 1.0, "total": 2.0, "message": "step 1" },
            { "progress": 2.0, "total": 2.0, "message": "step 2" },
        ]),
        "the client's own progress token came back: {out}"
    );
    assert_eq!(
        out["logs"],
        json!(["local step 1", "local step 2"]),
        "{out}"
    );
}

#[test]
fn elicitation_and_sampling_round_trip_to_a_stdio_target() {
    let (_alpha, proxy, url) = gateway_with_stdio();

    let out = run(&proxy, &url, "answer", &["local_favourite"]);
    assert_eq!(out["text"], json!(["local: teal"]), "{out}");
    assert_eq!(out["requests"][0]["method"], "elicitation/create");
    assert_eq!(
        out["requests"][0]["message"],
        "local asks: your favourite colour?"
    );

    let out = run(&proxy, &url, "answer", &["local_compose"]);
    assert_eq!(
        out["text"],
        json!(["local got: sampled: a line on tides"]),
        "{out}"
    );
    assert_eq!(out["requests"][0]["method"], "sampling/createMessage");
}

#[test]
fn cancellation_reaches_the_stdio_process_running_the_request() {
    let (_alpha, proxy, url) = gateway_with_stdio();

    let out = run(
        &proxy,
        &url,
        "cancel",
        &["local_linger", "local_cancellations"],
    );

    assert_eq!(
        out["counter"],
        json!(["1"]),
        "{out}\nproxy log:\n{}",
        proxy.logs()
    );
}

#[test]
fn list_changed_notifications_of_a_stdio_target_reach_the_client() {
    let (_alpha, proxy, url) = gateway_with_stdio();

    let out = run(&proxy, &url, "list-changed", &["local_grow"]);

    assert_eq!(out["text"], json!(["grown"]), "{out}");
    let tools = out["tools"].as_array().unwrap();
    assert!(tools.contains(&json!("local_extra")), "{out}");
    assert!(!tools.contains(&json!("alpha_extra")), "{out}");
    assert!(
        out["notifications"]
            .as_array()
            .unwrap()
            .contains(&json!("notifications/tools/list_changed")),
        "{out}"
    );
}

#[test]
fn elicitation_and_sampling_round_trip_to_the_asking_target() {
    let (_alpha, _beta, proxy, url) = gateway();

    let out = run(&proxy, &url, "answer", &["alpha_favourite"]);
    assert_eq!(out["text"], json!(["alpha: teal"]), "{out}");
    assert_eq!(out["requests"][0]["method"], "elicitation/create");
    assert_eq!(
        out["requests"][0]["message"],
        "alpha asks: your favourite colour?"
    );

    let out = run(&proxy, &url, "answer", &["beta_compose"]);
    assert_eq!(
        out["text"],
        json!(["beta got: sampled: a line on tides"]),
        "{out}"
    );
    assert_eq!(out["requests"][0]["method"], "sampling/createMessage");
}

#[test]
fn cancellation_reaches_the_target_running_the_request() {
    let (_alpha, _beta, proxy, url) = gateway();

    let out = run(
        &proxy,
        &url,
        "cancel",
        &["beta_linger", "beta_cancellations"],
    );

    assert_eq!(
        out["counter"],
        json!(["1"]),
        "{out}\nproxy log:\n{}",
        proxy.logs()
    );
}

#[test]
fn list_changed_notifications_arrive_on_the_get_stream() {
    let (_alpha, _beta, proxy, url) = gateway();

    let out = run(&proxy, &url, "list-changed", &["alpha_grow"]);

    assert_eq!(out["text"], json!(["grown"]), "{out}");
    let tools = out["tools"].as_array().unwrap();
    assert!(tools.contains(&json!("alpha_extra")), "{out}");
    assert!(!tools.contains(&json!("beta_extra")), "{out}");
    assert!(
        out["notifications"]
            .as_array()
            .unwrap()
            .contains(&json!("notifications/tools/list_changed")),
        "{out}"
    );
}
