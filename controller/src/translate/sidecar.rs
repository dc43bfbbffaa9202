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
//!   namespace's, then the native document's); the first match decides.
//! - `traffic` with AgentBackend `targetRefs`: a Policy on each backend (which the pod
//!   receives); without `targetRefs`: a Policy on every listener of the sidecar's
//!   outbound binds.
//!
//! This is a pure function of its inputs, so a pod's resources change exactly when
//! something that selects it changes, and the ADS server sends nothing to other pods.

use std::collections::BTreeMap;

use agentmesh_proto::config::v1 as pb;
use agentmesh_proxy::config::file::Resources;

use crate::crd::{self, AgentPolicy};
use crate::objects::Objects;

use super::agent;

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
    let mut backends: BTreeMap<String, pb::Backend> = BTreeMap::new();
    for policy in &policies {
        let policy_name = policy.metadata.name.clone().unwrap_or_default();
        let mut targets = Vec::new();
        for target in &policy.spec.target_refs {
            // Validation allows only AgentBackend targets next to a workloadSelector.
            if let Ok(backend) = agent::resolve_backend_ref(objects, namespace, &target.name) {
                targets.push(pb::policy_target::Kind::Backend(backend.key.clone()));
                backends.insert(backend.key.clone(), backend);
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
            tls: pb::EgressTls::Passthrough as i32,
            ca_file: String::new(),
            originate_port: 0,
        }));
    }
    rules.append(&mut settings.egress);
    settings.egress = rules;
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
