//! Translation: a pure function from the input [`Objects`] to what each proxy serves and
//! to the status of every object.
//!
//! - [`gateway`]: GatewayClass, Gateway, HTTPRoute, GRPCRoute, TLSRoute, TCPRoute and
//!   ReferenceGrant become the resources of each Gateway of our class (one set per
//!   Gateway, served to the proxies that identify as that Gateway).
//! - [`agent`]: AgentBackend and AgentPolicy (agentmesh.dev): status, and policies with
//!   `targetRefs` attached to the Gateways' resources.
//! - [`sidecar`]: the resources of one pod's sidecar (asked per node by the catalog).
//!
//! Everything a translation step finds wrong is reported as a status condition on the
//! object at fault, naming the field; the rest of the input still translates.

pub mod agent;
pub mod gateway;
pub mod sidecar;

use std::collections::BTreeMap;

use agentmesh_proxy::config::file::Resources;

use crate::objects::{ObjectRef, Objects};
use crate::status::{Condition, StatusReport};

/// What translation produced.
#[derive(Debug, Clone, Default)]
pub struct Translation {
    /// The resources of each Gateway of our class, by Gateway.
    pub gateways: BTreeMap<ObjectRef, Resources>,
    /// Status of every object translation read.
    pub status: StatusReport,
}

/// Translates `objects`.
pub fn translate(objects: &Objects) -> Translation {
    let mut out = Translation::default();
    for rejected in &objects.rejected {
        out.status
            .entry(rejected.reference.clone())
            .conditions
            .push(Condition::no(
                "Accepted",
                "Invalid",
                format!("{}: {}", rejected.origin, rejected.reason),
                0,
            ));
    }
    gateway::translate(objects, &mut out);
    agent::translate(objects, &mut out);
    out
}
