//! Gateway API translation: GatewayClass, Gateway and routes into the resources of each
//! Gateway of our class.
//!
//! The steps, each in its own module:
//!
//! 1. [`listeners`]: the GatewayClasses whose `controllerName` is ours are accepted; each
//!    Gateway of such a class is planned: its listeners are validated (protocol, hostname,
//!    TLS certificates, allowed route kinds and namespaces) and checked for conflicts (two
//!    listeners on one port with different protocols, or with the same hostname). Every
//!    valid listener becomes a proxy `Listener`, grouped by port into `Bind`s.
//! 2. [`attach`]: each route's `parentRefs` are matched against those listeners
//!    (`sectionName`, `port`, `allowedRoutes`, hostname intersection).
//! 3. [`http`] (HTTPRoute) and [`grpc`] (GRPCRoute): each rule of an attached route becomes
//!    one proxy `Route` per listener, its filters and timeouts one `Policy`, its
//!    backendRefs resolved by [`backends`] into `Backend`s. [`stream`] (TLSRoute on TLS
//!    passthrough listeners, TCPRoute on TCP listeners): a route becomes one proxy route
//!    per listener forwarding bytes to its backends.
//! 4. The status of every object is written: GatewayClass (Accepted), Gateway (Accepted,
//!    Programmed), each listener (Accepted, Programmed, ResolvedRefs, Conflicted,
//!    attachedRoutes) and each route towards each of its parents (Accepted, ResolvedRefs,
//!    PartiallyInvalid when some rules were dropped).
//!
//! Resource keys are readable and stable: a bind is `<ns>/<gateway>/<port>`, a listener
//! `<ns>/<gateway>/<listener>`, a route `<listener key>/<kind>/<route ns>/<route>/<rule>`
//! (the rule index zero-padded, so that keys sort in rule order: the proxy breaks
//! precedence ties by key, as the Gateway API breaks them by route name and rule order),
//! a backend `<ns>/<service>:<port>`.
//!
//! This module must not produce a resource the proxy would reject: whatever the proxy's
//! compiler checks (paths, regular expressions, header names, hostnames) is checked here
//! first with the proxy's own functions, and the rule or listener at fault is left out
//! and reported in status instead, so one bad object never stops the others.

mod attach;
mod backends;
mod filters;
mod grpc;
mod http;
mod listeners;
mod stream;
mod tls;

use std::collections::BTreeMap;

use agentmesh_proto::config::v1 as pb;
use agentmesh_proxy::config::file::Resources;

use crate::objects::{ObjectRef, Objects};
use crate::status::{Condition, ListenerStatus, ParentStatus, StatusReport};

use super::Translation;

/// Translates the Gateway API objects of `objects` into `out`.
pub fn translate(objects: &Objects, out: &mut Translation) {
    let grants = backends::Grants::new(objects);
    let classes = listeners::accept_classes(objects, &mut out.status);
    let mut gateways: Vec<GatewayState> = objects
        .gateways
        .iter()
        .filter(|g| classes.contains(g.spec.gateway_class_name.as_str()))
        .map(|g| listeners::plan(g, objects, &grants))
        .collect();
    for route in &objects.http_routes {
        http::translate(route, objects, &grants, &mut gateways, &mut out.status);
    }
    for route in &objects.grpc_routes {
        grpc::translate(route, objects, &grants, &mut gateways, &mut out.status);
    }
    for route in &objects.tls_routes {
        stream::translate_tls(route, objects, &grants, &mut gateways, &mut out.status);
    }
    for route in &objects.tcp_routes {
        stream::translate_tcp(route, objects, &grants, &mut gateways, &mut out.status);
    }
    for gateway in gateways {
        let (reference, resources) = gateway.finish(&mut out.status);
        out.gateways.insert(reference, resources);
    }
}

/// A Gateway of our class, while its routes are being attached.
#[derive(Debug)]
struct GatewayState {
    /// The Gateway.
    reference: ObjectRef,
    /// Gateway-level conditions (Accepted, Programmed).
    conditions: Vec<Condition>,
    /// Its listeners, in spec order.
    listeners: Vec<ListenerState>,
    /// Binds and listeners of the valid listeners; routes and policies as routes attach.
    resources: Resources,
    /// Backends by key (shared by every route that sends to the same Service port).
    backends: BTreeMap<String, pb::Backend>,
}

impl GatewayState {
    /// Writes the status of the Gateway and its listeners, and returns its resources.
    fn finish(self, status: &mut StatusReport) -> (ObjectRef, Resources) {
        let entry = status.entry(self.reference.clone());
        entry.conditions.extend(self.conditions);
        for listener in self.listeners {
            entry.listeners.insert(
                listener.name.clone(),
                ListenerStatus {
                    attached_routes: listener.attached_routes,
                    conditions: listener.conditions,
                },
            );
        }
        let mut resources = self.resources;
        for mut backend in self.backends.into_values() {
            // Resources are flat: a backend's own policy (backendRef filters) is a policy
            // resource targeting it.
            if let Some(spec) = backend.policies.take() {
                resources.policies.push(pb::Policy {
                    key: format!("{}/policy", backend.key),
                    name: String::new(),
                    target: Some(pb::PolicyTarget {
                        kind: Some(pb::policy_target::Kind::Backend(backend.key.clone())),
                    }),
                    spec: Some(spec),
                });
            }
            resources.backends.push(backend);
        }
        (self.reference, resources)
    }
}

/// What a listener speaks, as far as routing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// `HTTP`.
    Http,
    /// `HTTPS` (TLS terminated by the proxy).
    Https,
    /// `TLS` with `tls.mode: Passthrough` (routed by SNI, TLS left to the backend).
    TlsPassthrough,
    /// `TCP` (bytes forwarded as they are).
    Tcp,
}

impl Protocol {
    /// The route kinds a listener of this protocol accepts when `allowedRoutes.kinds` is
    /// not set.
    fn default_kinds(self) -> &'static [&'static str] {
        match self {
            Protocol::Http | Protocol::Https => &["HTTPRoute", "GRPCRoute"],
            Protocol::TlsPassthrough => &["TLSRoute"],
            Protocol::Tcp => &["TCPRoute"],
        }
    }

    /// The protocol's name in a Gateway listener.
    fn name(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Https => "HTTPS",
            Protocol::TlsPassthrough => "TLS",
            Protocol::Tcp => "TCP",
        }
    }
}

/// One listener of a Gateway of our class.
#[derive(Debug)]
struct ListenerState {
    /// `spec.listeners[].name`.
    name: String,
    /// `port`.
    port: i32,
    /// The protocol, when supported.
    protocol: Option<Protocol>,
    /// `hostname` (lowercase), if any.
    hostname: Option<String>,
    /// Key of the proxy listener (`<ns>/<gateway>/<listener>`).
    key: String,
    /// Route kinds it accepts.
    kinds: Vec<String>,
    /// Namespaces it accepts routes from.
    namespaces: attach::AllowedNamespaces,
    /// Whether it is served (valid, not conflicted). Routes attach only to such listeners.
    programmed: bool,
    /// Why it is not served, for route messages.
    problem: String,
    /// Routes attached to it.
    attached_routes: i32,
    /// Its conditions (Accepted, Programmed, ResolvedRefs, Conflicted).
    conditions: Vec<Condition>,
}

/// The identity and generation of a route being translated.
#[derive(Debug, Clone)]
struct RouteMeta {
    /// `HTTPRoute`, `GRPCRoute`.
    kind: &'static str,
    /// The route.
    reference: ObjectRef,
    /// Its `metadata.generation`.
    generation: i64,
}

impl RouteMeta {
    /// The key segment of this route's rule `index` (`httproute/<ns>/<name>/<NN>`).
    fn rule_key(&self, index: usize) -> String {
        format!(
            "{}/{}/{}/{index:02}",
            self.kind.to_ascii_lowercase(),
            self.reference.namespace,
            self.reference.name
        )
    }
}

/// A rule translated independently of the listener it is served on.
#[derive(Debug, Clone)]
struct RulePlan {
    /// Index of the rule in `spec.rules`.
    index: usize,
    /// Its matches (empty: every request).
    matches: Vec<pb::RouteMatch>,
    /// Weighted backends.
    backends: Vec<pb::RouteBackend>,
    /// Filters, timeouts and, when no backend could be resolved, the 500 answer.
    policy: pb::PolicySpec,
}

/// Writes one route's plans onto every listener it attached to.
fn emit_rules(
    meta: &RouteMeta,
    rules: &[RulePlan],
    backends: &BTreeMap<String, pb::Backend>,
    attachments: &[attach::Attachment],
    gateways: &mut [GatewayState],
) {
    for a in attachments {
        let gateway = &mut gateways[a.gateway];
        let listener_key = gateway.listeners[a.listener].key.clone();
        for rule in rules {
            let name = meta.rule_key(rule.index);
            let key = format!("{listener_key}/{name}");
            if rule.policy != pb::PolicySpec::default() {
                gateway.resources.policies.push(pb::Policy {
                    key: format!("{key}/policy"),
                    name: String::new(),
                    target: Some(pb::PolicyTarget {
                        kind: Some(pb::policy_target::Kind::Route(key.clone())),
                    }),
                    spec: Some(rule.policy.clone()),
                });
            }
            gateway.resources.routes.push(pb::Route {
                key,
                name,
                listener_key: listener_key.clone(),
                hostnames: a.hostnames.clone(),
                matches: rule.matches.clone(),
                backends: rule.backends.clone(),
                policies: None,
            });
        }
        for (key, backend) in backends {
            gateway.backends.insert(key.clone(), backend.clone());
        }
    }
}

/// A status problem: a condition reason and a message naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    /// CamelCase reason (`BackendNotFound`, `RefNotPermitted`, …).
    reason: &'static str,
    /// A sentence naming the field.
    message: String,
}

impl Problem {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Problem {
            reason,
            message: message.into(),
        }
    }
}

/// Finishes the per-parent status of a route: Accepted as attachment decided (False with
/// `UnsupportedValue` when no rule is valid), ResolvedRefs from the backend problems,
/// PartiallyInvalid when some rules were dropped.
fn route_parent_status(
    meta: &RouteMeta,
    mut parents: Vec<ParentStatus>,
    valid_rules: usize,
    dropped: &[(usize, String)],
    ref_problems: &[Problem],
    status: &mut StatusReport,
) {
    let generation = meta.generation;
    for parent in &mut parents {
        let accepted = parent
            .conditions
            .iter()
            .any(|c| c.type_ == "Accepted" && c.status == "True");
        if accepted && valid_rules == 0 && !dropped.is_empty() {
            let why = dropped
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            parent.conditions = vec![Condition::no(
                "Accepted",
                "UnsupportedValue",
                format!("no rule is valid: {why}"),
                generation,
            )];
        }
        match ref_problems.first() {
            None => parent.conditions.push(Condition::yes(
                "ResolvedRefs",
                "ResolvedRefs",
                "all references resolved",
                generation,
            )),
            Some(first) => {
                let message = ref_problems
                    .iter()
                    .map(|p| p.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                parent.conditions.push(Condition::no(
                    "ResolvedRefs",
                    first.reason,
                    message,
                    generation,
                ));
            }
        }
        if valid_rules > 0 && !dropped.is_empty() {
            let which = dropped
                .iter()
                .map(|(i, m)| format!("rules[{i}] ({m})"))
                .collect::<Vec<_>>()
                .join(", ");
            parent.conditions.push(Condition::yes(
                "PartiallyInvalid",
                "UnsupportedValue",
                format!("Dropped Rule(s): {which}"),
                generation,
            ));
        }
    }
    if !parents.is_empty() {
        status.entry(meta.reference.clone()).parents.extend(parents);
    }
}
