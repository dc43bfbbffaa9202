//! The MCP gateway with the TypeScript side of the ecosystem: the TypeScript SDK's client
//! and server (e2e/mcp/ts), `@modelcontextprotocol/server-everything` as a target, and
//! the MCP Inspector CLI as a client, all through the real proxy binary. Python FastMCP
//! servers join in so a federation mixes SDKs.
#![allow(clippy::unwrap_used, missing_docs)]

mod mcp_peers;
mod node_peers;
mod support;

use mcp_peers::{FastMcp, call_ok, gateway_config, or_logs, strings};
use node_peers::{NodeServer, inspector, ts_client};
use serde_json::{Value, json};
use support::{Proxy, free_port};

/// A gateway on a free port federating `targets`; returns it and its MCP URL.
fn gateway(targets: &[(&str, String)]) -> (Proxy, String) {
    let port = free_port();
    let proxy = Proxy::start(&gateway_config(port, targets, ""));
    (proxy, format!("http://127.0.0.1:{port}/mcp"))
}

#[test]
fn ts_client_federates_a_ts_server_and_a_fastmcp_server() {
    let ts = NodeServer::ts_server("ts");
    let py = FastMcp::start("py");
    let (proxy, url) = gateway(&[("ts", ts.url()), ("py", py.url())]);

    let out = ts_client(&url, "tour", &[]).unwrap_or_else(|e| {
        panic!(
            "{e}\nproxy log:\n{}\nts server:\n{}",
            proxy.logs(),
            ts.logs()
        )
    });

    assert_eq!(out["serverName"], "tools");
    assert_eq!(out["protocolVersion"], "2025-11-25");
    assert!(out["sessionId"].is_string(), "{out}");
    let instructions = out["instructions"].as_str().unwrap();
    assert!(
        instructions.contains("[ts] ts (TypeScript) offers")
            && instructions.contains("[py] py offers"),
        "{instructions}"
    );
    assert_eq!(
        strings(&out["tools"]),
        [
            "py_add",
            "py_echo",
            "py_pid",
            "py_whoami",
            "ts_add",
            "ts_echo"
        ]
    );
    assert_eq!(out["calls"]["ts_echo"], call_ok("ts: hi"));
    assert_eq!(out["calls"]["py_echo"], call_ok("py: hi"));
    assert_eq!(strings(&out["prompts"]), ["py_greet", "ts_greet"]);
    assert_eq!(
        out["promptTexts"]["ts_greet"],
        json!(["Hello Ada, from ts."])
    );
    assert_eq!(
        out["promptTexts"]["py_greet"],
        json!(["Hello Ada, from py."])
    );
    let ts_readme = "agentmesh://ts/notes%3A%2F%2Fts%2Freadme";
    assert!(
        strings(&out["resources"]).contains(&ts_readme.to_string()),
        "{out}"
    );
    assert_eq!(
        out["reads"][ts_readme],
        json!([{ "uri": ts_readme, "text": "readme of ts" }])
    );
    // A call on each target by name, in a session of its own.
    let add = ts_client(&url, "call", &["ts_add", r#"{"a": 20, "b": 22}"#]).unwrap();
    assert_eq!(add, call_ok("42"));
}

#[test]
fn server_everything_behind_the_gateway_lists_calls_reads_and_prompts() {
    let everything = NodeServer::everything();
    let py = FastMcp::start("py");
    let (proxy, url) = gateway(&[("everything", everything.url()), ("py", py.url())]);
    let fail = |e: String| -> Value {
        panic!(
            "{e}\nproxy log:\n{}\nserver-everything:\n{}",
            proxy.logs(),
            everything.logs()
        )
    };

    let listed = ts_client(&url, "list", &[]).unwrap_or_else(fail);
    let tools = strings(&listed["tools"]);
    for t in ["everything_echo", "everything_get-sum", "py_echo"] {
        assert!(tools.contains(&t.to_string()), "{t} not in {tools:?}");
    }
    let prompts = strings(&listed["prompts"]);
    assert!(
        prompts.contains(&"everything_simple-prompt".to_string()),
        "{prompts:?}"
    );
    let architecture =
        "agentmesh://everything/demo%3A%2F%2Fresource%2Fstatic%2Fdocument%2Farchitecture.md";
    assert!(
        strings(&listed["resources"]).contains(&architecture.to_string()),
        "{listed}"
    );

    let echo =
        ts_client(&url, "call", &["everything_echo", r#"{"message": "hi"}"#]).unwrap_or_else(fail);
    assert_eq!(echo, call_ok("Echo: hi"));
    let sum = ts_client(&url, "call", &["everything_get-sum", r#"{"a": 2, "b": 3}"#])
        .unwrap_or_else(fail);
    assert!(
        sum["text"][0].as_str().unwrap().contains('5') && sum["isError"] == false,
        "{sum}"
    );

    let read = ts_client(&url, "read", &[architecture]).unwrap_or_else(fail);
    let content = &read["contents"][0];
    assert_eq!(
        content["uri"], architecture,
        "the URI comes back rewritten: {read}"
    );
    assert_eq!(content["mimeType"], "text/markdown");
    assert!(
        content["text"].as_str().unwrap().contains("Architecture"),
        "{read}"
    );

    let simple = ts_client(&url, "prompt", &["everything_simple-prompt"]).unwrap_or_else(fail);
    assert_eq!(
        simple,
        json!({ "messages": [{ "role": "user", "text": "This is a simple prompt without arguments." }] })
    );
    let args = ts_client(
        &url,
        "prompt",
        &["everything_args-prompt", r#"{"city": "Paris"}"#],
    )
    .unwrap_or_else(fail);
    assert_eq!(args["messages"][0]["text"], "What's weather in Paris?");
}

#[test]
fn inspector_cli_lists_and_calls_tools_through_the_gateway() {
    let ts = NodeServer::ts_server("ts");
    let py = FastMcp::start("py");
    let (proxy, url) = gateway(&[("ts", ts.url()), ("py", py.url())]);
    let fail = |e: String| -> Value { panic!("{e}\nproxy log:\n{}", proxy.logs()) };

    let listed = inspector(&url, &["--method", "tools/list"]).unwrap_or_else(fail);
    let mut names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "py_add",
            "py_echo",
            "py_pid",
            "py_whoami",
            "ts_add",
            "ts_echo"
        ]
    );
    let ts_echo = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ts_echo")
        .unwrap();
    assert_eq!(
        ts_echo["inputSchema"]["required"],
        json!(["text"]),
        "{ts_echo}"
    );

    let args = [
        "--method",
        "tools/call",
        "--tool-name",
        "ts_echo",
        "--tool-arg",
        "text=hello",
    ];
    let called = inspector(&url, &args).unwrap_or_else(fail);
    assert_eq!(
        called["content"],
        json!([{ "type": "text", "text": "ts: hello" }])
    );
    // The Inspector turns `a=2` into a number because the tool's schema says integer.
    let args = [
        "--method",
        "tools/call",
        "--tool-name",
        "py_add",
        "--tool-arg",
        "a=2",
        "--tool-arg",
        "b=40",
    ];
    let called = inspector(&url, &args).unwrap_or_else(fail);
    assert_eq!(called["content"], json!([{ "type": "text", "text": "42" }]));
    assert_eq!(called["isError"], false);
}

#[test]
fn server_everything_over_stdio_relays_progress_sampling_elicitation_and_roots() {
    let py = FastMcp::start("py");
    let port = free_port();
    let targets = format!(
        "{}{}",
        mcp_peers::http_target("py", &py.url()),
        node_peers::everything_stdio_target("everything")
    );
    let proxy = Proxy::start(&mcp_peers::gateway_config_yaml(port, &targets, ""));
    let url = format!("http://127.0.0.1:{port}/mcp");
    let relay = |tool: &str, args: &str| {
        or_logs(node_peers::ts_client(&url, "relay", &[tool, args]), &proxy)
    };

    let out = relay(
        "everything_trigger-long-running-operation",
        r#"{"duration": 1, "steps": 2}"#,
    );
    assert_eq!(out["isError"], false, "{out}");
    assert_eq!(out["progress"], json!([1, 2]), "{out}");

    let out = relay(
        "everything_trigger-sampling-request",
        r#"{"prompt": "tides"}"#,
    );
    assert_eq!(
        out["requests"][0]["method"], "sampling/createMessage",
        "{out}"
    );
    let text = strings(&out["text"]).join("\n");
    assert!(
        text.contains("sampled: Resource trigger-sampling-request context: tides"),
        "{out}"
    );

    let out = relay("everything_trigger-elicitation-request", "{}");
    assert_eq!(out["requests"][0]["method"], "elicitation/create", "{out}");
    let text = strings(&out["text"]).join("\n");
    assert!(
        text.contains("User provided the requested information") && text.contains("Ada"),
        "{out}"
    );

    let out = relay("everything_get-roots-list", "{}");
    assert!(
        out["requests"]
            .as_array()
            .unwrap()
            .contains(&json!({ "method": "roots/list", "text": null })),
        "{out}"
    );
    let text = strings(&out["text"]).join("\n");
    assert!(text.contains("file:///work/agentmesh"), "{out}");
}

#[test]
fn server_everything_over_stdio_reaches_the_client_between_requests_on_its_get_stream() {
    let port = free_port();
    let targets = node_peers::everything_stdio_target("everything");
    let proxy = Proxy::start(&mcp_peers::gateway_config_yaml(port, &targets, ""));
    let url = format!("http://127.0.0.1:{port}/mcp");

    // The tool starts sending a log message every 5 s, outside any request (and the
    // server logs when it gets the client's roots, which it asks outside requests too):
    // once the call is answered, only the client's GET stream can carry them.
    let out = or_logs(
        node_peers::ts_client(&url, "relay-then-wait", &["toggle-simulated-logging", "{}"]),
        &proxy,
    );

    assert_eq!(out["isError"], false, "{out}");
    let after = strings(&out["logsAfter"]);
    assert!(
        !after.is_empty(),
        "a log message after the answer, on the GET stream: {out}\nproxy log:\n{}",
        proxy.logs()
    );
}
