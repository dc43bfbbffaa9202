//! Route attachment: which listeners of our Gateways a route's `parentRefs` reach.
//!
//! A parentRef names a Gateway, optionally one listener (`sectionName`) and a port. A
//! listener accepts the route when it is served, allows the route's kind and namespace
//! (`allowedRoutes`), and shares at least one hostname with it; the route is then served
//! there for the intersection of the hostnames. A parentRef to a Gateway that is not of
//! our class gets no status from us (another controller owns it). Routes attach oldest
//! first; a listener refuses a route that conflicts with one it already has (see
//! [`conflict`]).

use std::collections::BTreeMap;

use super::{GatewayState, RouteMeta};
use crate::objects::{GATEWAY_GROUP, Objects};
use crate::status::{Condition, ParentStatus};

/// Where a listener accepts routes from (`allowedRoutes.namespaces`).
#[derive(Debug, Clone)]
pub(super) enum AllowedNamespaces {
    /// The Gateway's own namespace (the default).
    Same,
    /// Any namespace.
    All,
    /// Namespaces whose labels match.
    Selector(LabelSelector),
    /// None (the selector was invalid).
    None,
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`).
#[derive(Debug, Clone)]
pub(super) struct LabelSelector {
    labels: BTreeMap<String, String>,
    /// `(key, operator, values)`.
    expressions: Vec<(String, String, Option<Vec<String>>)>,
}

impl LabelSelector {
    /// A selector from its parts.
    pub(super) fn new(
        labels: BTreeMap<String, String>,
        expressions: Vec<(String, String, Option<Vec<String>>)>,
    ) -> Self {
        LabelSelector {
            labels,
            expressions,
        }
    }

    /// Checks the operators and their values; the error names the field (relative to the
    /// selector).
    pub(super) fn check(&self) -> Result<(), String> {
        for (i, (_, op, values)) in self.expressions.iter().enumerate() {
            let has_values = values.as_ref().is_some_and(|v| !v.is_empty());
            match op.as_str() {
                "In" | "NotIn" if !has_values => {
                    return Err(format!(
                        "matchExpressions[{i}].values: required with operator {op}"
                    ));
                }
                "Exists" | "DoesNotExist" if has_values => {
                    return Err(format!(
                        "matchExpressions[{i}].values: must be empty with operator {op}"
                    ));
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => {
                    return Err(format!(
                        "matchExpressions[{i}].operator: {other:?} is not In, NotIn, Exists or DoesNotExist"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether `labels` are selected.
    pub(super) fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|(key, op, values)| {
                let value = labels.get(key);
                let listed = || {
                    value.is_some_and(|v| values.iter().flatten().any(|candidate| candidate == v))
                };
                match op.as_str() {
                    "In" => listed(),
                    "NotIn" => !listed(),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

/// A route's parentRef, whatever the route kind.
#[derive(Debug, Clone)]
pub(super) struct ParentRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    pub section_name: Option<String>,
    pub port: Option<i32>,
}

/// A route a listener has accepted, as later routes see it.
#[derive(Debug, Clone)]
pub(super) struct AttachedRoute {
    /// `HTTPRoute`, `GRPCRoute`, …
    pub kind: &'static str,
    /// `namespace/name`.
    pub name: String,
    /// The hostnames it is served for there (empty: all of the listener's).
    pub hostnames: Vec<String>,
}

/// Why a listener cannot take a route because of a route it already has. Routes attach
/// oldest first, so the one already there is the older, which the Gateway API says wins:
/// a TCP listener serves one TCPRoute (nothing tells its connections apart), and an
/// HTTPRoute and a GRPCRoute may not share a hostname on one listener.
fn conflict(listener: &super::ListenerState, kind: &str, hostnames: &[String]) -> Option<String> {
    let name = &listener.name;
    listener.routes.iter().find_map(|other| match (kind, other.kind) {
        ("TCPRoute", "TCPRoute") => Some(format!(
            "listener {name} already serves TCPRoute {} (a TCP listener serves one route; the oldest wins)",
            other.name
        )),
        ("HTTPRoute", "GRPCRoute") | ("GRPCRoute", "HTTPRoute")
            if hostnames_overlap(&other.hostnames, hostnames) =>
        {
            Some(format!(
                "listener {name} already serves {} {} for an overlapping hostname \
                 (an HTTPRoute and a GRPCRoute may not share a hostname; the oldest wins)",
                other.kind, other.name
            ))
        }
        _ => None,
    })
}

/// Whether two routes' hostnames on one listener share a name (empty: all of the
/// listener's, which shares with everything).
fn hostnames_overlap(a: &[String], b: &[String]) -> bool {
    a.is_empty()
        || b.is_empty()
        || a.iter().any(|x| {
            b.iter()
                .any(|y| intersect(Some(x), std::slice::from_ref(y)).is_some())
        })
}

/// A route accepted by one listener.
#[derive(Debug, Clone)]
pub(super) struct Attachment {
    /// Index of the Gateway in the translation's list.
    pub gateway: usize,
    /// Index of the listener in the Gateway.
    pub listener: usize,
    /// Hostnames the route is served for on this listener (empty: the listener's).
    pub hostnames: Vec<String>,
}

/// Attaches a route to the listeners its parentRefs reach; returns the attachments and
/// the status of each parentRef that names one of our Gateways (Accepted only;
/// ResolvedRefs is the caller's). `route_hostnames` must be valid and lowercase.
pub(super) fn attach(
    meta: &RouteMeta,
    route_hostnames: &[String],
    parents: &[ParentRef],
    gateways: &mut [GatewayState],
    objects: &Objects,
) -> (Vec<Attachment>, Vec<ParentStatus>) {
    let mut attachments: Vec<Attachment> = Vec::new();
    let mut statuses = Vec::new();
    let generation = meta.generation;
    for (p, parent) in parents.iter().enumerate() {
        let group = parent.group.as_deref().unwrap_or(GATEWAY_GROUP);
        let kind = parent.kind.as_deref().unwrap_or("Gateway");
        if group != GATEWAY_GROUP || kind != "Gateway" {
            continue;
        }
        let namespace = parent
            .namespace
            .as_deref()
            .unwrap_or(&meta.reference.namespace);
        let Some(g) = gateways
            .iter()
            .position(|g| g.reference.namespace == namespace && g.reference.name == parent.name)
        else {
            continue;
        };
        let gateway = &mut gateways[g];
        let field = format!("spec.parentRefs[{p}]");
        if let Some(why) = gateway.not_accepted() {
            // An unaccepted Gateway serves nothing (see `listeners::plan`): the route is
            // not accepted by it, whatever its listeners would say.
            statuses.push(ParentStatus {
                parent: format!("{}/{}", gateway.reference.namespace, gateway.reference.name),
                section_name: parent.section_name.clone(),
                port: parent.port,
                conditions: vec![Condition::no(
                    "Accepted",
                    "NoMatchingParent",
                    format!(
                        "{field}: Gateway {}/{} is not accepted: {why}",
                        gateway.reference.namespace, gateway.reference.name
                    ),
                    generation,
                )],
            });
            continue;
        }
        let mut accepted_by = Vec::new();
        let mut refusals: Vec<(&'static str, String)> = Vec::new();
        let route_labels = objects.namespace_labels(&meta.reference.namespace);
        for (i, listener) in gateway.listeners.iter_mut().enumerate() {
            if parent
                .section_name
                .as_ref()
                .is_some_and(|s| *s != listener.name)
                || parent.port.is_some_and(|port| port != listener.port)
            {
                continue;
            }
            let name = &listener.name;
            if !listener.programmed {
                refusals.push((
                    "NoMatchingParent",
                    format!("listener {name} is not served: {}", listener.problem),
                ));
                continue;
            }
            if !listener.kinds.iter().any(|k| k == meta.kind) {
                refusals.push((
                    "NotAllowedByListeners",
                    format!("listener {name} does not allow {} routes", meta.kind),
                ));
                continue;
            }
            let namespace_ok = match &listener.namespaces {
                AllowedNamespaces::Same => meta.reference.namespace == gateway.reference.namespace,
                AllowedNamespaces::All => true,
                AllowedNamespaces::Selector(s) => s.matches(&route_labels),
                AllowedNamespaces::None => false,
            };
            if !namespace_ok {
                refusals.push((
                    "NotAllowedByListeners",
                    format!(
                        "listener {name} does not allow routes from namespace {}",
                        meta.reference.namespace
                    ),
                ));
                continue;
            }
            let Some(hostnames) = intersect(listener.hostname.as_deref(), route_hostnames) else {
                refusals.push((
                    "NoMatchingListenerHostname",
                    format!(
                        "listener {name} (hostname {}) shares no hostname with the route",
                        listener.hostname.as_deref().unwrap_or("any")
                    ),
                ));
                continue;
            };
            let already = attachments
                .iter()
                .any(|a| a.gateway == g && a.listener == i);
            if !already && let Some(why) = conflict(listener, meta.kind, &hostnames) {
                refusals.push(("NotAllowedByListeners", why));
                continue;
            }
            accepted_by.push(name.clone());
            if !already {
                listener.attached_routes += 1;
                listener.routes.push(AttachedRoute {
                    kind: meta.kind,
                    name: format!("{}/{}", meta.reference.namespace, meta.reference.name),
                    hostnames: hostnames.clone(),
                });
                attachments.push(Attachment {
                    gateway: g,
                    listener: i,
                    hostnames,
                });
            }
        }
        let condition = if !accepted_by.is_empty() {
            Condition::yes(
                "Accepted",
                "Accepted",
                format!("attached to listener(s) {}", accepted_by.join(", ")),
                generation,
            )
        } else if refusals.is_empty() {
            let mut what = String::from("the Gateway has no listener");
            if let Some(s) = &parent.section_name {
                what.push_str(&format!(" named {s}"));
            }
            if let Some(port) = parent.port {
                what.push_str(&format!(" on port {port}"));
            }
            Condition::no(
                "Accepted",
                "NoMatchingParent",
                format!("{field}: {what}"),
                generation,
            )
        } else {
            // The most telling reason: a policy refusal, then hostnames, then the rest.
            let reason = ["NotAllowedByListeners", "NoMatchingListenerHostname"]
                .into_iter()
                .find(|r| refusals.iter().any(|(x, _)| x == r))
                .unwrap_or("NoMatchingParent");
            let message = refusals
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            Condition::no(
                "Accepted",
                reason,
                format!("{field}: {message}"),
                generation,
            )
        };
        statuses.push(ParentStatus {
            parent: format!("{}/{}", gateway.reference.namespace, gateway.reference.name),
            section_name: parent.section_name.clone(),
            port: parent.port,
            conditions: vec![condition],
        });
    }
    (attachments, statuses)
}

/// The status of each parentRef naming one of our Gateways, for a route that attaches
/// nowhere because of itself (`condition` says why).
pub(super) fn refuse(
    meta: &RouteMeta,
    parents: &[ParentRef],
    gateways: &[GatewayState],
    condition: Condition,
) -> Vec<ParentStatus> {
    parents
        .iter()
        .filter(|p| {
            p.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
                && p.kind.as_deref().unwrap_or("Gateway") == "Gateway"
        })
        .filter_map(|p| {
            let namespace = p.namespace.as_deref().unwrap_or(&meta.reference.namespace);
            gateways
                .iter()
                .find(|g| g.reference.namespace == namespace && g.reference.name == p.name)
                .map(|g| ParentStatus {
                    parent: format!("{}/{}", g.reference.namespace, g.reference.name),
                    section_name: p.section_name.clone(),
                    port: p.port,
                    conditions: vec![condition.clone()],
                })
        })
        .collect()
}

/// The hostnames a route is served for on a listener: `Some(vec![])` for all of the
/// listener's, `None` when they share none. Both sides are lowercase and valid.
pub(super) fn intersect(listener: Option<&str>, route: &[String]) -> Option<Vec<String>> {
    if route.is_empty() {
        return Some(Vec::new());
    }
    let Some(l) = listener else {
        return Some(dedup(route.to_vec()));
    };
    let mut out = Vec::new();
    for h in route {
        let h = h.as_str();
        let chosen = match (h.strip_prefix('*'), l.strip_prefix('*')) {
            _ if h == l => Some(h),
            // Exact route hostname under a wildcard listener.
            (None, Some(suffix)) => h.ends_with(suffix).then_some(h),
            // Wildcard route hostname over an exact listener.
            (Some(suffix), None) => l.ends_with(suffix).then_some(l),
            // Two wildcards: the narrower one.
            (Some(hs), Some(ls)) => {
                if hs.ends_with(ls) {
                    Some(h)
                } else if ls.ends_with(hs) {
                    Some(l)
                } else {
                    None
                }
            }
            (None, None) => None,
        };
        out.extend(chosen.map(str::to_owned));
    }
    if out.is_empty() {
        None
    } else {
        Some(dedup(out))
    }
}

fn dedup(mut names: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

#[cfg(test)]
mod tests {
    use super::intersect;

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hostnames_intersect_as_the_gateway_api_says() {
        assert_eq!(intersect(None, &[]), Some(vec![]));
        assert_eq!(intersect(Some("a.example.com"), &[]), Some(vec![]));
        assert_eq!(intersect(None, &v(&["a.x"])), Some(v(&["a.x"])));
        assert_eq!(
            intersect(Some("*.example.com"), &v(&["a.example.com", "other.org"])),
            Some(v(&["a.example.com"]))
        );
        assert_eq!(
            intersect(Some("a.example.com"), &v(&["*.example.com"])),
            Some(v(&["a.example.com"]))
        );
        assert_eq!(
            intersect(Some("*.example.com"), &v(&["*.a.example.com"])),
            Some(v(&["*.a.example.com"]))
        );
        assert_eq!(
            intersect(Some("*.a.example.com"), &v(&["*.example.com"])),
            Some(v(&["*.a.example.com"]))
        );
        // A wildcard needs at least one more label: `example.com` is not under it.
        assert_eq!(intersect(Some("*.example.com"), &v(&["example.com"])), None);
        assert_eq!(
            intersect(Some("a.example.com"), &v(&["b.example.com"])),
            None
        );
    }
}
