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
//!    PartiallyInvalid when some rules were dropped). Entries of ours a route still holds
//!    for a parent it no longer has are reported as stale ([`stale`]).
//!
//! Resource keys are readable and stable: a bind is `<ns>/<gateway>/<port>`, a listener
//! `<ns>/<gateway>/<listener>`, a route `<listener key>/<kind>/<route ns>/<route>/<rule>`
//! (the rule index zero-padded, so that keys sort in rule order: the proxy breaks
//! precedence ties by key, as the Gateway API breaks them by route name and rule order),
//! a backend `<ns>/<service>:<port>`. A route with a `creationTimestamp` has it in its
//! keys (`<listener key>/<created>/<kind>/…`), so that ties go to the oldest route.
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
mod stale;
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
    // Routes attach oldest first, so that where the Gateway API lets only one of two
    // routes have a listener (an HTTPRoute and a GRPCRoute sharing a hostname, two
    // TCPRoutes on one TCP listener) the older one has it. HTTPRoutes and GRPCRoutes are
    // interleaved: they compete with each other.
    let mut request_routes: Vec<(Age, RequestKind<'_>)> = objects
        .http_routes
        .iter()
        .map(|r| (Age::of(&r.metadata), RequestKind::Http(r)))
        .chain(
            objects
                .grpc_routes
                .iter()
                .map(|r| (Age::of(&r.metadata), RequestKind::Grpc(r))),
        )
        .collect();
    request_routes.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, route) in request_routes {
        match route {
            RequestKind::Http(r) => {
                http::translate(r, objects, &grants, &mut gateways, &mut out.status)
            }
            RequestKind::Grpc(r) => {
                grpc::translate(r, objects, &grants, &mut gateways, &mut out.status)
            }
        }
    }
    for route in oldest_first(&objects.tls_routes, |r| &r.metadata) {
        stream::translate_tls(route, objects, &grants, &mut gateways, &mut out.status);
    }
    for route in oldest_first(&objects.tcp_routes, |r| &r.metadata) {
        stream::translate_tcp(route, objects, &grants, &mut gateways, &mut out.status);
    }
    for gateway in gateways {
        let (reference, resources) = gateway.finish(&mut out.status);
        out.gateways.insert(reference, resources);
    }
    stale::report(objects, &mut out.status);
}

/// An HTTPRoute or a GRPCRoute.
enum RequestKind<'a> {
    Http(&'a gateway_api::apis::standard::httproutes::HttpRoute),
    Grpc(&'a gateway_api::apis::standard::grpcroutes::GrpcRoute),
}

/// How old a route is, as the Gateway API ranks routes that tie or conflict: the oldest
/// by `metadata.creationTimestamp` (to the second, as the API server stores it) first,
/// then by `namespace/name`. A route without a timestamp (a manifest in folder mode)
/// counts as the newest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Age {
    /// When it was created (unknown: after every known time).
    created: NewestLast,
    namespace: String,
    name: String,
}

/// A creation second, with "unknown" sorting last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum NewestLast {
    Created(i64),
    Unknown,
}

impl Age {
    fn of(meta: &kube::api::ObjectMeta) -> Self {
        Age {
            created: meta
                .creation_timestamp
                .as_ref()
                .map_or(NewestLast::Unknown, |t| {
                    NewestLast::Created(t.0.as_second())
                }),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

/// `routes` oldest first (see [`Age`]).
fn oldest_first<T>(routes: &[T], meta: impl Fn(&T) -> &kube::api::ObjectMeta) -> Vec<&T> {
    let mut sorted: Vec<(Age, &T)> = routes.iter().map(|r| (Age::of(meta(r)), r)).collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted.into_iter().map(|(_, r)| r).collect()
}

/// The creation second of `meta` as a key segment (`2026-11-24T07:00:00Z`), if it has one.
fn created_segment(meta: &kube::api::ObjectMeta) -> Option<String> {
    meta.creation_timestamp
        .as_ref()
        .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
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
    /// `status.addresses`.
    addresses: Vec<crate::status::StatusAddress>,
}

impl GatewayState {
    /// Why the Gateway is not accepted (its Accepted=False message), if it is not.
    fn not_accepted(&self) -> Option<String> {
        self.conditions
            .iter()
            .find(|c| c.type_ == "Accepted" && c.status == "False")
            .map(|c| c.message.clone())
    }

    /// Writes the status of the Gateway and its listeners, and returns its resources.
    fn finish(self, status: &mut StatusReport) -> (ObjectRef, Resources) {
        let entry = status.entry(self.reference.clone());
        entry.conditions.extend(self.conditions);
        entry.addresses = self.addresses;
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
    /// `TLS` with `tls.mode: Terminate` (TLS terminated by the proxy, routed by SNI, the
    /// decrypted bytes forwarded).
    TlsTerminate,
    /// `TCP` (bytes forwarded as they are).
    Tcp,
}

impl Protocol {
    /// The route kinds a listener of this protocol accepts when `allowedRoutes.kinds` is
    /// not set.
    fn default_kinds(self) -> &'static [&'static str] {
        match self {
            Protocol::Http | Protocol::Https => &["HTTPRoute", "GRPCRoute"],
            Protocol::TlsPassthrough | Protocol::TlsTerminate => &["TLSRoute"],
            Protocol::Tcp => &["TCPRoute"],
        }
    }

    /// The protocol's name in a Gateway listener (with the TLS mode: one port serves one
    /// of the two).
    fn name(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Https => "HTTPS",
            Protocol::TlsPassthrough => "TLS Passthrough",
            Protocol::TlsTerminate => "TLS Terminate",
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
    /// The routes attached to it so far (oldest first), for conflicts between routes.
    routes: Vec<attach::AttachedRoute>,
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
    /// Its creation second as a key segment, if known (see [`created_segment`]).
    created: Option<String>,
}

impl RouteMeta {
    /// What a route of `kind` with `metadata` is known by.
    fn of(kind: &'static str, metadata: &kube::api::ObjectMeta) -> Self {
        RouteMeta {
            kind,
            reference: ObjectRef::of(kind, metadata),
            generation: metadata.generation.unwrap_or_default(),
            created: created_segment(metadata),
        }
    }

    /// The key segment of this route's rule `index` (`httproute/<ns>/<name>/<NN>`).
    fn rule_key(&self, index: usize) -> String {
        format!(
            "{}/{}/{}/{index:02}",
            self.kind.to_ascii_lowercase(),
            self.reference.namespace,
            self.reference.name
        )
    }

    /// The key of this route's rule `index` on the listener `listener_key`:
    /// `<listener>/[<created>/]<rule key>`. The proxy breaks precedence ties by key, and
    /// the Gateway API by age, then namespace/name, then rule order: the creation second
    /// sorts older routes first, and a route without one (digits sort before letters)
    /// after every route that has one.
    fn route_key(&self, listener_key: &str, index: usize) -> String {
        let rule = self.rule_key(index);
        match &self.created {
            Some(created) => format!("{listener_key}/{created}/{rule}"),
            None => format!("{listener_key}/{rule}"),
        }
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
            let key = meta.route_key(&listener_key, rule.index);
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
