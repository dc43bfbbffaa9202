//! agentmesh's own kinds: `AgentBackend` becomes an `mcp` Backend resource (targets from
//! static URLs and from the Services its selectors pick), `AgentPolicy` with `targetRefs`
//! becomes Policy resources on the Gateways' listeners, routes and backends it names.
//! (Policies with a `workloadSelector` are sidecar policies: see [`super::sidecar`].)
//!
//! For the Gateway API translator, [`resolve_backend_ref`] turns an HTTPRoute backendRef
//! of group `agentmesh.dev`, kind `AgentBackend` into the Backend resource to serve, keyed
//! by [`backend_key`].
//!
//! This module must not emit a resource the proxy would reject: an AgentBackend that
//! resolves to no target is left out (and says why in its status) rather than sent as an
//! empty federation the proxy would NACK.

use agentmesh_proto::config::v1 as pb;
use k8s_openapi::api::core::v1::Service;

use crate::crd::{self, AgentBackend, AgentBackendKind, AgentPolicy, McpFederation};
use crate::objects::{GATEWAY_GROUP, ObjectRef, Objects};
use crate::status::Condition;

use super::Translation;

/// The path of a selected Service's MCP endpoint when the selector does not say.
pub const DEFAULT_MCP_PATH: &str = "/mcp";

/// The key of an AgentBackend's Backend resource: `agentbackend/<namespace>/<name>`.
pub fn backend_key(namespace: &str, name: &str) -> String {
    format!("agentbackend/{namespace}/{name}")
}

/// A reference that could not be resolved: a Gateway API condition reason and a message
/// naming the object and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// `BackendNotFound`, `Invalid`, …
    pub reason: &'static str,
    /// A sentence.
    pub message: String,
}

/// Resolves a route's backendRef to the AgentBackend `namespace/name` (the caller has
/// already checked cross-namespace permission with ReferenceGrants): the Backend resource
/// to serve, keyed by [`backend_key`], or why there is none.
pub fn resolve_backend_ref(
    objects: &Objects,
    namespace: &str,
    name: &str,
) -> Result<pb::Backend, Unresolved> {
    let found = objects.agent_backends.iter().find(|b| {
        b.metadata.namespace.as_deref() == Some(namespace)
            && b.metadata.name.as_deref() == Some(name)
    });
    let Some(backend) = found else {
        return Err(Unresolved {
            reason: "BackendNotFound",
            message: format!("AgentBackend \"{namespace}/{name}\" does not exist"),
        });
    };
    let built = build(objects, backend);
    match built.backend {
        Some(b) => Ok(b),
        None => Err(Unresolved {
            reason: "BackendNotFound",
            message: format!(
                "AgentBackend \"{namespace}/{name}\" is not served: {}",
                built.problems.join("; ")
            ),
        }),
    }
}

/// What building one AgentBackend gave.
#[derive(Debug, Clone, Default)]
struct Built {
    /// The Backend resource, when the object is valid and has at least one target.
    backend: Option<pb::Backend>,
    /// Whether the spec itself is invalid (Accepted=False) rather than its references.
    invalid: bool,
    /// What is wrong, each naming the field.
    problems: Vec<String>,
}

/// Builds the Backend resource of `backend`.
fn build(objects: &Objects, backend: &AgentBackend) -> Built {
    if let Err(e) = backend.spec.validate() {
        return Built {
            backend: None,
            invalid: true,
            problems: vec![e.to_string()],
        };
    }
    let namespace = backend.metadata.namespace.clone().unwrap_or_default();
    let name = backend.metadata.name.clone().unwrap_or_default();
    let Ok(AgentBackendKind::Mcp(mcp)) = backend.spec.kind() else {
        return Built::default();
    };
    let mut problems = Vec::new();
    let targets = mcp_targets(objects, &namespace, mcp, &mut problems);
    if targets.is_empty() {
        problems.push("field spec.mcp: no target: no Service matches `serviceSelectors`".into());
        return Built {
            backend: None,
            invalid: false,
            problems,
        };
    }
    let spec = pb::McpBackend {
        targets,
        prefix_mode: match mcp.prefix_mode {
            None | Some(crd::McpPrefixMode::WhenMultiple) => pb::McpPrefixMode::WhenMultiple,
            Some(crd::McpPrefixMode::Always) => pb::McpPrefixMode::Always,
            Some(crd::McpPrefixMode::Never) => pb::McpPrefixMode::Never,
        } as i32,
        failure_mode: match mcp.failure_mode {
            None | Some(crd::McpFailureMode::FailClosed) => pb::McpFailureMode::FailClosed,
            Some(crd::McpFailureMode::FailOpen) => pb::McpFailureMode::FailOpen,
        } as i32,
        sessions: mcp
            .session_idle_timeout
            .as_deref()
            .and_then(|d| crd::parse_duration(d).ok())
            .map(|d| pb::McpSessions {
                key_file: String::new(),
                idle_timeout: Some(proto_duration(d)),
                ..Default::default()
            }),
        allowed_origins: mcp.allowed_origins.clone(),
    };
    let key = backend_key(&namespace, &name);
    Built {
        backend: Some(pb::Backend {
            key: key.clone(),
            name: key,
            kind: Some(pb::backend::Kind::Mcp(spec)),
            policies: None,
        }),
        invalid: false,
        problems,
    }
}

/// The static targets, then one per selected Service port (Services in name order).
fn mcp_targets(
    objects: &Objects,
    namespace: &str,
    mcp: &McpFederation,
    problems: &mut Vec<String>,
) -> Vec<pb::McpTarget> {
    let mut targets: Vec<pb::McpTarget> = mcp
        .targets
        .iter()
        .map(|t| pb::McpTarget {
            name: t.name.clone(),
            transport: Some(pb::mcp_target::Transport::Url(t.url.clone())),
        })
        .collect();
    let mut seen: Vec<(String, i32)> = Vec::new();
    for (i, selector) in mcp.service_selectors.iter().enumerate() {
        let field = format!("spec.mcp.serviceSelectors[{i}]");
        let path = selector.path.as_deref().unwrap_or(DEFAULT_MCP_PATH);
        for service in &objects.services {
            if service.metadata.namespace.as_deref() != Some(namespace) {
                continue;
            }
            let labels = service.metadata.labels.clone().unwrap_or_default();
            if !selector
                .match_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
            {
                continue;
            }
            let service_name = service.metadata.name.clone().unwrap_or_default();
            let ports = match selected_ports(service, selector) {
                Ok(p) => p,
                Err(why) => {
                    if selector.app_protocol.is_none() {
                        problems.push(format!("field {field}: Service {service_name:?} {why}"));
                    }
                    continue;
                }
            };
            let several = ports.len() > 1;
            for port in ports {
                if seen.contains(&(service_name.clone(), port)) {
                    continue;
                }
                seen.push((service_name.clone(), port));
                let target_name = if several {
                    format!("{service_name}-{port}")
                } else {
                    service_name.clone()
                };
                if !crd::valid_target_name(&target_name)
                    || targets.iter().any(|t| t.name == target_name)
                {
                    problems.push(format!(
                        "field {field}: Service {service_name:?} port {port}: target name {target_name:?} is invalid or already used"
                    ));
                    continue;
                }
                targets.push(pb::McpTarget {
                    name: target_name,
                    transport: Some(pb::mcp_target::Transport::Url(format!(
                        "http://{}{path}",
                        service_address(service, namespace, port)
                    ))),
                });
            }
        }
    }
    targets
}

/// The ports of `service` a selector takes, or why none.
fn selected_ports(
    service: &Service,
    selector: &crd::McpServiceSelector,
) -> Result<Vec<i32>, String> {
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let chosen: Vec<i32> = ports
        .iter()
        .filter(|p| selector.port.is_none_or(|want| p.port == want))
        .filter(|p| {
            selector
                .app_protocol
                .as_ref()
                .is_none_or(|want| p.app_protocol.as_ref() == Some(want))
        })
        .map(|p| p.port)
        .collect();
    match chosen.len() {
        0 => Err(match (selector.port, &selector.app_protocol) {
            (Some(port), _) => format!("has no port {port}"),
            (None, Some(a)) => format!("has no port with appProtocol {a:?}"),
            (None, None) => "has no ports".into(),
        }),
        1 => Ok(chosen),
        _ if selector.port.is_none() && selector.app_protocol.is_none() => {
            Err("has several ports: choose one with `port` or `appProtocol`".into())
        }
        _ => Ok(chosen),
    }
}

/// `clusterIP:port` when the Service has a cluster IP, else its cluster DNS name.
pub fn service_address(service: &Service, namespace: &str, port: i32) -> String {
    let cluster_ip = service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok());
    match cluster_ip {
        Some(ip) if ip.contains(':') => format!("[{ip}]:{port}"),
        Some(ip) => format!("{ip}:{port}"),
        None => format!(
            "{}.{namespace}.svc.cluster.local:{port}",
            service.metadata.name.as_deref().unwrap_or_default()
        ),
    }
}

/// A protobuf duration.
pub fn proto_duration(d: std::time::Duration) -> pbjson_types::Duration {
    pbjson_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or_default(),
    }
}

/// The proxy's PolicySpec for an AgentPolicy's `traffic` (already validated).
pub fn policy_spec(traffic: &crd::TrafficPolicy) -> pb::PolicySpec {
    let duration = |d: &Option<String>| {
        d.as_deref()
            .and_then(|d| crd::parse_duration(d).ok())
            .map(proto_duration)
    };
    let headers = |m: &crd::HeaderModifier| pb::HeaderModifier {
        set: m
            .set
            .iter()
            .map(|h| pb::Header {
                name: h.name.clone(),
                value: h.value.clone(),
            })
            .collect(),
        add: m
            .add
            .iter()
            .map(|h| pb::Header {
                name: h.name.clone(),
                value: h.value.clone(),
            })
            .collect(),
        remove: m.remove.clone(),
    };
    pb::PolicySpec {
        request_headers: traffic.request_headers.as_ref().map(headers),
        response_headers: traffic.response_headers.as_ref().map(headers),
        redirect: None,
        url_rewrite: None,
        direct_response: traffic
            .direct_response
            .as_ref()
            .map(|d| pb::DirectResponse {
                status: d.status,
                body: d.body.clone(),
            }),
        cors: traffic.cors.as_ref().map(|c| pb::Cors {
            allow_origins: c.allow_origins.clone(),
            allow_methods: c.allow_methods.clone(),
            allow_headers: c.allow_headers.clone(),
            expose_headers: c.expose_headers.clone(),
            allow_credentials: c.allow_credentials,
            max_age: duration(&c.max_age),
        }),
        timeouts: traffic.timeouts.as_ref().map(|t| pb::Timeouts {
            request: duration(&t.request),
            backend_request: duration(&t.backend_request),
        }),
        retry: traffic.retry.as_ref().map(|r| pb::Retry {
            attempts: r.attempts,
            backoff: duration(&r.backoff),
            codes: r.codes.clone(),
            on_connect_error: None,
        }),
        mirror: None,
    }
}

/// Status of every AgentBackend and AgentPolicy; policies with `targetRefs` (and no
/// `workloadSelector`) attached to the Gateways' resources. Runs after the Gateway API
/// translation, whose resources it attaches to.
pub fn translate(objects: &Objects, out: &mut Translation) {
    for backend in &objects.agent_backends {
        let generation = backend.metadata.generation.unwrap_or_default();
        let built = build(objects, backend);
        let conditions = &mut out
            .status
            .entry(ObjectRef::of("AgentBackend", &backend.metadata))
            .conditions;
        if built.invalid {
            conditions.push(Condition::no(
                "Accepted",
                "Invalid",
                built.problems.join("; "),
                generation,
            ));
            continue;
        }
        conditions.push(Condition::yes("Accepted", "Accepted", "valid", generation));
        conditions.push(if built.problems.is_empty() {
            Condition::yes(
                "ResolvedRefs",
                "ResolvedRefs",
                "every target resolved",
                generation,
            )
        } else {
            let reason = if built.backend.is_some() {
                "PartiallyResolved"
            } else {
                "BackendNotFound"
            };
            Condition::no(
                "ResolvedRefs",
                reason,
                built.problems.join("; "),
                generation,
            )
        });
    }
    for policy in &objects.agent_policies {
        attach_policy(objects, policy, out);
    }
}

/// Validates one AgentPolicy, attaches it to the gateways it targets, and writes its
/// status.
fn attach_policy(objects: &Objects, policy: &AgentPolicy, out: &mut Translation) {
    let generation = policy.metadata.generation.unwrap_or_default();
    let reference = ObjectRef::of("AgentPolicy", &policy.metadata);
    if let Err(e) = policy.spec.validate() {
        out.status.entry(reference).conditions.push(Condition::no(
            "Accepted",
            "Invalid",
            e.to_string(),
            generation,
        ));
        return;
    }
    let namespace = reference.namespace.clone();
    let mut missing = Vec::new();
    for (i, target) in policy.spec.target_refs.iter().enumerate() {
        let exists = match target.kind.as_str() {
            "Gateway" => objects.gateways.iter().any(|g| {
                g.metadata.namespace.as_deref() == Some(&namespace)
                    && g.metadata.name.as_deref() == Some(&target.name)
            }),
            "HTTPRoute" => objects.http_routes.iter().any(|r| {
                r.metadata.namespace.as_deref() == Some(&namespace)
                    && r.metadata.name.as_deref() == Some(&target.name)
            }),
            _ => objects.agent_backends.iter().any(|b| {
                b.metadata.namespace.as_deref() == Some(&namespace)
                    && b.metadata.name.as_deref() == Some(&target.name)
            }),
        };
        if !exists {
            missing.push(format!(
                "field spec.targetRefs[{i}]: {} \"{namespace}/{}\" does not exist",
                target.kind, target.name
            ));
        }
    }
    if policy.spec.workload_selector.is_none()
        && let Some(traffic) = &policy.spec.traffic
    {
        let spec = policy_spec(traffic);
        let policy_name = reference.name.clone();
        for target in &policy.spec.target_refs {
            for (gateway, resources) in &mut out.gateways {
                let targets: Vec<pb::policy_target::Kind> = match target.kind.as_str() {
                    "Gateway"
                        if target.group == GATEWAY_GROUP
                            && gateway.namespace == namespace
                            && gateway.name == target.name =>
                    {
                        resources
                            .listeners
                            .iter()
                            .map(|l| pb::policy_target::Kind::Listener(l.key.clone()))
                            .collect()
                    }
                    "HTTPRoute" => {
                        let prefix = format!("httproute/{namespace}/{}/", target.name);
                        resources
                            .routes
                            .iter()
                            .filter(|r| r.name.starts_with(&prefix))
                            .map(|r| pb::policy_target::Kind::Route(r.key.clone()))
                            .collect()
                    }
                    "AgentBackend" => {
                        let key = backend_key(&namespace, &target.name);
                        resources
                            .backends
                            .iter()
                            .filter(|b| b.key == key)
                            .map(|b| pb::policy_target::Kind::Backend(b.key.clone()))
                            .collect()
                    }
                    _ => Vec::new(),
                };
                for kind in targets {
                    resources.policies.push(pb::Policy {
                        key: policy_key(&namespace, &policy_name, &kind),
                        name: String::new(),
                        target: Some(pb::PolicyTarget { kind: Some(kind) }),
                        spec: Some(spec.clone()),
                    });
                }
            }
        }
    }
    let conditions = &mut out.status.entry(reference).conditions;
    conditions.push(Condition::yes("Accepted", "Accepted", "valid", generation));
    if !policy.spec.target_refs.is_empty() {
        conditions.push(if missing.is_empty() {
            Condition::yes(
                "ResolvedRefs",
                "ResolvedRefs",
                "every target exists",
                generation,
            )
        } else {
            Condition::no(
                "ResolvedRefs",
                "TargetNotFound",
                missing.join("; "),
                generation,
            )
        });
    }
}

/// The key of the Policy resource an AgentPolicy puts on one target:
/// `agentpolicy/<ns>/<policy>/<listener|route|backend>/<target key>`.
pub fn policy_key(namespace: &str, policy: &str, target: &pb::policy_target::Kind) -> String {
    let (kind, key) = match target {
        pb::policy_target::Kind::Listener(k) => ("listener", k),
        pb::policy_target::Kind::Route(k) => ("route", k),
        pb::policy_target::Kind::Backend(k) => ("backend", k),
    };
    format!("agentpolicy/{namespace}/{policy}/{kind}/{key}")
}
