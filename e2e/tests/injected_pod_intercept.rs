//! Intercepted egress TLS on "Kubernetes": the pod annotated
//! `agentmesh.dev/egress-tls: intercept` is injected by `agentmesh-injector inject -f`
//! and run by the harness's kubelet; the controller (folder mode) holds the mesh root
//! (`--mesh-ca-cert-file`/`--mesh-ca-key-file`) and an AgentPolicy whose egress rule intercepts
//! `llm` with the provider's CA as `caBundle`. The sidecar gets its intermediate CA from
//! the controller by CSR before it reports ready; the kubelet mounts the ConfigMap
//! `agentmesh-mesh-ca` (the root only) into the app, as the injector asks.
//!
//! What it proves, as a user would see it: an unmodified Python app, trusting only what
//! the injector's `SSL_CERT_FILE` points at, calls `https://llm:8443` and gets the
//! provider's answer; the provider saw the header the policy's `traffic` sets, which only
//! a sidecar that decrypted the call can add; the sidecar verified the real provider with
//! the rule's `caBundle` (the provider's certificate is not one the web PKI knows); the
//! app started only after the sidecar held its intermediate; and the root's key never
//! left the controller (the sidecar's config dump holds no private key).
//!
//! Mirrors `injected_pod.rs` (same kubelet and harness, `agentmesh_e2e::injected`), with
//! an HTTPS provider instead of its plain upstreams and the mesh CA flags on the
//! controller.
//!
//! Needs root, iproute2, iptables, setpriv and `/usr/bin/python3`; fails (never skips)
//! naming what is missing (`scripts/install-test-deps.sh` installs all of it).
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use agentmesh_e2e::injected::{self, CONTROLLER_SERVICE, injected_manifest, pods_dir};
use agentmesh_e2e::kubelet::{ApiObjects, EventKind, Image, ImageTable, Kubelet};
use agentmesh_e2e::sidecar::{self, SERVER_UID, Scratch, exec_as, fixture, metric, text};
use agentmesh_e2e::{Cluster, Daemon, wait_for};

fn ok<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// The token of the injector's audience, which the controller in folder mode accepts.
const XDS_TOKEN: &str = "e2e-intercept-pod-token";

/// The provider's port.
const PROVIDER_PORT: &str = "8443";

/// agentmesh's own config in the controller's folder: an outbound bind on the provider's
/// port whose listener claims `llm` and sends on to wherever the app was going (a route
/// without backends), so the policy's `traffic` applies to the decrypted calls.
const NATIVE: &str = "binds:
- name: egress-8443
  address: 0.0.0.0
  port: 8443
  listeners:
  - name: llm
    hostnames: [llm]
    routes:
    - name: all
sidecar:
  outboundBinds: [egress-8443]
";

/// The namespace's policy: intercept `llm`, verify it with the provider's CA, and mark
/// every call.
fn policy(provider_ca: &str) -> String {
    let ca: String = provider_ca
        .lines()
        .map(|l| format!("        {l}\n"))
        .collect();
    format!(
        "apiVersion: agentmesh.dev/v1alpha1
kind: AgentPolicy
metadata: {{ name: providers, namespace: agents }}
spec:
  workloadSelector: {{ matchLabels: {{ app: intercept-agent }} }}
  traffic:
    requestHeaders: {{ set: [{{ name: x-agent-policy, value: intercepted }}] }}
  outbound:
    default: Deny
    egress:
    - name: llm
      hostnames: [llm]
      action: Allow
      tls: Intercept
      caBundle: |
{ca}"
    )
}

#[test]
fn an_injected_pod_s_https_call_is_intercepted_with_a_controller_issued_ca() {
    ok(injected::require_tools());
    let manifest = ok(injected_manifest(&pods_dir().join("intercept-agent.yaml")));
    let pod_spec = ok(Kubelet::parse(&manifest));

    let mesh_root = fixture("certs/mesh-ca.crt");
    let mesh_key = fixture("certs/mesh-ca.key");
    let root_pem = std::fs::read_to_string(&mesh_root).unwrap();
    let provider_ca = std::fs::read_to_string(fixture("certs/llm-ca.crt")).unwrap();

    let scratch = ok(Scratch::new());
    let folder = ok(scratch.readable_dir("resources"));
    ok(sidecar::write_readable(&folder.join("pod.yaml"), &manifest));
    ok(sidecar::write_readable(&folder.join("native.yaml"), NATIVE));
    ok(sidecar::write_readable(
        &folder.join("policy.yaml"),
        &policy(&provider_ca),
    ));
    let token = scratch.path("xds-token");
    ok(sidecar::write_readable(&token, XDS_TOKEN));

    let mut cluster = ok(Cluster::new("kmca"));
    for name in ["agent", "cp", "llm"] {
        ok(cluster.add_pod(name));
    }
    ok(cluster.add_host(CONTROLLER_SERVICE, cluster.pod("cp").ipv4.into()));

    // The provider: HTTPS with a certificate for `llm` from its own CA.
    let upstreams = fixture("upstreams.py").display().to_string();
    let service = format!("https:{PROVIDER_PORT}");
    let llm = cluster.pod("llm");
    let mut server = llm.ns.command_as(
        SERVER_UID,
        SERVER_UID,
        &["/usr/bin/python3", "-u", &upstreams, "llm", &service],
    );
    server
        .env("UPSTREAMS_TLS_CERT", fixture("certs/llm.crt"))
        .env("UPSTREAMS_TLS_KEY", fixture("certs/llm.key"));
    let mut provider = ok(Daemon::spawn(
        "provider",
        server,
        &scratch.path("provider.log"),
    ));
    let up = wait_for(Duration::from_secs(30), || {
        (!provider.alive() || provider.logs().contains("ready")).then_some(())
    });
    assert!(up.is_some() && provider.alive(), "{}", provider.logs());

    let (root_file, key_file) = (
        mesh_root.display().to_string(),
        mesh_key.display().to_string(),
    );
    let controller = ok(sidecar::start_controller_with(
        cluster.pod("cp"),
        &folder,
        &token,
        &scratch,
        &[
            "--mesh-ca-cert-file",
            &root_file,
            "--mesh-ca-key-file",
            &key_file,
        ],
    ));

    // The app image: python's, whose `python3` is the host's /usr/bin/python3.
    let images = ok(ImageTable::agentmesh()).with(
        "docker.io/library/python",
        Image {
            entrypoint: Vec::new(),
            cmd: vec!["python3".into()],
            user: (0, 0),
            programs: BTreeMap::from([("python3".into(), PathBuf::from("/usr/bin/python3"))]),
        },
    );
    // The API server: the token, and the mesh CA ConfigMap with the root only.
    let api = ApiObjects::default()
        .token("agentmesh", XDS_TOKEN)
        .config_map(
            "agents",
            "agentmesh-mesh-ca",
            &[("ca-bundle.crt", root_pem.as_str())],
        );
    let kubelet = Kubelet::new(&cluster, images, api, &scratch.path("kubelet"));
    let agent = cluster.pod("agent");
    let mut pod = kubelet.run(&pod_spec, agent).unwrap_or_else(|e| {
        panic!(
            "the injected pod did not start: {e}\ncontroller log:\n{}",
            controller.logs()
        )
    });
    let code = pod
        .wait_for_exit("agent", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\nevents:\n{}", pod.describe()));
    let context = || {
        format!(
            "events:\n{}\nsidecar log:\n{}\ncontroller log:\n{}\nprovider log:\n{}",
            pod.describe(),
            pod.logs("agentmesh-proxy"),
            controller.logs(),
            provider.logs()
        )
    };
    let out = pod.logs("agent");
    assert_eq!(code, 0, "{out}\n{}", context());

    // The provider answered, and saw the header only the decrypting sidecar adds.
    assert!(out.starts_with("200\n"), "{out}\n{}", context());
    assert!(out.contains("x-upstream: llm"), "{out}");
    assert!(
        out.contains("x-agent-policy: intercepted"),
        "{out}\n{}",
        context()
    );

    // The sidecar intercepted it with a leaf from an intermediate the controller signed
    // for this pod.
    let metrics = injected::sidecar_metrics(agent);
    assert!(
        metric(
            &metrics,
            "agentmesh_outbound_tls_connections_total{mode=\"intercept\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "agentmesh_mesh_ca_intermediate_requests_total{outcome=\"issued\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "agentmesh_mesh_ca_intermediate_expiry_timestamp_seconds"
        ) > 0.0,
        "{metrics}"
    );
    let node = format!("sidecar~{}~intercept-agent.agents", agent.ipv4);
    let signed = controller
        .logs()
        .lines()
        .any(|l| l.contains("intermediate CA signed") && l.contains(&node) && l.contains("llm"));
    assert!(signed, "{}", context());

    // No private key anywhere the sidecar shows its config.
    let dump = text(&exec_as(
        agent,
        0,
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "http://127.0.0.1:16000/config_dump",
        ],
    ));
    assert!(dump.contains("controller"), "{dump}");
    assert!(!dump.contains("PRIVATE KEY"), "{dump}");
    assert!(!pod.logs("agentmesh-proxy").contains("PRIVATE KEY"));

    // The app started only once the sidecar was ready, which it is only with an
    // intermediate (its single, unretried call above could not have been intercepted
    // otherwise).
    let at = |container: &str, kind: EventKind| {
        pod.events()
            .iter()
            .position(|e| e.container == container && e.kind == kind)
            .unwrap_or_else(|| panic!("no {kind:?} event for {container}\n{}", pod.describe()))
    };
    assert!(
        at("agentmesh-proxy", EventKind::StartupProbeSucceeded) < at("agent", EventKind::Started),
        "{}",
        pod.describe()
    );
    let outcome = ok(pod.complete(Duration::from_secs(30)));
    assert_eq!(outcome.phase, "Succeeded", "{outcome:?}");
    let _ = provider.terminate(Duration::from_secs(5));
}
