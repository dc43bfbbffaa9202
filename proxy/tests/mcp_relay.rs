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
    FastMcp, assert_counted, client_v1, gateway_config, gateway_config_yaml, http_target, or_logs,
    relay_stdio_target,
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
    or_logs(client_v1(url, scenario, args), proxy)
}

/// Elicitation asked by `elicits`'s `favourite` tool and sampling asked by `samples`'s
/// `compose` tool reach the client, and its answers reach the asking target.
fn assert_elicitation_and_sampling_round_trip(
    proxy: &Proxy,
    url: &str,
    elicits: &str,
    samples: &str,
) {
    let out = run(proxy, url, "answer", &[&format!("{elicits}_favourite")]);
    assert_eq!(out["text"], json!([format!("{elicits}: teal")]), "{out}");
    assert_eq!(out["requests"][0]["method"], "elicitation/create");
    assert_eq!(
        out["requests"][0]["message"],
        format!("{elicits} asks: your favourite colour?")
    );

    let out = run(proxy, url, "answer", &[&format!("{samples}_compose")]);
    assert_eq!(
        out["text"],
        json!([format!("{samples} got: sampled: a line on tides")]),
        "{out}"
    );
    assert_eq!(out["requests"][0]["method"], "sampling/createMessage");
}

/// A client cancelling its call to `target`'s `linger` tool stops it there: the
/// target's cancellation counter reads 1.
fn assert_cancellation_reaches(proxy: &Proxy, url: &str, target: &str) {
    let (linger, counter) = (
        format!("{target}_linger"),
        format!("{target}_cancellations"),
    );
    let out = run(proxy, url, "cancel", &[&linger, &counter]);

    assert_eq!(
        out["counter"],
        json!(["1"]),
        "{out}\nproxy log:\n{}",
        proxy.logs()
    );
}

/// `target`'s `grow` tool adds `<target>_extra` (and no tool of `other`), and the client
/// hears of it as `notifications/tools/list_changed`.
fn assert_list_changed_reaches_the_client(proxy: &Proxy, url: &str, target: &str, other: &str) {
    let out = run(proxy, url, "list-changed", &[&format!("{target}_grow")]);

    assert_eq!(out["text"], json!(["grown"]), "{out}");
    let tools = out["tools"].as_array().unwrap();
    assert!(tools.contains(&json!(format!("{target}_extra"))), "{out}");
    assert!(!tools.contains(&json!(format!("{other}_extra"))), "{out}");
    assert!(
        out["notifications"]
            .as_array()
            .unwrap()
            .contains(&json!("notifications/tools/list_changed")),
        "{out}"
    );
}

#[test]
fn progress_and_log_messages_reach_the_calling_client_before_the_result() {
    let (_alpha, _beta, proxy, url) = gateway();

    let out = run(&proxy, &url, "progress", &["beta_count", r#"{"n": 3}"#]);

    assert_counted(&out, "beta", 3);
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

    assert_counted(&out, "local", 2);
}

#[test]
fn elicitation_and_sampling_round_trip_to_a_stdio_target() {
    let (_alpha, proxy, url) = gateway_with_stdio();

    assert_elicitation_and_sampling_round_trip(&proxy, &url, "local", "local");
}

#[test]
fn cancellation_reaches_the_stdio_process_running_the_request() {
    let (_alpha, proxy, url) = gateway_with_stdio();

    assert_cancellation_reaches(&proxy, &url, "local");
}

#[test]
fn list_changed_notifications_of_a_stdio_target_reach_the_client() {
    let (_alpha, proxy, url) = gateway_with_stdio();

    assert_list_changed_reaches_the_client(&proxy, &url, "local", "alpha");
}

#[test]
fn elicitation_and_sampling_round_trip_to_the_asking_target() {
    let (_alpha, _beta, proxy, url) = gateway();

    assert_elicitation_and_sampling_round_trip(&proxy, &url, "alpha", "beta");
}

#[test]
fn cancellation_reaches_the_target_running_the_request() {
    let (_alpha, _beta, proxy, url) = gateway();

    assert_cancellation_reaches(&proxy, &url, "beta");
}

#[test]
fn list_changed_notifications_arrive_on_the_get_stream() {
    let (_alpha, _beta, proxy, url) = gateway();

    assert_list_changed_reaches_the_client(&proxy, &url, "alpha", "beta");
}
