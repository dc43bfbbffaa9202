//! Command-line flags of the injection settings, shared by every subcommand of
//! `agentmesh-injector` and meant to be flattened into the controller's `serve` (so the
//! chart passes the same flags to either).
//!
//! Flags become [`Settings`] here and nowhere else.

use clap::Args;

use crate::annotations::is_quantity;
use crate::settings::{MeshCaSource, Settings, xds_address};

/// The injection settings as flags (each also an `AGENTMESH_INJECT_*` variable).
#[derive(Debug, Clone, Args)]
pub struct SettingsArgs {
    /// Namespace the controller runs in: the xDS address defaults to
    /// `http://agentmesh-controller.<namespace>.svc:16010`.
    #[arg(
        long,
        env = "AGENTMESH_INJECT_CONTROLLER_NAMESPACE",
        default_value = "agentmesh-system"
    )]
    pub controller_namespace: String,
    /// The controller's xDS address as sidecars dial it, with its scheme; overrides the
    /// one derived from `--controller-namespace`.
    #[arg(long, env = "AGENTMESH_INJECT_XDS_ADDRESS", value_name = "URL")]
    pub sidecar_xds_address: Option<String>,
    /// Image of the injected sidecar; defaults to
    /// `ghcr.io/agentmesh/agentmesh-proxy:<this version>`.
    #[arg(long, env = "AGENTMESH_INJECT_PROXY_IMAGE", value_name = "IMAGE")]
    pub proxy_image: Option<String>,
    /// Image of the injected init container; defaults to
    /// `ghcr.io/agentmesh/agentmesh-init:<this version>`.
    #[arg(long, env = "AGENTMESH_INJECT_INIT_IMAGE", value_name = "IMAGE")]
    pub init_image: Option<String>,
    /// `imagePullPolicy` of the injected containers (Always, IfNotPresent, Never); unset
    /// leaves Kubernetes' default.
    #[arg(long, env = "AGENTMESH_INJECT_IMAGE_PULL_POLICY", value_parser = ["Always", "IfNotPresent", "Never"])]
    pub image_pull_policy: Option<String>,
    /// Inject the proxy as a native sidecar (Kubernetes >= 1.29); `false` injects classic
    /// sidecar containers everywhere. A pod can still ask for classic with its annotation.
    #[arg(
        long,
        env = "AGENTMESH_INJECT_NATIVE_SIDECAR",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub native_sidecar: bool,
    /// ConfigMap (in each pod's namespace) holding the mesh CA bundle mounted for
    /// `agentmesh.dev/egress-tls: intercept`.
    #[arg(
        long,
        env = "AGENTMESH_INJECT_MESH_CA_CONFIGMAP",
        default_value = "agentmesh-mesh-ca",
        conflicts_with = "mesh_ca_secret"
    )]
    pub mesh_ca_configmap: String,
    /// A Secret instead of a ConfigMap for the mesh CA bundle.
    #[arg(long, env = "AGENTMESH_INJECT_MESH_CA_SECRET", value_name = "NAME")]
    pub mesh_ca_secret: Option<String>,
    /// The key of the bundle in that ConfigMap or Secret (PEM: the mesh CA plus the
    /// public roots the app still needs for passthrough destinations).
    #[arg(
        long,
        env = "AGENTMESH_INJECT_MESH_CA_KEY",
        default_value = "ca-bundle.crt"
    )]
    pub mesh_ca_key: String,
    /// Namespaces never injected, besides kube-system, kube-public and kube-node-lease
    /// (comma-separated or repeated).
    #[arg(
        long,
        env = "AGENTMESH_INJECT_EXCLUDED_NAMESPACES",
        value_delimiter = ','
    )]
    pub excluded_namespaces: Vec<String>,
    /// The proxy's CPU request unless a pod's annotation says otherwise.
    #[arg(long, env = "AGENTMESH_INJECT_PROXY_CPU", default_value = "50m", value_parser = quantity)]
    pub proxy_cpu: String,
    /// The proxy's memory request unless a pod's annotation says otherwise.
    #[arg(long, env = "AGENTMESH_INJECT_PROXY_MEMORY", default_value = "32Mi", value_parser = quantity)]
    pub proxy_memory: String,
    /// The proxy's memory limit unless a pod's annotation says otherwise.
    #[arg(long, env = "AGENTMESH_INJECT_PROXY_MEMORY_LIMIT", default_value = "512Mi", value_parser = quantity)]
    pub proxy_memory_limit: String,
}

fn quantity(text: &str) -> Result<String, String> {
    if is_quantity(text) {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not a Kubernetes quantity like 100m, 64Mi or 1G"
        ))
    }
}

/// The flags of `agentmesh-injector` itself: the shared [`SettingsArgs`] plus the token
/// audience. The controller does not flatten this one: its own `--token-audience` is the
/// audience it checks tokens for, and the injector must project tokens for that same one.
#[derive(Debug, Clone, Args)]
pub struct InjectorArgs {
    /// The shared injection settings.
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Audience of the projected token the proxy presents to the controller.
    #[arg(
        long,
        env = "AGENTMESH_INJECT_TOKEN_AUDIENCE",
        default_value = "agentmesh"
    )]
    pub token_audience: String,
}

impl InjectorArgs {
    /// The settings these flags describe.
    pub fn to_settings(&self) -> Settings {
        self.settings.to_settings(&self.token_audience)
    }
}

impl SettingsArgs {
    /// The settings these flags describe, with `token_audience` for the proxy's projected
    /// token (the audience the controller checks tokens for).
    pub fn to_settings(&self, token_audience: &str) -> Settings {
        let mut settings = Settings::for_controller_namespace(&self.controller_namespace);
        if let Some(address) = &self.sidecar_xds_address {
            settings.xds_address.clone_from(address);
        } else {
            settings.xds_address = xds_address(&self.controller_namespace);
        }
        if let Some(image) = &self.proxy_image {
            settings.proxy_image.clone_from(image);
        }
        if let Some(image) = &self.init_image {
            settings.init_image.clone_from(image);
        }
        settings
            .image_pull_policy
            .clone_from(&self.image_pull_policy);
        settings.native_sidecar = self.native_sidecar;
        settings.token_audience = token_audience.to_string();
        settings.mesh_ca = match &self.mesh_ca_secret {
            Some(name) => MeshCaSource::Secret {
                name: name.clone(),
                key: self.mesh_ca_key.clone(),
            },
            None => MeshCaSource::ConfigMap {
                name: self.mesh_ca_configmap.clone(),
                key: self.mesh_ca_key.clone(),
            },
        };
        settings.excluded_namespaces.clear();
        for ns in self.excluded_namespaces.iter().map(|s| s.trim()) {
            if !ns.is_empty() && !settings.excluded_namespaces.iter().any(|n| n == ns) {
                settings.excluded_namespaces.push(ns.to_string());
            }
        }
        settings.proxy_resources.cpu_request = Some(self.proxy_cpu.clone());
        settings.proxy_resources.memory_request = Some(self.proxy_memory.clone());
        settings.proxy_resources.memory_limit = Some(self.proxy_memory_limit.clone());
        settings
    }
}
