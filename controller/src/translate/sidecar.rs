//! Per-pod scoping: the resources of one pod's sidecar.
//!
//! A sidecar (node `sidecar~<ip>~<pod>.<namespace>`) receives the folder's native config
//! documents (shared by every standalone and sidecar node) plus what its pod is selected
//! by: the valid AgentPolicies of its namespace whose `workloadSelector` matches the pod's
//! labels (`{}` selects every pod of the namespace, and is all a pod unknown to the
//! controller gets), and the AgentBackends those policies target.
//!
//! How selected policies combine, from general to specific: namespace-wide policies
//! (`workloadSelector: {}`) first, then those with labels, each group in name order.
//! - `outbound.default`: the last one set wins (a pod's own policy overrides its
//!   namespace's, which overrides the native document's).
//! - `outbound.egress`: rules are tried specific first (a pod's policies' rules, then the
//!   namespace's, then the native document's); the first match decides. A rule with
//!   `tls: Intercept` (its `caBundle` inline as `caPem`) gives the pod a mesh CA issued
//!   by the controller (`meshCa.controller`), unless the native document names one.
//! - `traffic` with AgentBackend `targetRefs`: a Policy on each backend (which the pod
//!   receives); without `targetRefs`: a Policy on every listener of the sidecar's
//!   outbound binds.
//!
//! An AgentBackend that a policy selecting the pod names in `targetRefs` is one the pod
//! may use, and its sidecar serves it: the pod's calls to `http://<name>.<namespace>`
//! (also `<name>.<namespace>.svc`, `<name>.<namespace>.svc.cluster.local`, and `<name>`
//! from its own namespace) on port 80 are routed to the AgentBackend (the MCP federation
//! runs in the sidecar). The route is a listener of the outbound bind on port 80 (the
//! native document's, when it has one for any address; else one of its own,
//! [`AGENT_BACKEND_BIND`]). The name must resolve for the app to connect: a Service of
//! the AgentBackend's name (selector-less is enough) gives it a cluster IP; the sidecar
//! captures the connection and never sends it there.
//!
//! This is a pure function of its inputs, so a pod's resources change exactly when
//! something that selects it changes, and the ADS server sends nothing to other pods.

use std::collections::BTreeMap;

use agentmesh_proto::config::v1 as pb;
use agentmesh_proxy::config::file::Resources;

use crate::crd::{self, AgentPolicy};
use crate::objects::Objects;

use super::agent;

/// The key of the outbound bind the sidecar serves AgentBackends on, when the native
/// document has no outbound bind on [`AGENT_BACKEND_PORT`] for any address.
pub const AGENT_BACKEND_BIND: &str = "agentbackends-80";

/// The port the pod's app calls an AgentBackend on (`http://<name>.<namespace>`).
pub const AGENT_BACKEND_PORT: u32 = 80;

/// The resources of the sidecar of pod `pod` in `namespace` (see the module comment).
pub fn pod_resources(
    objects: &Objects,
    native: &Resources,
    namespace: &str,
    pod: &str,
) -> Resources {
    let labels = objects
        .pods
        .iter()
        .find(|p| {
            p.metadata.namespace.as_deref() == Some(namespace)
                && p.metadata.name.as_deref() == Some(pod)
        })
        .map(|p| p.metadata.labels.clone().unwrap_or_default());
    let mut out = native.clone();
    let policies = selecting_policies(objects, namespace, labels.as_ref());
    if policies.is_empty() {
        return out;
    }
    apply_outbound(&policies, &mut out);
    // The AgentBackends the pod may use: those its policies target. Each gets a route on
    // the pod's outbound bind, before policies without targets are put on every outbound
    // listener (they govern these calls too).
    let mut backends: BTreeMap<String, pb::Backend> = BTreeMap::new();
    for policy in &policies {
        for target in &policy.spec.target_refs {
            // Validation allows only AgentBackend targets next to a workloadSelector.
            if let Ok(backend) = agent::resolve_backend_ref(objects, namespace, &target.name) {
                backends.insert(backend.key.clone(), backend);
            }
        }
    }
    for policy in &policies {
        for target in &policy.spec.target_refs {
            if backends.contains_key(&agent::backend_key(namespace, &target.name)) {
                route_agent_backend(&mut out, namespace, &target.name);
            }
        }
    }
    let outbound_listeners: Vec<String> = {
        let binds = out
            .sidecar
            .as_ref()
            .map(|s| s.outbound_binds.clone())
            .unwrap_or_default();
        out.listeners
            .iter()
            .filter(|l| binds.contains(&l.bind_key))
            .map(|l| l.key.clone())
            .collect()
    };
    for policy in &policies {
        let policy_name = policy.metadata.name.clone().unwrap_or_default();
        let mut targets = Vec::new();
        for target in &policy.spec.target_refs {
            let key = agent::backend_key(namespace, &target.name);
            if backends.contains_key(&key) {
                targets.push(pb::policy_target::Kind::Backend(key));
            }
        }
        let Some(traffic) = &policy.spec.traffic else {
            continue;
        };
        if policy.spec.target_refs.is_empty() {
            targets.extend(
                outbound_listeners
                    .iter()
                    .cloned()
                    .map(pb::policy_target::Kind::Listener),
            );
        }
        let spec = agent::policy_spec(traffic);
        for kind in targets {
            out.policies.push(pb::Policy {
                key: agent::policy_key(namespace, &policy_name, &kind),
                name: String::new(),
                target: Some(pb::PolicyTarget { kind: Some(kind) }),
                spec: Some(spec.clone()),
            });
        }
    }
    out.backends.extend(
        backends
            .into_values()
            .filter(|b| !native.backends.iter().any(|n| n.key == b.key)),
    );
    out
}

/// Routes the pod's calls to AgentBackend `namespace/name` (see the module comment) to
/// its Backend resource: a listener for its names on the outbound bind of port
/// [`AGENT_BACKEND_PORT`], created (and made an outbound bind) when there is none. Does
/// nothing when the listener is there already.
fn route_agent_backend(out: &mut Resources, namespace: &str, name: &str) {
    let settings = out.sidecar.get_or_insert_with(Default::default);
    let existing = out
        .binds
        .iter()
        .find(|b| {
            settings.outbound_binds.contains(&b.key)
                && b.port == AGENT_BACKEND_PORT
                && matches!(b.address.as_str(), "" | "0.0.0.0" | "::")
        })
        .map(|b| b.key.clone());
    let bind_key = match existing {
        Some(key) => key,
        None => {
            if !out.binds.iter().any(|b| b.key == AGENT_BACKEND_BIND) {
                out.binds.push(pb::Bind {
                    key: AGENT_BACKEND_BIND.into(),
                    name: AGENT_BACKEND_BIND.into(),
                    address: "0.0.0.0".into(),
                    port: AGENT_BACKEND_PORT,
                    listeners: Vec::new(),
                });
                settings.outbound_binds.push(AGENT_BACKEND_BIND.into());
            }
            AGENT_BACKEND_BIND.into()
        }
    };
    let backend = agent::backend_key(namespace, name);
    let listener_key = format!("{bind_key}/{backend}");
    if out.listeners.iter().any(|l| l.key == listener_key) {
        return;
    }
    let mut hostnames = vec![
        format!("{name}.{namespace}"),
        format!("{name}.{namespace}.svc"),
        format!("{name}.{namespace}.svc.cluster.local"),
    ];
    // From the pod's own namespace (AgentBackends are the policy's, so the pod's).
    hostnames.insert(0, name.to_string());
    out.listeners.push(pb::Listener {
        key: listener_key.clone(),
        name: backend.clone(),
        bind_key,
        hostnames,
        protocol: pb::ListenerProtocol::Http as i32,
        tls: None,
        routes: Vec::new(),
        policies: None,
    });
    out.routes.push(pb::Route {
        key: format!("{listener_key}/all"),
        name: "all".into(),
        listener_key,
        hostnames: Vec::new(),
        matches: Vec::new(),
        backends: vec![pb::RouteBackend {
            backend,
            weight: None,
        }],
        policies: None,
    });
}

/// The valid AgentPolicies of `namespace` selecting a pod with `labels` (`None`: a pod
/// the controller does not know, selected only by namespace-wide policies), general
/// first.
fn selecting_policies<'a>(
    objects: &'a Objects,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> Vec<&'a AgentPolicy> {
    let mut selected: Vec<(bool, &AgentPolicy)> = objects
        .agent_policies
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .filter(|p| p.spec.validate().is_ok())
        .filter_map(|p| {
            let selector = p.spec.workload_selector.as_ref()?;
            let wide = selector.is_namespace_wide();
            let matches = match labels {
                Some(labels) => selector.matches(labels),
                None => wide,
            };
            matches.then_some((!wide, p))
        })
        .collect();
    // Stable: objects are already in name order.
    selected.sort_by_key(|(specific, _)| *specific);
    selected.into_iter().map(|(_, p)| p).collect()
}

/// Applies the selected policies' `outbound` sections to the sidecar settings.
fn apply_outbound(policies: &[&AgentPolicy], out: &mut Resources) {
    if policies.iter().all(|p| p.spec.outbound.is_none()) {
        return;
    }
    let settings = out.sidecar.get_or_insert_with(Default::default);
    let mut rules = Vec::new();
    for policy in policies.iter().rev() {
        let Some(outbound) = &policy.spec.outbound else {
            continue;
        };
        let policy_name = policy.metadata.name.as_deref().unwrap_or_default();
        rules.extend(outbound.egress.iter().map(|r| pb::EgressRule {
            name: format!("{policy_name}/{}", r.name),
            hostnames: r.hostnames.clone(),
            addresses: r.addresses.clone(),
            ports: r.ports.clone(),
            action: action(r.action) as i32,
            tls: match r.tls.unwrap_or_default() {
                crd::EgressTls::Passthrough => pb::EgressTls::Passthrough,
                crd::EgressTls::Intercept => pb::EgressTls::Intercept,
            } as i32,
            ca_file: String::new(),
            originate_port: 0,
            ca_pem: r.ca_bundle.clone().unwrap_or_default(),
        }));
    }
    rules.append(&mut settings.egress);
    settings.egress = rules;
    // Intercepted TLS needs a CA to mint with. The native document may name files (a
    // folder-mode setup); otherwise the sidecar asks the controller for an intermediate
    // constrained to what these rules intercept (`crate::mesh_ca`), so no CA key is ever
    // sent to a pod.
    let intercepts = settings
        .egress
        .iter()
        .any(|r| r.tls == pb::EgressTls::Intercept as i32);
    if intercepts && settings.mesh_ca.is_none() {
        settings.mesh_ca = Some(pb::MeshCa {
            controller: Some(pb::ControllerIssuedCa {}),
            ..Default::default()
        });
    }
    for policy in policies {
        if let Some(default) = policy.spec.outbound.as_ref().and_then(|o| o.default) {
            settings.outbound_default = action(default) as i32;
        }
    }
}

fn action(a: crd::OutboundAction) -> pb::OutboundAction {
    match a {
        crd::OutboundAction::Allow => pb::OutboundAction::Allow,
        crd::OutboundAction::Deny => pb::OutboundAction::Deny,
    }
}
