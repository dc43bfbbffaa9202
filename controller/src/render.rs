//! Gateway provisioning: for each Gateway of the agentmesh GatewayClass, the Deployment
//! that runs its proxy (`agentmesh-proxy --mode gateway`) and the Service that exposes
//! its listeners.
//!
//! A pure function of the input objects, like translation: Kubernetes mode applies what it
//! returns (server-side apply, owned by the Gateway, so deleting the Gateway deletes
//! them), folder mode prints it (`agentmesh-controller render -f DIR`). Names and labels
//! follow the Gateway API's conventions for automated deployments (GEP-1762):
//! `<gateway>-<gatewayclass>`, the `gateway.networking.k8s.io/gateway-name` label, and
//! `spec.infrastructure` labels and annotations copied onto both objects.
//!
//! This module must not talk to the API server nor know how the result is delivered:
//! [`provision`] is handed the apply function.

use std::collections::BTreeMap;

use gateway_api::apis::standard::gateways::Gateway;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecurityContext, Service,
    ServiceAccountTokenProjection, ServicePort, ServiceSpec, Sysctl, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::objects::{CONTROLLER_NAME, GATEWAY_GROUP, ObjectRef, Objects};

/// The default audience of the service-account token a proxy presents to the controller,
/// which checks it with a TokenReview (`--token-audience`).
pub const TOKEN_AUDIENCE: &str = "agentmesh";

/// Where the projected token is mounted in the gateway's container.
const TOKEN_DIR: &str = "/var/run/secrets/agentmesh";

/// The proxy's UID and GID (DESIGN.md "Contracts").
const PROXY_UID: i64 = 1501;

/// The proxy's own ports (DESIGN.md "Contracts"): no listener may take them.
const ADMIN_PORT: i32 = 16000;
const METRICS_PORT: i32 = 16020;
const READY_PORT: i32 = 16021;

/// The label selecting a gateway's pods (always a valid label value, unlike a long
/// Gateway name).
pub const GATEWAY_LABEL: &str = "agentmesh.dev/gateway";

/// How gateways are deployed: the same for every Gateway, from the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct RenderOptions {
    /// The proxy image the gateways' Deployments run.
    #[arg(
        long = "gateway-image",
        env = "AGENTMESH_GATEWAY_IMAGE",
        value_name = "IMAGE",
        default_value = concat!("ghcr.io/agentmesh/agentmesh-proxy:", env!("CARGO_PKG_VERSION"))
    )]
    pub image: String,
    /// The controller's xDS address, as the gateways reach it.
    #[arg(
        long = "gateway-xds-address",
        env = "AGENTMESH_GATEWAY_XDS_ADDRESS",
        value_name = "URL",
        default_value = "http://agentmesh-controller.agentmesh-system.svc:16010"
    )]
    pub xds_address: String,
    /// The type of the gateways' Services.
    #[arg(
        long = "gateway-service-type",
        env = "AGENTMESH_GATEWAY_SERVICE_TYPE",
        value_name = "TYPE",
        default_value = "LoadBalancer",
        value_parser = ["LoadBalancer", "NodePort", "ClusterIP"]
    )]
    pub service_type: String,
    /// The audience proxies' projected service-account tokens are issued for: the
    /// gateways' tokens are requested with it, and `serve --kubernetes` accepts only
    /// tokens for it.
    #[arg(
        long = "token-audience",
        env = "AGENTMESH_TOKEN_AUDIENCE",
        value_name = "AUDIENCE",
        default_value = TOKEN_AUDIENCE
    )]
    pub token_audience: String,
}

/// What one Gateway needs in the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayWorkload {
    /// Runs the proxy.
    pub deployment: Deployment,
    /// Exposes the listeners.
    pub service: Service,
}

/// Why a Gateway cannot be deployed, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{gateway}: field {field}: {reason}")]
pub struct RenderError {
    /// The Gateway.
    pub gateway: ObjectRef,
    /// The field, like `spec.listeners[1].port`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The rendering of one Gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The Gateway.
    pub gateway: ObjectRef,
    /// Its workload, or why there is none.
    pub result: Result<GatewayWorkload, RenderError>,
}

/// Renders every Gateway whose GatewayClass names the agentmesh controller, in
/// namespace/name order.
pub fn render(objects: &Objects, options: &RenderOptions) -> Vec<Rendered> {
    let ours: BTreeMap<&str, ()> = objects
        .gateway_classes
        .iter()
        .filter(|c| c.spec.controller_name == CONTROLLER_NAME)
        .filter_map(|c| c.metadata.name.as_deref().map(|n| (n, ())))
        .collect();
    objects
        .gateways
        .iter()
        .filter(|g| ours.contains_key(g.spec.gateway_class_name.as_str()))
        .map(|g| Rendered {
            gateway: ObjectRef::of("Gateway", &g.metadata),
            result: render_gateway(g, options),
        })
        .collect()
}

/// One exposed port: the first listener on it names it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Port {
    name: String,
    port: i32,
}

/// The Deployment and Service of one Gateway.
fn render_gateway(
    gateway: &Gateway,
    options: &RenderOptions,
) -> Result<GatewayWorkload, RenderError> {
    let reference = ObjectRef::of("Gateway", &gateway.metadata);
    let error = |field: String, reason: String| RenderError {
        gateway: reference.clone(),
        field,
        reason,
    };
    let ports = ports(gateway).map_err(|(field, reason)| error(field, reason))?;
    let addresses =
        crate::addresses::read(gateway).map_err(|p| error(p.field.clone(), p.message))?;
    let name = object_name(&reference.name, &gateway.spec.gateway_class_name);
    let infrastructure = gateway.spec.infrastructure.clone().unwrap_or_default();
    let mut labels = BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "agentmesh-gateway".to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".into(),
            "agentmesh-controller".into(),
        ),
        (GATEWAY_LABEL.into(), name.clone()),
        (
            "gateway.networking.k8s.io/gateway-class-name".into(),
            gateway.spec.gateway_class_name.clone(),
        ),
    ]);
    // A label value is at most 63 characters; a Gateway name may be longer, and then only
    // our own (shortened) label identifies the pods.
    if reference.name.len() <= 63 {
        labels.insert(
            "gateway.networking.k8s.io/gateway-name".into(),
            reference.name.clone(),
        );
    }
    if let Some(extra) = &infrastructure.labels {
        for (k, v) in extra {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let annotations = infrastructure.annotations.clone().filter(|a| !a.is_empty());
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(reference.namespace.clone()),
        labels: Some(labels.clone()),
        annotations: annotations.clone(),
        owner_references: owner(gateway).map(|o| vec![o]),
        ..ObjectMeta::default()
    };
    let selector = BTreeMap::from([(GATEWAY_LABEL.to_string(), name.clone())]);
    let mut pod_labels = labels;
    // The injector must not add a sidecar to the gateway's own proxy.
    pod_labels.insert("agentmesh.dev/inject".into(), "disabled".into());

    let deployment = Deployment {
        metadata: meta.clone(),
        spec: Some(DeploymentSpec {
            // `replicas` is left out so that `kubectl scale` or an autoscaler owns it: the
            // controller's server-side apply does not fight them.
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations,
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(&reference, &ports, options)),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    };
    // `spec.addresses`: IPs the Service takes traffic on, and hostnames ExternalDNS
    // publishes for it.
    let mut service_meta = meta;
    if !addresses.hostnames.is_empty() {
        service_meta
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(
                crate::addresses::EXTERNAL_DNS_HOSTNAME.into(),
                addresses.hostnames.join(","),
            );
    }
    let external_ips: Vec<String> = addresses.ips.iter().map(|ip| ip.to_string()).collect();
    let service = Service {
        metadata: service_meta,
        spec: Some(ServiceSpec {
            type_: Some(options.service_type.clone()),
            external_ips: (!external_ips.is_empty()).then_some(external_ips),
            selector: Some(selector),
            ports: Some(
                ports
                    .iter()
                    .map(|p| ServicePort {
                        name: Some(p.name.clone()),
                        port: p.port,
                        target_port: Some(IntOrString::Int(p.port)),
                        protocol: Some("TCP".into()),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    Ok(GatewayWorkload {
        deployment,
        service,
    })
}

/// The pod: one proxy container in gateway mode, locked down.
fn pod_spec(reference: &ObjectRef, ports: &[Port], options: &RenderOptions) -> PodSpec {
    let field_env = |name: &str, path: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let mut container_ports: Vec<ContainerPort> = ports
        .iter()
        .map(|p| ContainerPort {
            name: Some(p.name.clone()),
            container_port: p.port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        })
        .collect();
    container_ports.push(ContainerPort {
        name: Some("metrics".into()),
        container_port: METRICS_PORT,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    });
    let container = Container {
        name: "proxy".into(),
        image: Some(options.image.clone()),
        args: Some(vec![
            "--mode=gateway".into(),
            format!("--gateway={}.{}", reference.name, reference.namespace),
            format!("--xds={}", options.xds_address),
            format!("--xds-token-file={TOKEN_DIR}/token"),
            // Finish in-flight requests before the kubelet's SIGKILL (grace period below).
            "--drain-timeout=30s".into(),
        ]),
        // The node id (`gateway~$POD_IP~…`) and logs carry the pod's identity.
        env: Some(vec![
            field_env("POD_IP", "status.podIP"),
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
        ]),
        ports: Some(container_ports),
        // Ready only once the first complete config from the controller is applied, so
        // the Service sends no traffic to a proxy that would answer 404.
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz/ready".into()),
                port: IntOrString::Int(READY_PORT),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(2),
            ..Probe::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("100m".into())),
                ("memory".to_string(), Quantity("64Mi".into())),
            ])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "agentmesh-token".into(),
            mount_path: TOKEN_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    // Listeners below 1024 need no capability: the namespaced (and "safe") sysctl lets
    // the non-root proxy bind them.
    let sysctls = ports.iter().any(|p| p.port < 1024).then(|| {
        vec![Sysctl {
            name: "net.ipv4.ip_unprivileged_port_start".into(),
            value: "0".into(),
        }]
    });
    PodSpec {
        containers: vec![container],
        // The proxy talks to the controller, not to the API server: no API token.
        automount_service_account_token: Some(false),
        // Longer than --drain-timeout, so draining ends before SIGKILL.
        termination_grace_period_seconds: Some(35),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(PROXY_UID),
            run_as_group: Some(PROXY_UID),
            // Makes the projected token readable by the proxy's group.
            fs_group: Some(PROXY_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            sysctls,
            ..PodSecurityContext::default()
        }),
        volumes: Some(vec![Volume {
            name: "agentmesh-token".into(),
            // A short-lived token for the controller only (audience `agentmesh`), which
            // checks it with a TokenReview and refuses a gateway claiming another name.
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(options.token_audience.clone()),
                        expiration_seconds: Some(3600),
                        path: "token".into(),
                    }),
                    ..VolumeProjection::default()
                }]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        }]),
        ..PodSpec::default()
    }
}

/// The ports to expose, one per distinct listener port, in listener order. UDP listeners
/// are left out (the proxy serves TCP only; translation reports them).
fn ports(gateway: &Gateway) -> Result<Vec<Port>, (String, String)> {
    let mut out: Vec<Port> = Vec::new();
    for (i, listener) in gateway.spec.listeners.iter().enumerate() {
        let field = || format!("spec.listeners[{i}].port");
        if listener.protocol == "UDP" {
            continue;
        }
        if !(1..=65535).contains(&listener.port) {
            return Err((
                field(),
                format!("{} is not a port (1-65535)", listener.port),
            ));
        }
        if [ADMIN_PORT, METRICS_PORT, READY_PORT].contains(&listener.port) {
            return Err((
                field(),
                format!(
                    "{} is one of the gateway proxy's own ports ({ADMIN_PORT} admin, {METRICS_PORT} metrics, {READY_PORT} readiness); choose another",
                    listener.port
                ),
            ));
        }
        if out.iter().any(|p| p.port == listener.port) {
            continue;
        }
        // Port names are at most 15 characters: `https-65535` is 11.
        let prefix = match listener.protocol.as_str() {
            "HTTP" => "http",
            "HTTPS" => "https",
            "TLS" => "tls",
            "TCP" => "tcp",
            _ => "port",
        };
        out.push(Port {
            name: format!("{prefix}-{}", listener.port),
            port: listener.port,
        });
    }
    if out.is_empty() {
        return Err((
            "spec.listeners".into(),
            "no TCP listener: nothing to deploy".into(),
        ));
    }
    Ok(out)
}

/// The Gateway as owner: deleting it deletes its Deployment and Service. Kubernetes
/// needs the owner's uid, which a manifest read from a folder usually lacks: then there
/// is no owner reference (folder mode only prints the objects).
fn owner(gateway: &Gateway) -> Option<OwnerReference> {
    let uid = gateway.metadata.uid.clone().filter(|u| !u.is_empty())?;
    Some(OwnerReference {
        api_version: format!("{GATEWAY_GROUP}/v1"),
        kind: "Gateway".into(),
        name: gateway.metadata.name.clone().unwrap_or_default(),
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// `<gateway>-<class>` as a Service name (an RFC 1035 label: lowercase letters, digits
/// and `-`, starting with a letter, at most 63 characters): dots become dashes, a name
/// starting with a digit gets a `gw-` prefix, and a long name is cut and suffixed with a
/// hash of the whole, so that two long names stay distinct.
pub fn object_name(gateway: &str, class: &str) -> String {
    let full = format!("{gateway}-{class}");
    let mut name: String = full
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name.insert_str(0, "gw-");
    }
    if name.len() > 63 {
        let mut hash: u32 = 0x811c_9dc5;
        for b in full.bytes() {
            hash ^= u32::from(b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        name.truncate(54);
        name = format!("{}-{hash:08x}", name.trim_end_matches('-'));
    }
    name.trim_end_matches('-').to_string()
}

/// Keeps every Gateway's workload applied, for each catalog `catalogs` publishes: renders,
/// and hands `apply` each object (as JSON) that differs from what it last applied
/// successfully. A Gateway that cannot be deployed is logged with the reason; a failed
/// apply is retried on the next change or after [`RETRY`], whichever comes first.
/// Removal is Kubernetes' garbage collection (the Gateway owns what is applied). Runs
/// until `catalogs` closes. (`apply` is the Kubernetes client's server-side apply; this
/// module does not know it.)
pub async fn provision<F, Fut>(
    mut catalogs: tokio::sync::watch::Receiver<std::sync::Arc<crate::snapshot::Catalog>>,
    options: RenderOptions,
    apply: F,
) where
    F: Fn(serde_json::Value) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut applied: BTreeMap<(ObjectRef, &'static str), serde_json::Value> = BTreeMap::new();
    let mut reported: BTreeMap<ObjectRef, String> = BTreeMap::new();
    loop {
        let objects = catalogs.borrow_and_update().objects.clone();
        let mut failed = false;
        for rendered in render(&objects, &options) {
            let workload = match rendered.result {
                Ok(w) => w,
                Err(e) => {
                    // Said once per distinct reason, not at every change.
                    if reported.get(&rendered.gateway) != Some(&e.to_string()) {
                        tracing::warn!(error = %e, "gateway not deployed");
                        reported.insert(rendered.gateway.clone(), e.to_string());
                    }
                    continue;
                }
            };
            reported.remove(&rendered.gateway);
            let objects = [
                ("Deployment", serde_json::to_value(&workload.deployment)),
                ("Service", serde_json::to_value(&workload.service)),
            ];
            for (kind, value) in objects {
                let Ok(value) = value else { continue };
                let key = (rendered.gateway.clone(), kind);
                if applied.get(&key) == Some(&value) {
                    continue;
                }
                match apply(value.clone()).await {
                    Ok(()) => {
                        tracing::info!(gateway = %rendered.gateway, kind, "gateway workload applied");
                        applied.insert(key, value);
                    }
                    Err(e) => {
                        tracing::warn!(gateway = %rendered.gateway, kind, error = %e, "cannot apply the gateway workload; will retry");
                        failed = true;
                    }
                }
            }
        }
        let changed = if failed {
            tokio::select! {
                changed = catalogs.changed() => changed,
                () = tokio::time::sleep(RETRY) => Ok(()),
            }
        } else {
            catalogs.changed().await
        };
        if changed.is_err() {
            return;
        }
    }
}

/// How soon a failed apply is retried when nothing changes meanwhile.
pub const RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// The rendered objects as a multi-document YAML stream (`kubectl apply -f -` reads it),
/// each Gateway's Deployment then Service, preceded by a comment naming the Gateway.
pub fn to_yaml(rendered: &[Rendered]) -> Result<String, serde_norway::Error> {
    let mut documents = Vec::new();
    for r in rendered {
        let Ok(workload) = &r.result else { continue };
        documents.push(format!(
            "# {}\n{}",
            r.gateway,
            serde_norway::to_string(&workload.deployment)?
        ));
        documents.push(serde_norway::to_string(&workload.service)?);
    }
    Ok(documents.join("---\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(port: u16) -> std::sync::Arc<crate::snapshot::Catalog> {
        let mut objects = Objects::default();
        objects.insert(
            serde_json::json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                "metadata": {"name": "agentmesh"},
                "spec": {"controllerName": CONTROLLER_NAME}
            }),
            "test",
        );
        objects.insert(
            serde_json::json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
                "spec": {"gatewayClassName": "agentmesh",
                         "listeners": [{"name": "http", "protocol": "HTTP", "port": port}]}
            }),
            "test",
        );
        std::sync::Arc::new(crate::snapshot::Catalog {
            objects: std::sync::Arc::new(objects),
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn provision_applies_each_object_once_and_again_when_it_changes() {
        let (publish, catalogs) = tokio::sync::watch::channel(catalog(8080));
        let (applied_tx, mut applied) = tokio::sync::mpsc::unbounded_channel();
        let options = RenderOptions {
            image: "proxy:test".into(),
            xds_address: "http://controller:16010".into(),
            service_type: "ClusterIP".into(),
            token_audience: TOKEN_AUDIENCE.into(),
        };
        let task = tokio::spawn(provision(catalogs, options, move |object| {
            let tx = applied_tx.clone();
            async move {
                let _ = tx.send(object);
                Ok(())
            }
        }));
        let kinds = |objects: &[serde_json::Value]| {
            objects
                .iter()
                .map(|o| o["kind"].as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        };
        let mut first = vec![applied.recv().await.expect("applied")];
        first.push(applied.recv().await.expect("applied"));
        assert_eq!(kinds(&first), ["Deployment", "Service"]);
        assert_eq!(first[1]["spec"]["ports"][0]["port"], 8080);
        // The same objects again: nothing is applied. A new port: both change.
        publish.send_replace(catalog(8080));
        publish.send_replace(catalog(9090));
        let mut second = vec![applied.recv().await.expect("applied")];
        second.push(applied.recv().await.expect("applied"));
        assert_eq!(kinds(&second), ["Deployment", "Service"]);
        assert_eq!(second[1]["spec"]["ports"][0]["port"], 9090);
        drop(publish);
        task.await.expect("provision ends with its catalogs");
        assert!(applied.try_recv().is_err(), "applied more than needed");
    }

    #[test]
    fn object_names_are_valid_service_names() {
        assert_eq!(object_name("web", "agentmesh"), "web-agentmesh");
        assert_eq!(object_name("api.v2", "agentmesh"), "api-v2-agentmesh");
        assert_eq!(object_name("1st", "agentmesh"), "gw-1st-agentmesh");
        let long_a = object_name(&"a".repeat(80), "agentmesh");
        let long_b = object_name(&format!("{}b", "a".repeat(79)), "agentmesh");
        assert_eq!(long_a.len(), 63);
        assert_ne!(long_a, long_b);
        for name in [&long_a, &long_b] {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            );
        }
    }
}
