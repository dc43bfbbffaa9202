//! Pagination across federated targets, with real peers: three Python SDK 1.x FastMCP
//! servers that answer their lists in pages of different sizes
//! (e2e/mcp/paged_server.py, the SDK's paginated list handlers), federated behind the
//! gateway, and the SDK's own clients (1.x session style and 2.x 2026-07-28 style,
//! e2e/mcp/pages_client.py) following `nextCursor` through the merged lists.
//!
//! What a client must observe: every item of every target exactly once, each target's
//! items in that target's order, and no more pages than the longest target needs (the
//! composite cursor resumes each target where it stopped instead of starting over or
//! dropping the rest).
#![allow(clippy::unwrap_used, missing_docs)]

mod mcp_peers;
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use mcp_peers::{gateway_config, python, python2};
use serde_json::Value;
use support::process::ServerProcess;
use support::{Proxy, free_port};

/// (target name, items it offers, its page size): 3, 2 and 1 pages.
const TARGETS: [(&str, usize, usize); 3] = [("alpha", 7, 3), ("beta", 4, 2), ("gamma", 2, 10)];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../e2e/mcp")
        .join(name)
}

/// Starts e2e/mcp/paged_server.py: `count` items, `page_size` per list page.
fn paged_server(name: &str, count: usize, page_size: usize) -> ServerProcess {
    let port = free_port();
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", "300"])
        .arg(python())
        .arg(fixture("paged_server.py"))
        .args([
            name,
            &port.to_string(),
            &count.to_string(),
            &page_size.to_string(),
        ]);
    ServerProcess::start(name, port, cmd)
}

/// Runs e2e/mcp/pages_client.py with `python` (1.x or 2.x venv) against `url`.
fn pages_client(python: PathBuf, url: &str) -> Result<Value, String> {
    let out = Command::new("timeout")
        .args(["-k", "5", "90"])
        .arg(python)
        .arg(fixture("pages_client.py"))
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("timeout (coreutils) and python must be available");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "client exited with {}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_str(stdout.trim())
        .map_err(|e| format!("client printed no JSON ({e}):\n{stdout}"))
}

/// The pages of one list as the client saw them.
fn pages(out: &Value, list: &str) -> Vec<Vec<String>> {
    out[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {out}"))
        .iter()
        .map(|p| {
            p.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

/// What a client sees of item `i` of `target` in `list`, through the gateway.
fn exposed(list: &str, target: &str, i: usize) -> String {
    match list {
        // notes://<target>/itemNN, percent-encoded under the target's agentmesh:// prefix.
        "resources" => format!("agentmesh://{target}/notes%3A%2F%2F{target}%2Fitem{i:02}"),
        _ => format!("{target}_item{i:02}"),
    }
}

/// Checks one merged list: each target's items exactly once and in its order, within
/// as many pages as the longest target has.
fn assert_complete(out: &Value, list: &str) {
    let pages = pages(out, list);
    let longest = TARGETS
        .iter()
        .map(|(_, n, size)| n.div_ceil(*size))
        .max()
        .unwrap();
    assert_eq!(
        pages.len(),
        longest,
        "{list}: expected {longest} pages (the longest target's), got {pages:?}"
    );
    let all: Vec<&String> = pages.iter().flatten().collect();
    let mut per_target: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for item in &all {
        let target = TARGETS
            .iter()
            .map(|(t, _, _)| *t)
            .find(|t| {
                item.starts_with(&format!("{t}_")) || item.starts_with(&format!("agentmesh://{t}/"))
            })
            .unwrap_or_else(|| panic!("{list}: item {item} of no target in {pages:?}"));
        per_target.entry(target).or_default().push(item);
    }
    for (target, count, _) in TARGETS {
        let want: Vec<String> = (0..count).map(|i| exposed(list, target, i)).collect();
        let got: Vec<&String> = per_target.remove(target).unwrap_or_default();
        assert_eq!(
            got.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            want,
            "{list}: {target}'s items, in the order the client saw them (pages {pages:?})"
        );
    }
    // Every item belonged to a target above, so this counts duplicates across targets too.
    assert_eq!(all.len(), TARGETS.iter().map(|(_, n, _)| n).sum::<usize>());
}

/// Three paginating targets behind a gateway, and what `python` (a venv's interpreter)
/// running pages_client.py observed through it.
fn walk_through_gateway(python: PathBuf) -> Value {
    let servers: Vec<ServerProcess> = TARGETS
        .iter()
        .map(|(name, count, size)| paged_server(name, *count, *size))
        .collect();
    let port = free_port();
    let targets: Vec<(&str, String)> = servers.iter().map(|s| (s.name.as_str(), s.url())).collect();
    let proxy = Proxy::start(&gateway_config(port, &targets, ""));
    let url = format!("http://127.0.0.1:{port}/mcp");
    pages_client(python, &url).unwrap_or_else(|e| {
        let logs: String = servers
            .iter()
            .map(|s| format!("{}:\n{}\n", s.name, s.logs()))
            .collect();
        panic!("{e}\nproxy log:\n{}\n{logs}", proxy.logs())
    })
}

fn assert_walk(out: &Value) {
    for list in ["tools", "prompts", "resources"] {
        assert_complete(out, list);
    }
    // The first and the last tool listed still route to their owners.
    let calls = out["calls"].as_object().unwrap();
    assert_eq!(
        calls["alpha_item00"],
        serde_json::json!(["alpha item 0"]),
        "{out}"
    );
    let last = pages(out, "tools").concat().pop().unwrap();
    let (target, item) = last.split_once("_item").unwrap();
    let n: usize = item.parse().unwrap();
    assert_eq!(
        calls[&last],
        serde_json::json!([format!("{target} item {n}")]),
        "{out}"
    );
}

#[test]
fn sdk_1x_client_follows_merged_cursors_to_every_item_of_three_paginating_targets() {
    let out = walk_through_gateway(python());
    assert_eq!(out["sdk"], "1.x");
    assert_walk(&out);
}

#[test]
fn sdk_2x_client_follows_merged_cursors_to_every_item_of_three_paginating_targets() {
    let out = walk_through_gateway(python2());
    assert_eq!(out["sdk"], "2.x");
    assert_walk(&out);
}
