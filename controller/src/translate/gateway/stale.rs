//! Stale route parents: entries agentmesh wrote to a route's `status.parents` earlier
//! for a parent the route no longer has (its parentRef was removed or changed, or the
//! Gateway is no longer of our class).
//!
//! Each is reported as [`ObjectStatus::stale_parents`]: `status` prints it in folder
//! mode, and in Kubernetes mode the status writer rewrites the route's parents without
//! it (other controllers' entries are kept). This module only reads what the route holds;
//! it must not decide anything about attachment.
//!
//! [`ObjectStatus::stale_parents`]: crate::status::ObjectStatus::stale_parents

use crate::objects::{CONTROLLER_NAME, GATEWAY_GROUP, ObjectRef, Objects};
use crate::status::StatusReport;

/// A parent entry of ours a route holds: (`ns/name`, sectionName, port).
type HeldParent = (String, Option<String>, Option<i32>);

/// The parent entries of ours that `$route` (any route kind: their status types have the
/// same shape) holds in `status.parents`.
macro_rules! held_parents {
    ($route:expr) => {{
        let namespace = $route.metadata.namespace.clone().unwrap_or_default();
        $route
            .status
            .iter()
            .flat_map(|s| s.parents.iter())
            .filter(|p| p.controller_name == CONTROLLER_NAME)
            .filter(|p| {
                p.parent_ref.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
                    && p.parent_ref.kind.as_deref().unwrap_or("Gateway") == "Gateway"
            })
            .map(|p| {
                (
                    format!(
                        "{}/{}",
                        p.parent_ref.namespace.as_deref().unwrap_or(&namespace),
                        p.parent_ref.name
                    ),
                    p.parent_ref.section_name.clone(),
                    p.parent_ref.port,
                )
            })
            .collect::<Vec<HeldParent>>()
    }};
}

/// Records, for every route of `objects`, the parents of ours it holds but that
/// translation (already written into `status`) no longer reports.
pub(super) fn report(objects: &Objects, status: &mut StatusReport) {
    let mut held: Vec<(ObjectRef, Vec<HeldParent>)> = Vec::new();
    for r in &objects.http_routes {
        held.push((ObjectRef::of("HTTPRoute", &r.metadata), held_parents!(r)));
    }
    for r in &objects.grpc_routes {
        held.push((ObjectRef::of("GRPCRoute", &r.metadata), held_parents!(r)));
    }
    for r in &objects.tls_routes {
        held.push((ObjectRef::of("TLSRoute", &r.metadata), held_parents!(r)));
    }
    for r in &objects.tcp_routes {
        held.push((ObjectRef::of("TCPRoute", &r.metadata), held_parents!(r)));
    }
    for (route, parents) in held {
        let current = status.objects.get(&route);
        let stale: Vec<String> = parents
            .into_iter()
            .filter(|(parent, section, port)| {
                !current.is_some_and(|s| {
                    s.parents.iter().any(|p| {
                        p.parent == *parent && p.section_name == *section && p.port == *port
                    })
                })
            })
            .map(|(parent, section, port)| {
                let mut text = parent;
                if let Some(section) = section {
                    text.push_str(&format!(" sectionName {section}"));
                }
                if let Some(port) = port {
                    text.push_str(&format!(" port {port}"));
                }
                text
            })
            .collect();
        if !stale.is_empty() {
            status.entry(route).stale_parents = stale;
        }
    }
}
