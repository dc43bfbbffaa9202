//! Per-pod scoping over real gRPC: a controller in folder mode and three real proxies in
//! sidecar mode (`agentmesh-proxy --mode sidecar --xds`), one per pod. A change to the
//! AgentPolicy that selects pod A reaches A's proxy only; B and C are sent nothing.
//!
//! "Nothing" is proven without waiting for an absence: after A's change, a change every
//! pod shares (the native `settings`) acts as a barrier; when B and C have applied it,
//! each must have applied exactly two updates since it started (the first config and the
//! barrier), the barrier must have changed exactly one resource for them, and their
//! sidecar settings must be what they were.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use support::{
    Process, eventually, free_port, get, proxy_binary, start_controller, write_atomically,
};

/// Generous for a loaded 2-core machine; the real figure is milliseconds.
const BOUND: Duration = Duration::from_secs(20);

const PODS: &str = "
apiVersion: v1
kind: Pod
metadata: { name: agent-a, namespace: agents, labels: { app: agent, team: a } }
---
apiVersion: v1
kind: Pod
metadata: { name: agent-b, namespace: agents, labels: { app: agent, team: b } }
---
apiVersion: v1
kind: Pod
metadata: { name: agent-c, namespace: agents, labels: { app: batch } }
";

/// The policy of team a: its outbound default and one allowed destination.
fn team_a_policy(default: &str, host: &str) -> String {
    format!(
        "apiVersion: agentmesh.dev/v1alpha1
kind: AgentPolicy
metadata: {{ name: team-a, namespace: agents }}
spec:
  workloadSelector: {{ matchLabels: {{ team: a }} }}
  outbound:
    default: {default}
    egress:
    - {{ name: provider, hostnames: [{host}], ports: [443], action: Allow }}
"
    )
}

/// A namespace-wide policy every pod of `agents` applies.
const NAMESPACE_POLICY: &str = "apiVersion: agentmesh.dev/v1alpha1
kind: AgentPolicy
metadata: { name: metadata-server, namespace: agents }
spec:
  workloadSelector: {}
  outbound:
    egress:
    - { name: metadata, addresses: [169.254.169.254/32], action: Deny }
";

/// One sidecar proxy and its ports.
struct Sidecar {
    node: String,
    admin: u16,
    ready: u16,
    metrics: u16,
    process: Process,
}

fn start_sidecar(pod: &str, xds_port: u16, dir: &Path) -> Sidecar {
    let (admin, ready, metrics, outbound) = (free_port(), free_port(), free_port(), free_port());
    let node = format!("sidecar~127.0.0.1~{pod}.agents");
    let args: Vec<String> = [
        "--mode".to_string(),
        "sidecar".into(),
        "--xds".into(),
        format!("http://127.0.0.1:{xds_port}"),
        "--xds-node-id".into(),
        node.clone(),
        "--outbound-addr".into(),
        format!("127.0.0.1:{outbound}"),
        "--admin-addr".into(),
        format!("127.0.0.1:{admin}"),
        "--ready-addr".into(),
        format!("127.0.0.1:{ready}"),
        "--metrics-addr".into(),
        format!("127.0.0.1:{metrics}"),
        "--worker-threads".into(),
        "1".into(),
    ]
    .into();
    let process = Process::start(&proxy_binary(), &args, dir.join(format!("{pod}.log")));
    Sidecar {
        node,
        admin,
        ready,
        metrics,
        process,
    }
}

/// Waits until `s` has applied at least `count` updates.
async fn wait_applied(s: &Sidecar, count: u64) {
    eventually(
        &format!("{} applied {count} updates", s.node),
        BOUND,
        || async { s.applied().await.filter(|n| *n >= count) },
    )
    .await;
}

impl Sidecar {
    /// Updates the proxy applied (the first config included), from its metrics.
    async fn applied(&self) -> Option<u64> {
        let (_, body) = get(self.metrics, "/metrics").await?;
        body.lines()
            .find(|l| l.starts_with("agentmesh_xds_updates_total{outcome=\"applied\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
    }

    /// The sidecar settings the proxy runs with, from its config dump.
    async fn sidecar_settings(&self) -> serde_json::Value {
        let (status, body) = get(self.admin, "/config_dump").await.unwrap();
        assert_eq!(status, 200, "{body}");
        let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
        dump["sidecar"].clone()
    }

    /// The controller's `update sent` lines for this node.
    fn updates_sent(&self, controller: &Process) -> Vec<String> {
        controller
            .output()
            .lines()
            .filter(|l| l.contains("update sent") && l.contains(&format!("node={} ", self.node)))
            .map(str::to_string)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_to_one_pods_policy_reaches_only_that_pods_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("manifests");
    std::fs::create_dir(&folder).unwrap();
    write_atomically(&folder, "pods.yaml", PODS);
    write_atomically(&folder, "ns.yaml", NAMESPACE_POLICY);
    write_atomically(
        &folder,
        "team-a.yaml",
        &team_a_policy("Deny", "api.openai.com"),
    );
    write_atomically(
        &folder,
        "native.yaml",
        "settings: { maxRequestBodyBytes: 1048576 }\n",
    );
    let xds_port = free_port();
    let controller = start_controller(&folder, xds_port, dir.path().join("controller.log")).await;
    let sidecars: Vec<Sidecar> = ["agent-a", "agent-b", "agent-c"]
        .iter()
        .map(|pod| start_sidecar(pod, xds_port, dir.path()))
        .collect();
    for s in &sidecars {
        eventually(&format!("{} is ready", s.node), BOUND, || async {
            get(s.ready, "/healthz/ready")
                .await
                .filter(|(st, _)| *st == 200)
        })
        .await;
    }
    let [a, b, c] = &sidecars[..] else {
        unreachable!()
    };

    // Each pod runs what selects it: A its team's policy and the namespace's, B and C
    // the namespace's only.
    let before_a = a.sidecar_settings().await;
    assert_eq!(before_a["outboundDefault"], "DENY", "{before_a}");
    let rules = |s: &serde_json::Value| -> Vec<String> {
        s["egress"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|r| r["name"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        rules(&before_a),
        ["team-a/provider", "metadata-server/metadata"]
    );
    let before_b = b.sidecar_settings().await;
    let before_c = c.sidecar_settings().await;
    for s in [&before_b, &before_c] {
        assert_eq!(rules(s), ["metadata-server/metadata"], "{s}");
        assert_ne!(s["outboundDefault"], "DENY", "{s}");
    }
    let applied_b = b.applied().await.unwrap();
    let applied_c = c.applied().await.unwrap();
    let applied_a = a.applied().await.unwrap();

    // Change team a's policy: A's proxy applies it.
    write_atomically(
        &folder,
        "team-a.yaml",
        &team_a_policy("Allow", "api.anthropic.com"),
    );
    let after_a = eventually("A runs the changed policy", BOUND, || async {
        let s = a.sidecar_settings().await;
        (s["egress"][0]["hostnames"][0] == "api.anthropic.com").then_some(s)
    })
    .await;
    assert_ne!(after_a["outboundDefault"], "DENY", "{after_a}");
    wait_applied(a, applied_a + 1).await;

    // Barrier: a change every node shares. Once B and C have applied it, any update the
    // policy change had caused them would have been applied before it.
    write_atomically(
        &folder,
        "native.yaml",
        "settings: { maxRequestBodyBytes: 2097152 }\n",
    );
    wait_applied(a, applied_a + 2).await;
    wait_applied(b, applied_b + 1).await;
    wait_applied(c, applied_c + 1).await;
    assert_eq!(a.applied().await, Some(applied_a + 2));
    assert_eq!(
        b.applied().await,
        Some(applied_b + 1),
        "B applied more than the shared change"
    );
    assert_eq!(
        c.applied().await,
        Some(applied_c + 1),
        "C applied more than the shared change"
    );
    assert_eq!(b.sidecar_settings().await, before_b);
    assert_eq!(c.sidecar_settings().await, before_c);

    // The controller's side: A was sent three updates (first config, policy, shared);
    // B and C two, the second changing only the shared settings resource.
    assert_eq!(
        a.updates_sent(&controller).len(),
        3,
        "{}",
        controller.output()
    );
    for s in [b, c] {
        let sent = s.updates_sent(&controller);
        assert_eq!(sent.len(), 2, "{}", controller.output());
        assert!(
            sent[1].contains("nonce=2 changed=1 removed=0"),
            "{}",
            sent[1]
        );
    }
    for s in &sidecars {
        assert!(
            !s.process.output().contains("NACK"),
            "{}",
            s.process.output()
        );
    }
}

/// Whatever a golden scenario's pods are served, the proxy accepts: each known pod's
/// sidecar resources, as the proxy's own config file, pass `agentmesh-proxy validate` (the
/// compiler it runs on every xDS update), so scoping that would be NACKed fails here.
#[test]
fn the_proxy_accepts_what_every_golden_sidecar_is_served() {
    let proxy = proxy_binary();
    let out_dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut checked = 0;
    for scenario in std::fs::read_dir(&root).unwrap() {
        let input = scenario.unwrap().path().join("input");
        if !input.is_dir() {
            continue;
        }
        let catalog = agentmesh_controller::folder::load(&input).unwrap();
        for pod in &catalog.objects.pods {
            let name = format!(
                "{}.{}",
                pod.metadata.name.as_deref().unwrap(),
                pod.metadata.namespace.as_deref().unwrap()
            );
            let node = agentmesh_controller::auth::NodeId {
                role: "sidecar".into(),
                ip: "127.0.0.1".into(),
                name: name.clone(),
            };
            let resources = catalog.resources_for(&node).unwrap();
            let nested = agentmesh_proxy::config::file::nest(&resources);
            let file = out_dir.path().join(format!("{checked}-{name}.json"));
            std::fs::write(&file, serde_json::to_string_pretty(&nested).unwrap()).unwrap();
            let out = std::process::Command::new(&proxy)
                .arg("validate")
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: the proxy rejects what pod {name} is served:\n{}\n{}",
                input.display(),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&file).unwrap()
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 4,
        "the golden scenarios have too few pods ({checked})"
    );
}

/// An AgentBackend a pod may use (an AgentPolicy selecting the pod targets it) is routed
/// by that pod's sidecar: its names, on port 80, go to the MCP federation. A pod no such
/// policy selects has no route to it; dropping the target removes A's route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_backend_is_routed_only_by_the_sidecars_of_pods_that_may_use_it() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("manifests");
    std::fs::create_dir(&folder).unwrap();
    write_atomically(&folder, "pods.yaml", PODS);
    write_atomically(
        &folder,
        "backend.yaml",
        "apiVersion: agentmesh.dev/v1alpha1
kind: AgentBackend
metadata: { name: github, namespace: agents }
spec:
  mcp:
    targets: [{ name: github, url: 'http://198.18.0.20:8080/mcp' }]
",
    );
    let policy = |targets: &str| {
        format!(
            "apiVersion: agentmesh.dev/v1alpha1
kind: AgentPolicy
metadata: {{ name: github-users, namespace: agents }}
spec:
  workloadSelector: {{ matchLabels: {{ team: a }} }}
  targetRefs: [{targets}]
  traffic:
    timeouts: {{ request: 20s }}
"
        )
    };
    write_atomically(
        &folder,
        "policy.yaml",
        &policy("{ group: agentmesh.dev, kind: AgentBackend, name: github }"),
    );
    let xds_port = free_port();
    let _controller = start_controller(&folder, xds_port, dir.path().join("controller.log")).await;
    let a = start_sidecar("agent-a", xds_port, dir.path());
    let b = start_sidecar("agent-b", xds_port, dir.path());
    for s in [&a, &b] {
        eventually(&format!("{} is ready", s.node), BOUND, || async {
            get(s.ready, "/healthz/ready")
                .await
                .filter(|(st, _)| *st == 200)
        })
        .await;
    }

    let route = a.agent_backend_route("github.agents").await;
    assert_eq!(
        route.as_deref(),
        Some("agentbackend/agents/github"),
        "{}",
        a.process.output()
    );
    let outbound = a.sidecar_settings().await;
    assert!(
        outbound["outboundBinds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b == "agentbackends-80"),
        "{outbound}"
    );
    assert_eq!(b.agent_backend_route("github.agents").await, None);

    // The policy no longer targets the AgentBackend: A's route goes away.
    write_atomically(&folder, "policy.yaml", &policy(""));
    eventually("A no longer routes to the AgentBackend", BOUND, || async {
        a.agent_backend_route("github.agents")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    for s in [&a, &b] {
        assert!(
            !s.process.output().contains("NACK"),
            "{}",
            s.process.output()
        );
    }
}

impl Sidecar {
    /// The backend the sidecar routes calls for `host` to, from its config dump: the
    /// first route of the outbound listener serving that hostname.
    async fn agent_backend_route(&self, host: &str) -> Option<String> {
        let (status, body) = get(self.admin, "/config_dump").await?;
        assert_eq!(status, 200, "{body}");
        let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
        dump["binds"]
            .as_array()?
            .iter()
            .flat_map(|b| b["listeners"].as_array().into_iter().flatten())
            .find(|l| {
                l["hostnames"]
                    .as_array()
                    .is_some_and(|h| h.iter().any(|n| n == host))
            })
            .and_then(|l| l["routes"][0]["backends"][0]["backend"].as_str())
            .map(str::to_string)
    }
}
