//! The injected-pod scenario's setting, shared by `tests/injected_pod.rs`: a plain pod
//! manifest of `tests/pods/` as `agentmesh-injector inject -f` prints it, and a cluster
//! with `agentmesh-controller` in folder mode whose folder holds that pod (as the API
//! server would), agentmesh's own config and the namespace's `AgentPolicy`.
//!
//! Nothing about the pod's settings is written here: what runs is the injected manifest.
//! The test builds the kubelet and asserts; this module starts things and asserts nothing.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod as PodManifest;

use crate::kubelet::{ApiObjects, ImageTable, Kubelet, KubeletError};
use crate::sidecar::{self, Scratch};
use crate::{Cluster, Daemon};

/// The xDS address the injector writes into the sidecar's args by default (the chart's
/// controller Service in `agentmesh-system`).
pub const CONTROLLER_SERVICE: &str = "agentmesh-controller.agentmesh-system.svc";

/// The token the "API server" issues for the injector's audience, and the one the
/// controller in folder mode accepts.
pub const XDS_TOKEN: &str = "e2e-injected-pod-token";

/// Fails (never skips) unless this runs as root with what an injected pod's scenario
/// needs: iproute2, iptables, setpriv, timeout, mount, curl, bash and python3.
pub fn require_tools() -> crate::Result<()> {
    crate::require_root()?;
    sidecar::require_tools(&[
        "ip",
        "iptables",
        "ip6tables",
        "setpriv",
        "timeout",
        "mount",
        "curl",
        "bash",
        "/usr/bin/python3",
    ])
}

/// The sidecar's `/metrics` as seen from inside `pod` (its Prometheus port, 16020).
pub fn sidecar_metrics(pod: &crate::Pod) -> String {
    sidecar::text(&sidecar::exec_as(
        pod,
        0,
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "http://127.0.0.1:16020/metrics",
        ],
    ))
}

/// The plain pod manifests the scenarios inject (`e2e/tests/pods/`).
pub fn pods_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/pods")
}

/// The injected manifest of the plain pod `plain`: what `agentmesh-injector inject -f`
/// (the webhook's code, default settings) prints for it.
pub fn injected_manifest(plain: &Path) -> crate::Result<String> {
    let injector = crate::binary("agentmesh-injector")?;
    let mut cmd = std::process::Command::new(injector);
    let out = crate::run(cmd.arg("inject").arg("-f").arg(plain))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A running scenario: the cluster (pod `agent` for the injected pod, `cp` for the
/// controller, the upstreams), the controller, and the injected pod to run.
#[derive(Debug)]
pub struct Scenario {
    // Fields drop in this order: the processes, then their namespaces, then the files.
    /// `agentmesh-controller serve --folder`.
    pub controller: Daemon,
    _upstreams: Vec<Daemon>,
    /// What the injector printed.
    pub manifest: String,
    /// The injected Pod, parsed.
    pub pod: PodManifest,
    /// The cluster; the injected pod runs in its pod `agent`.
    pub cluster: Cluster,
    /// Where logs, the controller's folder and the kubelet's files live.
    pub scratch: Scratch,
}

impl Scenario {
    /// Injects `tests/pods/<fixture>`, then starts cluster `tag` with pods `agent`, `cp`,
    /// each of `upstreams` (each serving `sidecar::start_upstreams`' `http:8080`) and each
    /// of `others` (empty), and the controller serving a folder with the injected pod and
    /// each `(file name, text)` of `resources`.
    pub fn start(
        tag: &str,
        fixture: &str,
        upstreams: &[&str],
        others: &[&str],
        resources: &[(&str, &str)],
    ) -> Result<Scenario, KubeletError> {
        let manifest = injected_manifest(&pods_dir().join(fixture))?;
        let pod = Kubelet::parse(&manifest)?;
        let scratch = Scratch::new()?;
        let folder = scratch.readable_dir("resources")?;
        // The folder is the controller's view of the cluster: the pod as the API server
        // holds it (labels included), agentmesh's config and the policy.
        sidecar::write_readable(&folder.join("pod.yaml"), &manifest)?;
        for (name, text) in resources {
            sidecar::write_readable(&folder.join(name), text)?;
        }
        let token = scratch.path("xds-token");
        sidecar::write_readable(&token, XDS_TOKEN)?;

        let mut cluster = Cluster::new(tag)?;
        for name in ["agent", "cp"].iter().chain(upstreams).chain(others) {
            cluster.add_pod(name)?;
        }
        cluster.add_host(CONTROLLER_SERVICE, cluster.pod("cp").ipv4.into())?;
        let mut started = Vec::new();
        for name in upstreams {
            started.push(sidecar::start_upstreams(
                cluster.pod(name),
                &["http:8080"],
                &scratch,
            )?);
        }
        let controller = sidecar::start_controller(cluster.pod("cp"), &folder, &token, &scratch)?;
        Ok(Scenario {
            scratch,
            cluster,
            controller,
            manifest,
            pod,
            _upstreams: started,
        })
    }

    /// The node's kubelet with `images` (the agentmesh ones must be among them), whose
    /// API server issues [`XDS_TOKEN`] for the injector's audience.
    pub fn kubelet(&self, images: ImageTable) -> Kubelet<'_> {
        let api = ApiObjects::default().token("agentmesh", XDS_TOKEN);
        Kubelet::new(&self.cluster, images, api, &self.scratch.path("kubelet"))
    }
}
