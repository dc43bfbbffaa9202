//! The injected pod runs: the pod spec the injector produces for a plain agent pod is
//! executed by the harness's kubelet (`agentmesh_e2e::kubelet`) as Kubernetes would run
//! it: `agentmesh-init` as an init container, the proxy as a native sidecar that must pass
//! its startup probe, then the app's containers (an unmodified curl). The sidecar takes
//! its config over xDS from `agentmesh-controller` in folder mode, presenting the
//! projected service-account token the kubelet wrote for the injected audience; the
//! folder holds the pod itself and an `AgentPolicy` selecting it by label.
//!
//! What it proves, as a user would see it: the app's calls are captured (the upstream
//! sees the header the policy sets, which only the sidecar can add), the policy's egress
//! rule refuses the denied host with a 403, the app started only after the sidecar was
//! ready (its single, unretried call succeeded, and the kubelet's events say so), and the
//! pod completes like a Job's: the sidecar is stopped once the app containers exited.
//!
//! Nothing about the pod's settings is written here: what runs is the injected manifest.
//!
//! Needs root, iproute2, iptables, curl, setpriv and `/usr/bin/python3`; fails (never
//! skips) naming what is missing (`scripts/install-test-deps.sh` installs all of it).
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use agentmesh_e2e::Cluster;
use agentmesh_e2e::kubelet::{ApiObjects, EventKind, Image, ImageTable, Kubelet};
use agentmesh_e2e::sidecar::{self, Scratch, exec_as, metric, text};

fn ok<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

fn pods_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/pods")
}

/// The injected manifest of the plain pod `plain`: what `agentmesh-injector inject -f`
/// (the webhook's code, default settings) prints for it. No hand-written pod settings:
/// what runs is what the injector produced.
fn injected_manifest(plain: &Path) -> String {
    let injector = ok(agentmesh_e2e::binary("agentmesh-injector"));
    let mut cmd = std::process::Command::new(injector);
    let out = ok(agentmesh_e2e::run(cmd.arg("inject").arg("-f").arg(plain)));
    String::from_utf8(out.stdout).unwrap()
}

/// The xDS address the injector writes into the sidecar's args by default (the chart's
/// controller Service in `agentmesh-system`).
const CONTROLLER_SERVICE: &str = "agentmesh-controller.agentmesh-system.svc";

/// The token the "API server" issues for the injector's audience, and the one the
/// controller in folder mode accepts.
const XDS_TOKEN: &str = "e2e-injected-pod-token";

/// agentmesh's own config in the controller's folder: the outbound bind on 8080 whose
/// listener claims the `api` host (the AgentPolicy's `traffic` applies to it).
const NATIVE: &str = "binds:
- name: egress-8080
  address: 0.0.0.0
  port: 8080
  listeners:
  - name: api
    hostnames: [api]
    routes:
    - name: all
sidecar:
  outboundBinds: [egress-8080]
";

/// The policy of the agent's namespace for pods labelled `app: research-agent`.
const POLICY: &str = "apiVersion: agentmesh.dev/v1alpha1
kind: AgentPolicy
metadata: { name: research, namespace: agents }
spec:
  workloadSelector: { matchLabels: { app: research-agent } }
  traffic:
    requestHeaders: { set: [{ name: x-agent-policy, value: research }] }
  outbound:
    default: Allow
    egress:
    - { name: no-paste-sites, hostnames: [blocked], action: Deny }
";

#[test]
fn the_injected_pod_runs_with_its_traffic_captured_and_governed() {
    ok(agentmesh_e2e::require_root());
    ok(sidecar::require_tools(&[
        "ip",
        "iptables",
        "ip6tables",
        "setpriv",
        "timeout",
        "mount",
        "curl",
        "bash",
        "/usr/bin/python3",
    ]));
    let plain = pods_dir().join("research-agent.yaml");
    let manifest = injected_manifest(&plain);
    let pod_spec = ok(Kubelet::parse(&manifest));

    let scratch = ok(Scratch::new());
    let folder = ok(scratch.readable_dir("resources"));
    // The folder is the controller's view of the cluster: the pod as the API server
    // holds it (labels included), agentmesh's config and the policy.
    ok(sidecar::write_readable(&folder.join("pod.yaml"), &manifest));
    ok(sidecar::write_readable(&folder.join("native.yaml"), NATIVE));
    ok(sidecar::write_readable(&folder.join("policy.yaml"), POLICY));
    let token = scratch.path("xds-token");
    ok(sidecar::write_readable(&token, XDS_TOKEN));

    let mut cluster = ok(Cluster::new("kpod"));
    for name in ["agent", "cp", "api", "blocked"] {
        ok(cluster.add_pod(name));
    }
    ok(cluster.add_host(CONTROLLER_SERVICE, cluster.pod("cp").ipv4.into()));
    let _api = ok(sidecar::start_upstreams(
        cluster.pod("api"),
        &["http:8080"],
        &scratch,
    ));
    let _blocked = ok(sidecar::start_upstreams(
        cluster.pod("blocked"),
        &["http:8080"],
        &scratch,
    ));
    let controller = ok(sidecar::start_controller(
        cluster.pod("cp"),
        &folder,
        &token,
        &scratch,
    ));

    // The app image: the host's curl, run as curlimages/curl runs it (USER 100:101).
    let images = ok(ImageTable::agentmesh()).with(
        "docker.io/curlimages/curl",
        Image {
            entrypoint: vec!["curl".into()],
            cmd: Vec::new(),
            user: (100, 101),
            programs: Default::default(),
        },
    );
    let api = ApiObjects::default().token("agentmesh", XDS_TOKEN);
    let kubelet = Kubelet::new(&cluster, images, api, &scratch.path("kubelet"));
    let agent = cluster.pod("agent");
    let mut pod = kubelet.run(&pod_spec, agent).unwrap_or_else(|e| {
        panic!(
            "the injected pod did not start: {e}\ncontroller log:\n{}",
            controller.logs()
        )
    });

    let limit = Duration::from_secs(30);
    for container in ["agent", "exfiltrate"] {
        let code = pod
            .wait_for_exit(container, limit)
            .unwrap_or_else(|e| panic!("{e}\nevents:\n{}", pod.describe()));
        assert_eq!(code, 0, "{container}: {}", pod.logs(container));
    }
    let context = || {
        format!(
            "events:\n{}\nsidecar log:\n{}\ncontroller log:\n{}",
            pod.describe(),
            pod.logs("agentmesh-proxy"),
            controller.logs()
        )
    };

    // Captured and governed: the upstream saw the header only the sidecar adds.
    let resp = pod.logs("agent");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}\n{}", context());
    assert!(resp.contains("x-upstream: api"), "{resp}");
    assert!(
        resp.contains("x-agent-policy: research"),
        "{resp}\n{}",
        context()
    );
    // The policy's egress rule: the denied host is refused by the sidecar, and the
    // upstream there never saw the call.
    let resp = pod.logs("exfiltrate");
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}\n{}", context());
    assert!(!resp.contains("x-upstream"), "{resp}");

    // The sidecar counted the refusal, and the controller served it as the pod.
    let metrics = text(&exec_as(
        agent,
        0,
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "http://127.0.0.1:16020/metrics",
        ],
    ));
    assert!(
        metric(
            &metrics,
            "agentmesh_outbound_denied_total{protocol=\"http1\"}"
        ) >= 1.0,
        "{metrics}"
    );
    let node = format!("sidecar~{}~research-agent.agents", agent.ipv4);
    assert!(controller.logs().contains(&node), "{}", context());

    // The app started only after the sidecar's startup probe succeeded, which the
    // injector ties to the first config (the 200 above could not have happened before:
    // a sidecar without config refuses captured traffic).
    let at = |container: &str, kind: EventKind| {
        pod.events()
            .iter()
            .position(|e| e.container == container && e.kind == kind)
            .unwrap_or_else(|| panic!("no {kind:?} event for {container}\n{}", pod.describe()))
    };
    let init_done = at("agentmesh-init", EventKind::Exited(0));
    let proxy_started = at("agentmesh-proxy", EventKind::Started);
    let proxy_ready = at("agentmesh-proxy", EventKind::StartupProbeSucceeded);
    let app_started = at("agent", EventKind::Started);
    assert!(
        init_done < proxy_started && proxy_ready < app_started,
        "{}",
        pod.describe()
    );

    // The pod completes as a Job's does: the app containers exited 0, then the sidecar
    // was stopped.
    let outcome = ok(pod.complete(limit));
    eprintln!("{}", pod.describe());
    assert_eq!(outcome.phase, "Succeeded", "{outcome:?}");
    assert!(
        pod.events()
            .iter()
            .any(|e| e.container == "agentmesh-proxy" && matches!(e.kind, EventKind::Exited(_))),
        "{}",
        pod.describe()
    );
}
