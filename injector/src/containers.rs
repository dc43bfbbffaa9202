//! The objects the injector adds to a pod: the `agentmesh-init` init container, the
//! `agentmesh-proxy` sidecar (native or classic), their volumes, and the mesh CA mount of
//! app containers. Each field says why it is there.
//!
//! This module builds typed objects only; where they go in the pod, and the patch, is
//! [`crate::inject`]'s job.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, ExecAction, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler,
    ObjectFieldSelector, Probe, ProjectedVolumeSource, ResourceRequirements, SecretVolumeSource,
    SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::annotations::{PodOptions, SidecarKind};
use crate::settings::{self, MeshCaSource, ResourceDefaults, Settings};

/// The init container's name.
pub const INIT_CONTAINER: &str = "agentmesh-init";
/// The sidecar's name.
pub const PROXY_CONTAINER: &str = "agentmesh-proxy";
/// The projected service-account token volume of the proxy.
pub const TOKEN_VOLUME: &str = "agentmesh-xds-token";
/// The init container's writable `/run`: legacy iptables takes its lock in
/// `/run/xtables.lock`, which a read-only root filesystem would refuse.
pub const INIT_RUN_VOLUME: &str = "agentmesh-init-run";
/// Where the proxy finds that token.
pub const TOKEN_DIR: &str = "/var/run/secrets/agentmesh/tokens";
/// The token file's name in [`TOKEN_DIR`].
pub const TOKEN_FILE: &str = "xds-token";
/// The mesh CA volume (intercept egress TLS).
pub const CA_VOLUME: &str = "agentmesh-mesh-ca";
/// Where app containers find the mesh CA bundle.
pub const CA_DIR: &str = "/etc/agentmesh/mesh-ca";
/// The bundle's file name in [`CA_DIR`].
pub const CA_FILE: &str = "ca-bundle.crt";
/// The variables that point common TLS stacks at the mesh CA bundle: OpenSSL and Go
/// (`SSL_CERT_FILE`), Python requests (`REQUESTS_CA_BUNDLE`), Node.js (`NODE_EXTRA_CA_CERTS`).
pub const CA_ENV: [&str; 3] = ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"];
/// The proxy binary in its image (lifecycle hooks run it).
pub const PROXY_BINARY: &str = "/usr/local/bin/agentmesh-proxy";
/// Classic sidecar postStart: block until `/healthz/ready` answers 200, so the kubelet
/// starts the app containers (which come after the proxy) only then. The proxy's own
/// `wait` subcommand, since the image has no shell to poll with.
pub const CLASSIC_WAIT_COMMAND: [&str; 4] = [PROXY_BINARY, "wait", "--timeout", "300s"];
/// Classic sidecar preStop: `POST /drain` on the admin port, then wait for in-flight
/// requests, so the app's last calls during its own shutdown still go through (the
/// proxy's `drain` subcommand).
pub const CLASSIC_DRAIN_COMMAND: [&str; 2] = [PROXY_BINARY, "drain"];

/// The `agentmesh-init` init container: installs the pod's capture rules and exits.
pub fn init_container(options: &PodOptions, settings: &Settings) -> Container {
    // Only the annotations the pod set, plus the proxy's identity so the exemption of
    // its traffic does not depend on agentmesh-init's defaults.
    let mut env = vec![
        env_value("AGENTMESH_PROXY_UID", &settings::PROXY_UID.to_string()),
        env_value("AGENTMESH_PROXY_GID", &settings::PROXY_UID.to_string()),
    ];
    env.extend(options.init_env.iter().map(|(k, v)| env_value(k, v)));
    Container {
        name: INIT_CONTAINER.into(),
        image: Some(settings.init_image.clone()),
        image_pull_policy: settings.image_pull_policy.clone(),
        // No args: the image's entrypoint runs `agentmesh-init` (apply) from the env.
        env: Some(env),
        resources: Some(resources(&settings.init_resources)),
        // Legacy iptables locks /run/xtables.lock; the root filesystem is read-only.
        volume_mounts: Some(vec![VolumeMount {
            name: INIT_RUN_VOLUME.into(),
            mount_path: "/run".into(),
            ..VolumeMount::default()
        }]),
        security_context: Some(SecurityContext {
            // iptables needs CAP_NET_ADMIN (nft, legacy) and CAP_NET_RAW (legacy) in the
            // pod's network namespace, and nothing else.
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            // agentmesh-init writes nothing but through iptables.
            read_only_root_filesystem: Some(true),
            // Root, explicitly: Kubernetes gives added capabilities only to root (it sets
            // no ambient capabilities), and the init image runs iptables without file
            // capabilities. A pod-level runAsNonRoot would otherwise refuse to start it.
            run_as_user: Some(0),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// The `agentmesh-proxy` sidecar, native (an init container that keeps running) or
/// classic (a regular container).
pub fn proxy_container(options: &PodOptions, settings: &Settings) -> Container {
    let ready_check = || HTTPGetAction {
        path: Some("/healthz/ready".into()),
        port: IntOrString::Int(settings::READY_PORT),
        ..HTTPGetAction::default()
    };
    let mut container = Container {
        name: PROXY_CONTAINER.into(),
        image: Some(settings.proxy_image.clone()),
        image_pull_policy: settings.image_pull_policy.clone(),
        args: Some(vec![
            "--mode".into(),
            "sidecar".into(),
            // The config (routes, policies, capture settings) comes from the controller.
            "--xds".into(),
            settings.xds_address.clone(),
            // The projected token the controller checks with a TokenReview.
            "--xds-token-file".into(),
            format!("{TOKEN_DIR}/{TOKEN_FILE}"),
        ]),
        // The proxy's node id `sidecar~$POD_IP~$POD_NAME.$POD_NAMESPACE`, from the
        // downward API: the controller sends each pod the resources that select it.
        env: Some(vec![
            env_field("POD_IP", "status.podIP"),
            env_field("POD_NAME", "metadata.name"),
            env_field("POD_NAMESPACE", "metadata.namespace"),
        ]),
        // Declared so Prometheus pod discovery finds the proxy's metrics.
        ports: Some(vec![ContainerPort {
            container_port: settings::METRICS_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        // Ready only once the first full config arrived, and not ready while draining,
        // so the pod leaves Service endpoints before the proxy stops.
        readiness_probe: Some(Probe {
            http_get: Some(ready_check()),
            period_seconds: Some(5),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        resources: Some(resources(&options.proxy_resources)),
        security_context: Some(SecurityContext {
            // The contract UID/GID: agentmesh-init's rules let this user's traffic out
            // uncaptured, which is what keeps the proxy from capturing itself.
            run_as_user: Some(settings::PROXY_UID),
            run_as_group: Some(settings::PROXY_UID),
            run_as_non_root: Some(true),
            // Ports above 1024, no raw sockets: no capability at all.
            capabilities: Some(Capabilities {
                add: None,
                drop: Some(vec!["ALL".into()]),
            }),
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: TOKEN_VOLUME.into(),
            mount_path: TOKEN_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    if options.inbound_capture {
        // agentmesh-init redirects inbound TCP to the inbound port: the proxy serves it
        // from its start, before (and whatever) the controller's config says.
        if let Some(args) = container.args.as_mut() {
            args.push("--inbound-capture".into());
        }
    }
    match options.sidecar {
        SidecarKind::Native => {
            // Keeps running next to the app, is started before the app's containers (and
            // the init containers after it), and is stopped after them, so Jobs complete.
            container.restart_policy = Some("Always".into());
            // The kubelet starts the next container only once this succeeds: the app
            // never runs before the proxy has its config.
            container.startup_probe = Some(Probe {
                http_get: Some(ready_check()),
                period_seconds: Some(1),
                failure_threshold: Some(300),
                ..Probe::default()
            });
        }
        SidecarKind::Classic => {
            container.lifecycle = Some(Lifecycle {
                post_start: Some(exec(&CLASSIC_WAIT_COMMAND)),
                pre_stop: Some(exec(&CLASSIC_DRAIN_COMMAND)),
            });
        }
    }
    container
}

/// The proxy's token: a projected service-account token with the mesh's audience, so it
/// is useless against the API server, renewed by the kubelet.
pub fn token_volume(settings: &Settings) -> Volume {
    Volume {
        name: TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(settings.token_audience.clone()),
                    expiration_seconds: Some(settings.token_expiration_seconds),
                    path: TOKEN_FILE.into(),
                }),
                ..VolumeProjection::default()
            }]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// The init container's `/run` ([`INIT_RUN_VOLUME`]): a small memory-backed emptyDir.
pub fn init_run_volume() -> Volume {
    Volume {
        name: INIT_RUN_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(Quantity("1Mi".into())),
        }),
        ..Volume::default()
    }
}

/// The mesh CA bundle, as [`CA_FILE`] whatever its key in the ConfigMap or Secret.
pub fn ca_volume(settings: &Settings) -> Volume {
    let items = |key: &str| {
        Some(vec![KeyToPath {
            key: key.into(),
            path: CA_FILE.into(),
            mode: None,
        }])
    };
    let mut volume = Volume {
        name: CA_VOLUME.into(),
        ..Volume::default()
    };
    match &settings.mesh_ca {
        MeshCaSource::ConfigMap { name, key } => {
            volume.config_map = Some(ConfigMapVolumeSource {
                name: name.clone(),
                items: items(key),
                ..ConfigMapVolumeSource::default()
            });
        }
        MeshCaSource::Secret { name, key } => {
            volume.secret = Some(SecretVolumeSource {
                secret_name: Some(name.clone()),
                items: items(key),
                ..SecretVolumeSource::default()
            });
        }
    }
    volume
}

/// The mount of the mesh CA in an app container.
pub fn ca_mount() -> VolumeMount {
    VolumeMount {
        name: CA_VOLUME.into(),
        mount_path: CA_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// The CA variables an app container does not set itself, pointing at the bundle.
pub fn ca_env(existing: &[EnvVar]) -> Vec<EnvVar> {
    CA_ENV
        .iter()
        .filter(|name| !existing.iter().any(|e| e.name == **name))
        .map(|name| env_value(name, &format!("{CA_DIR}/{CA_FILE}")))
        .collect()
}

fn env_value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: path.into(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn exec(command: &[&str]) -> LifecycleHandler {
    LifecycleHandler {
        exec: Some(ExecAction {
            command: Some(command.iter().map(|s| s.to_string()).collect()),
        }),
        ..LifecycleHandler::default()
    }
}

fn resources(r: &ResourceDefaults) -> ResourceRequirements {
    let map = |cpu: &Option<String>, memory: &Option<String>| {
        let mut m = BTreeMap::new();
        if let Some(cpu) = cpu {
            m.insert("cpu".to_string(), Quantity(cpu.clone()));
        }
        if let Some(memory) = memory {
            m.insert("memory".to_string(), Quantity(memory.clone()));
        }
        (!m.is_empty()).then_some(m)
    };
    ResourceRequirements {
        requests: map(&r.cpu_request, &r.memory_request),
        limits: map(&r.cpu_limit, &r.memory_limit),
        ..ResourceRequirements::default()
    }
}
