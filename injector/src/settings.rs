//! What the injector is configured with, once, by its host (the controller, the
//! `agentmesh-injector` binary or a test): images, the controller's xDS address, the token
//! audience, whether the cluster has native sidecars, the mesh CA and the version.
//!
//! Per-pod choices live in pod annotations ([`crate::annotations`]); this module holds only
//! what is the same for every pod, and the contract values shared with init, proxy and chart.

/// The proxy's UID and GID (DESIGN.md contract): agentmesh-init lets this user's traffic
/// through, which keeps the proxy from capturing its own upstream connections.
pub const PROXY_UID: i64 = 1501;
/// The proxy's outbound capture port (loopback).
pub const OUTBOUND_PORT: i32 = 16001;
/// The proxy's inbound capture port.
pub const INBOUND_PORT: i32 = 16006;
/// The proxy's admin API (loopback only): `/drain`, `/config_dump`.
pub const ADMIN_PORT: i32 = 16000;
/// The proxy's Prometheus metrics port (`/metrics`).
pub const METRICS_PORT: i32 = 16020;
/// The proxy's readiness port: `/healthz/ready` answers 200 only after the first full config.
pub const READY_PORT: i32 = 16021;
/// The controller's xDS port.
pub const XDS_PORT: u16 = 16010;
/// The controller's webhook port.
pub const WEBHOOK_PORT: u16 = 16443;
/// The HTTP path the webhook serves AdmissionReviews on (the chart's `webhook.path`).
pub const WEBHOOK_PATH: &str = "/inject";
/// The name of the controller's Service (the chart's fixed name).
pub const CONTROLLER_SERVICE: &str = "agentmesh-controller";
/// Namespaces never injected, whatever their labels.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];
/// The label (on pods and namespaces) and its values: `enabled` on a namespace opts in,
/// `disabled` on a pod opts out.
pub const INJECT_LABEL: &str = "agentmesh.dev/inject";
/// The label every object of the chart carries, and the controller puts on the gateway
/// pods it renders: pods with it are our own components and never injected.
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";
/// The value of [`PART_OF_LABEL`] that marks our own components.
pub const PART_OF_VALUE: &str = "agentmesh";

/// Where the mesh CA comes from, for pods that use `intercept` egress TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MeshCaSource {
    /// A ConfigMap in the pod's namespace (the CA is public).
    ConfigMap {
        /// The ConfigMap's name.
        name: String,
        /// The key holding the PEM bundle.
        key: String,
    },
    /// A Secret in the pod's namespace.
    Secret {
        /// The Secret's name.
        name: String,
        /// The key holding the PEM bundle.
        key: String,
    },
}

impl Default for MeshCaSource {
    /// The ConfigMap `agentmesh-mesh-ca`, key `ca-bundle.crt`.
    fn default() -> MeshCaSource {
        MeshCaSource::ConfigMap {
            name: "agentmesh-mesh-ca".into(),
            key: "ca-bundle.crt".into(),
        }
    }
}

/// The resources of an injected container: Kubernetes quantities as text (validated).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ResourceDefaults {
    /// `requests.cpu`, e.g. `50m`; `None` sets no request.
    pub cpu_request: Option<String>,
    /// `requests.memory`, e.g. `32Mi`.
    pub memory_request: Option<String>,
    /// `limits.cpu`; `None` (the default) sets no CPU limit, which would add latency.
    pub cpu_limit: Option<String>,
    /// `limits.memory`.
    pub memory_limit: Option<String>,
}

/// Everything the injector needs that is the same for every pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The sidecar's image, `agentmesh-proxy`.
    pub proxy_image: String,
    /// The init container's image, `agentmesh-init`.
    pub init_image: String,
    /// `imagePullPolicy` of both injected containers; `None` leaves Kubernetes' default.
    pub image_pull_policy: Option<String>,
    /// The controller's xDS address as the proxy dials it, with its scheme:
    /// `http://agentmesh-controller.<namespace>.svc:16010`.
    pub xds_address: String,
    /// Audience of the projected service-account token the proxy presents to the
    /// controller (which checks it with a TokenReview).
    pub token_audience: String,
    /// Lifetime of that token; the kubelet renews it at 80% of it.
    pub token_expiration_seconds: i64,
    /// Whether the cluster runs native sidecars (Kubernetes >= 1.29). When false, every
    /// pod gets the classic sidecar container.
    pub native_sidecar: bool,
    /// The mesh CA, mounted into app containers for `intercept` egress TLS.
    pub mesh_ca: MeshCaSource,
    /// Namespaces never injected, besides [`SYSTEM_NAMESPACES`], in the order given (the
    /// chart's order, so the selectors compare equal).
    pub excluded_namespaces: Vec<String>,
    /// The proxy's resources when the pod's annotations do not say.
    pub proxy_resources: ResourceDefaults,
    /// The init container's resources (it runs for well under a second).
    pub init_resources: ResourceDefaults,
    /// The version recorded in the status annotation.
    pub version: String,
}

impl Settings {
    /// The settings of an installation whose controller runs in `namespace`: the chart's
    /// image names at this crate's version, native sidecars, audience `agentmesh`.
    pub fn for_controller_namespace(namespace: &str) -> Settings {
        let version = env!("CARGO_PKG_VERSION").to_string();
        Settings {
            proxy_image: format!("ghcr.io/agentmesh/agentmesh-proxy:{version}"),
            init_image: format!("ghcr.io/agentmesh/agentmesh-init:{version}"),
            image_pull_policy: None,
            xds_address: xds_address(namespace),
            token_audience: "agentmesh".into(),
            token_expiration_seconds: 3600,
            native_sidecar: true,
            mesh_ca: MeshCaSource::default(),
            excluded_namespaces: Vec::new(),
            proxy_resources: ResourceDefaults {
                cpu_request: Some("50m".into()),
                memory_request: Some("32Mi".into()),
                cpu_limit: None,
                memory_limit: Some("512Mi".into()),
            },
            init_resources: ResourceDefaults {
                cpu_request: Some("10m".into()),
                memory_request: Some("16Mi".into()),
                cpu_limit: None,
                memory_limit: Some("64Mi".into()),
            },
            version,
        }
    }

    /// Whether pods of `namespace` are never injected.
    pub fn is_excluded_namespace(&self, namespace: &str) -> bool {
        SYSTEM_NAMESPACES.contains(&namespace)
            || self.excluded_namespaces.iter().any(|n| n == namespace)
    }
}

/// The controller's xDS address seen from a pod: its Service in `namespace`, port 16010.
pub fn xds_address(namespace: &str) -> String {
    format!("http://{CONTROLLER_SERVICE}.{namespace}.svc:{XDS_PORT}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xds_address_names_the_controller_service() {
        assert_eq!(
            xds_address("agentmesh-system"),
            "http://agentmesh-controller.agentmesh-system.svc:16010"
        );
    }

    #[test]
    fn system_namespaces_are_always_excluded() {
        let mut s = Settings::for_controller_namespace("mesh");
        s.excluded_namespaces.push("legacy".into());
        assert!(s.is_excluded_namespace("kube-system"));
        assert!(s.is_excluded_namespace("legacy"));
        assert!(!s.is_excluded_namespace("agents"));
    }
}
