//! A sidecar configured by the control plane: `agentmesh-proxy --mode sidecar --xds`
//! takes its capture settings, outbound default, egress rules and routes from
//! `agentmesh-controller` (folder mode, in its own pod, token-authenticated) over delta
//! xDS, with real iptables capturing an unmodified `curl` in the agent pod.
//!
//! What it proves: until the first config arrives, captured traffic is refused (fail
//! closed); then the controller's routes and outbound default govern it; a change to the
//! folder reaches the running sidecar without a restart.
//!
//! Needs root, iproute2, iptables, curl and `/usr/bin/python3`; fails (never skips)
//! naming what is missing (`scripts/install-test-deps.sh` installs all of it).
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::time::Duration;

use agentmesh_e2e::sidecar::{self, APP_UID, Scratch, Sidecar, XDS_PORT, exec_as, metric, text};
use agentmesh_e2e::{Cluster, Pod, wait_for};

fn ok<T>(result: agentmesh_e2e::Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// `curl -i` as the app's UID in `pod`; the whole response (or curl's error).
fn curl(pod: &Pod, url: &str) -> String {
    text(&exec_as(
        pod,
        APP_UID,
        &["curl", "-sS", "-i", "--max-time", "10", url],
    ))
}

fn status_line(resp: &str) -> &str {
    resp.lines().next().unwrap_or("").trim_end()
}

/// The agent pod's sidecar config as the controller serves it: calls to `api:8080` get a
/// header naming `version`; anything else follows `default`.
fn pod_config(version: &str, default: &str) -> String {
    format!(
        "binds:
- name: egress-8080
  address: 0.0.0.0
  port: 8080
  listeners:
  - name: api
    hostnames: [api]
    routes:
    - name: all
      policies:
        requestHeaders: {{ set: [{{ name: x-agentmesh-config, value: {version} }}] }}
sidecar:
  outboundBinds: [egress-8080]
  outboundDefault: {default}
"
    )
}

/// Writes `text` as `dir/name` atomically (write, then rename), readable by every UID.
fn write_atomically(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    ok(sidecar::write_readable(&tmp, text));
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[test]
fn a_sidecar_takes_its_capture_config_from_the_controller_over_xds() {
    ok(agentmesh_e2e::require_root());
    ok(sidecar::require_tools(&[
        "ip",
        "iptables",
        "ip6tables",
        "setpriv",
        "timeout",
        "curl",
        "/usr/bin/python3",
    ]));
    let scratch = ok(Scratch::new());
    let folder = ok(scratch.readable_dir("resources"));
    let token = scratch.path("xds-token");
    ok(sidecar::write_readable(&token, "e2e-sidecar-token\n"));

    let mut cluster = ok(Cluster::new("sxds"));
    for name in ["agent", "cp", "api", "other"] {
        ok(cluster.add_pod(name));
    }
    let agent = cluster.pod("agent");
    let _api = ok(sidecar::start_upstreams(
        cluster.pod("api"),
        &["http:8080"],
        &scratch,
    ));
    let _other = ok(sidecar::start_upstreams(
        cluster.pod("other"),
        &["http:8080"],
        &scratch,
    ));
    ok(sidecar::init(agent, &["apply"]));

    // The sidecar starts before the controller: it captures, but has no config yet.
    let node_id = format!("sidecar~{}~agent.e2e", agent.ipv4);
    let xds = format!("http://cp:{XDS_PORT}");
    let token_arg = token.display().to_string();
    let proxy = ok(Sidecar::spawn(
        agent,
        &[
            "--xds",
            &xds,
            "--xds-token-file",
            &token_arg,
            "--xds-node-id",
            &node_id,
        ],
        &scratch,
    ));
    let resp = curl(agent, "http://api:8080/early");
    assert!(
        status_line(&resp).contains(" 403"),
        "captured traffic must be refused before the first config: {resp}\nsidecar log:\n{}",
        proxy.logs()
    );
    assert!(!resp.contains("x-upstream"), "{resp}");

    // The controller comes up with the pod's config: the sidecar gets ready and applies it.
    write_atomically(&folder, "agent.yaml", &pod_config("v1", "DENY"));
    let controller = ok(sidecar::start_controller(
        cluster.pod("cp"),
        &folder,
        &token,
        &scratch,
    ));
    let proxy = proxy.wait_ready(agent).unwrap_or_else(|e| {
        panic!("{e}\ncontroller log:\n{}", controller.logs());
    });
    let resp = curl(agent, "http://api:8080/v1/items");
    assert!(
        status_line(&resp).contains(" 200"),
        "{resp}\nsidecar log:\n{}",
        proxy.logs()
    );
    assert!(resp.contains("x-upstream: api"), "{resp}");
    assert!(resp.contains("x-agentmesh-config: v1"), "{resp}");
    // The controller's outbound default: a host no route lists is refused.
    let resp = curl(agent, "http://other:8080/");
    assert!(status_line(&resp).contains(" 403"), "{resp}");
    assert!(resp.contains("is denied"), "{resp}");
    // The controller knows the sidecar by the node id it presented.
    assert!(
        controller.logs().contains(&node_id),
        "{}",
        controller.logs()
    );

    // A change in the folder reaches the running sidecar: a new header, and the outbound
    // default turned to ALLOW.
    write_atomically(&folder, "agent.yaml", &pod_config("v2", "ALLOW"));
    let resp = wait_for(Duration::from_secs(20), || {
        let resp = curl(agent, "http://other:8080/");
        status_line(&resp).contains(" 200").then_some(resp)
    })
    .unwrap_or_else(|| {
        panic!(
            "the new outbound default did not arrive within 20s\nsidecar log:\n{}\ncontroller log:\n{}",
            proxy.logs(),
            controller.logs()
        )
    });
    assert!(resp.contains("x-upstream: other"), "{resp}");
    let resp = curl(agent, "http://api:8080/v2");
    assert!(resp.contains("x-agentmesh-config: v2"), "{resp}");

    let m = proxy.metrics(agent);
    // Refused: the call before the first config, the controller's DENY, and the polls
    // above until the ALLOW arrived.
    assert!(
        metric(&m, "agentmesh_outbound_denied_total{protocol=\"http1\"}") >= 2.0,
        "{m}"
    );
    // Two configs from the controller, both applied.
    assert_eq!(
        metric(
            &m,
            "agentmesh_config_reloads_total{source=\"xds\",outcome=\"applied\"}"
        ),
        2.0,
        "{m}"
    );
    assert!(
        proxy.logs().contains("outbound HTTP request denied"),
        "{}",
        proxy.logs()
    );
    drop(proxy);
    ok(sidecar::init(agent, &["cleanup"]));
}
