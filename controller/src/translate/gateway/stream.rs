//! TLSRoute and TCPRoute: routes whose connections are forwarded as bytes.
//!
//! A TLSRoute attaches to TLS listeners (mode Passthrough: the backend terminates TLS;
//! mode Terminate: the proxy does and forwards the decrypted bytes); its hostnames
//! (intersected with the listener's) are the SNI names the proxy routes on. A TCPRoute
//! attaches to TCP listeners and takes every connection. Either becomes one proxy route
//! per listener (key `<listener>/[<created>/]<kind>/<ns>/<name>/00`) whose backends are
//! the Service ports of all its rules' backendRefs, by weight; the proxy forwards to them
//! as bytes. There are no matches or filters to translate.
//!
//! A TCP listener serves one route (nothing tells its connections apart): when several
//! TCPRoutes attach to one, the oldest (then the first by namespace and name) is served
//! and the others are refused on that listener (`Accepted: False`, reason
//! `NotAllowedByListeners`; see [`attach`]). A route none of whose backends resolve
//! attaches (it is valid) but is not served: its connections are reset, and
//! `ResolvedRefs: False` says why.

use std::collections::BTreeMap;

use agentmesh_proto::config::v1 as pb;
use agentmesh_proxy::http::route::HostPattern;
use gateway_api::apis::standard::tlsroutes::TlsRoute;
use gateway_api::experimental::tcproutes::TcpRoute;

use super::attach::{self, ParentRef};
use super::backends::{self, BackendRef, Grants, RefSide};
use super::http::parent_refs;
use super::{GatewayState, Problem, RouteMeta, route_parent_status};
use crate::objects::{GATEWAY_GROUP, Objects};
use crate::status::{Condition, StatusReport};

/// A TLSRoute or TCPRoute, read into what both kinds share.
struct StreamRoute<'a> {
    meta: RouteMeta,
    hostnames: &'a [String],
    parents: Vec<ParentRef>,
    /// (field, backendRef, weight) of every rule's backendRefs.
    refs: Vec<(String, BackendRef<'a>, Option<i32>)>,
}

/// Reads a TLSRoute or TCPRoute (`$route`, of kind `$kind`, with SNI names `$hostnames`)
/// into a [`StreamRoute`]: the two kinds have their own types for parentRefs, rules and
/// backendRefs, all of the same shape.
macro_rules! stream_route {
    ($route:expr, $kind:literal, $hostnames:expr) => {
        StreamRoute {
            meta: RouteMeta::of($kind, &$route.metadata),
            hostnames: $hostnames,
            parents: parent_refs!($route.spec.parent_refs),
            refs: $route
                .spec
                .rules
                .iter()
                .enumerate()
                .flat_map(|(i, rule)| {
                    rule.backend_refs.iter().enumerate().map(move |(k, b)| {
                        (
                            format!("spec.rules[{i}].backendRefs[{k}]"),
                            BackendRef {
                                group: b.group.as_deref(),
                                kind: b.kind.as_deref(),
                                name: &b.name,
                                namespace: b.namespace.as_deref(),
                                port: b.port,
                            },
                            b.weight,
                        )
                    })
                })
                .collect(),
        }
    };
}

/// Translates one TLSRoute onto the Gateways it attaches to, and writes its status.
pub(super) fn translate_tls(
    route: &TlsRoute,
    objects: &Objects,
    grants: &Grants<'_>,
    gateways: &mut [GatewayState],
    status: &mut StatusReport,
) {
    let r = stream_route!(route, "TLSRoute", &route.spec.hostnames);
    translate(r, objects, grants, gateways, status);
}

/// Translates one TCPRoute onto the Gateways it attaches to, and writes its status.
pub(super) fn translate_tcp(
    route: &TcpRoute,
    objects: &Objects,
    grants: &Grants<'_>,
    gateways: &mut [GatewayState],
    status: &mut StatusReport,
) {
    let r = stream_route!(route, "TCPRoute", &[]);
    translate(r, objects, grants, gateways, status);
}

fn translate(
    r: StreamRoute<'_>,
    objects: &Objects,
    grants: &Grants<'_>,
    gateways: &mut [GatewayState],
    status: &mut StatusReport,
) {
    let meta = &r.meta;
    let generation = meta.generation;
    let mut hostnames = Vec::new();
    let mut invalid = None;
    for (i, h) in r.hostnames.iter().enumerate() {
        match HostPattern::parse(h) {
            Ok(_) => hostnames.push(h.trim().to_ascii_lowercase()),
            Err(e) => {
                invalid.get_or_insert(format!("spec.hostnames[{i}]: {e}"));
            }
        }
    }
    if r.refs.is_empty() {
        invalid.get_or_insert_with(|| {
            "spec.rules: at least one rule with a backendRef is required".to_string()
        });
    }

    // Backends: a Service port each, spoken to as bytes (never HTTP/2, never TLS).
    let mut route_backends = Vec::new();
    let mut backends = BTreeMap::new();
    let mut ref_problems: Vec<Problem> = Vec::new();
    let from = RefSide {
        group: GATEWAY_GROUP,
        kind: meta.kind,
        namespace: &meta.reference.namespace,
    };
    for (field, target, weight) in &r.refs {
        let weight = match weight {
            None => None,
            Some(w) if *w >= 0 => Some(*w as u32),
            Some(w) => {
                invalid.get_or_insert(format!("{field}.weight: {w} is negative"));
                continue;
            }
        };
        match backends::resolve(
            objects,
            grants,
            from,
            target,
            field,
            pb::UpstreamProtocol::Auto,
        ) {
            Ok((key, mut backend)) => {
                let key = key.strip_suffix("/h2").unwrap_or(&key).to_string();
                backend.key = key.clone();
                backend.name = key.clone();
                if let Some(pb::backend::Kind::Host(h)) = &mut backend.kind {
                    h.protocol = pb::UpstreamProtocol::Auto as i32;
                }
                route_backends.push(pb::RouteBackend {
                    backend: key.clone(),
                    weight,
                });
                backends.insert(key, backend);
            }
            Err(p) => ref_problems.push(p),
        }
    }

    if let Some(message) = invalid {
        let parents = attach::refuse(
            meta,
            &r.parents,
            gateways,
            Condition::no("Accepted", "UnsupportedValue", message, generation),
        );
        route_parent_status(meta, parents, 0, &[], &ref_problems, status);
        return;
    }
    let (attachments, parents) = attach::attach(meta, &hostnames, &r.parents, gateways, objects);
    let serving = route_backends.iter().any(|b| b.weight != Some(0));
    for a in attachments.iter().filter(|_| serving) {
        let gateway = &mut gateways[a.gateway];
        let listener_key = gateway.listeners[a.listener].key.clone();
        gateway.resources.routes.push(pb::Route {
            key: meta.route_key(&listener_key, 0),
            name: meta.rule_key(0),
            listener_key,
            hostnames: a.hostnames.clone(),
            matches: Vec::new(),
            backends: route_backends.clone(),
            policies: None,
        });
        for (key, backend) in &backends {
            gateway.backends.insert(key.clone(), backend.clone());
        }
    }
    if !serving && ref_problems.is_empty() {
        ref_problems.push(Problem::new(
            "BackendNotFound",
            "spec.rules: every backendRef has weight 0; connections are reset",
        ));
    }
    route_parent_status(meta, parents, 1, &[], &ref_problems, status);
}
