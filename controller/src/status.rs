//! Status conditions computed by translation: what the controller writes back to the
//! Kubernetes API, and what `agentmesh-controller status` prints in folder mode.
//!
//! Condition types and reasons are the Gateway API's (`Accepted`, `Programmed`,
//! `ResolvedRefs`; reasons such as `NoMatchingParent`, `RefNotPermitted`,
//! `BackendNotFound`), so that `kubectl describe` reads the same as with any other
//! implementation.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::objects::ObjectRef;

/// One condition, as in `metav1.Condition` (without the transition time, which the
/// Kubernetes writer adds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Accepted`, `Programmed`, `ResolvedRefs`, …
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` or `False`.
    pub status: String,
    /// A CamelCase reason.
    pub reason: String,
    /// A human sentence naming the field at fault, when there is one.
    pub message: String,
    /// The object's `metadata.generation` this condition was computed for.
    pub observed_generation: i64,
}

impl Condition {
    /// A condition that holds.
    pub fn yes(type_: &str, reason: &str, message: impl Into<String>, generation: i64) -> Self {
        Condition {
            type_: type_.into(),
            status: "True".into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: generation,
        }
    }

    /// Whether this condition reports a problem: `False` for the positive types
    /// (`Accepted`, `Programmed`, `ResolvedRefs`), `True` for the Gateway API's
    /// "abnormal-true" ones (`Conflicted`, `PartiallyInvalid`).
    pub fn is_problem(&self) -> bool {
        let abnormal_true = matches!(self.type_.as_str(), "Conflicted" | "PartiallyInvalid");
        (self.status == "True") == abnormal_true
    }

    /// A condition that does not hold.
    pub fn no(type_: &str, reason: &str, message: impl Into<String>, generation: i64) -> Self {
        Condition {
            type_: type_.into(),
            status: "False".into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: generation,
        }
    }
}

/// The status of a route towards one parent (Gateway API `RouteParentStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentStatus {
    /// The parent (a Gateway).
    pub parent: String,
    /// The parentRef's `sectionName`, when it named a listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// The parentRef's `port`, when it named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Conditions for this parent.
    pub conditions: Vec<Condition>,
}

/// The status of one listener of a Gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    /// Routes attached to the listener.
    pub attached_routes: i32,
    /// Conditions for the listener.
    pub conditions: Vec<Condition>,
}

/// An address bound to a Gateway (Gateway API `GatewayStatusAddress`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusAddress {
    /// `IPAddress` or `Hostname`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The address.
    pub value: String,
}

/// The status of one object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    /// Object-level conditions (GatewayClass, Gateway, our CRDs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Addresses bound to a Gateway: those its spec asks for that agentmesh gives it,
    /// then those its Service's load balancer reports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<StatusAddress>,
    /// Per-listener status (Gateway), by listener name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub listeners: BTreeMap<String, ListenerStatus>,
    /// Per-parent status (routes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<ParentStatus>,
    /// Parents (`ns/name`, with sectionName and port when set) of a route's
    /// `status.parents` entries written by agentmesh for a parent the route no longer
    /// has: the controller removes those entries (and keeps other controllers').
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stale_parents: Vec<String>,
}

/// The status of every object translation has something to say about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusReport {
    /// By object.
    pub objects: BTreeMap<ObjectRef, ObjectStatus>,
}

impl StatusReport {
    /// The status entry of `object`, created empty on first use.
    pub fn entry(&mut self, object: ObjectRef) -> &mut ObjectStatus {
        self.objects.entry(object).or_default()
    }

    /// As JSON: an object from `Kind namespace/name` to its status, for `status` and
    /// golden tests.
    pub fn to_json(&self) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> = self
            .objects
            .iter()
            .map(|(reference, status)| {
                (
                    reference.to_string(),
                    serde_json::to_value(status).unwrap_or_default(),
                )
            })
            .collect();
        serde_json::Value::Object(map)
    }

    /// Whether any condition anywhere reports a problem: `status` exits non-zero then.
    pub fn has_problems(&self) -> bool {
        self.objects.values().any(|s| {
            s.conditions
                .iter()
                .chain(s.listeners.values().flat_map(|l| &l.conditions))
                .chain(s.parents.iter().flat_map(|p| &p.conditions))
                .any(Condition::is_problem)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_conflict_is_not_a_problem_but_a_conflict_is() {
        assert!(!Condition::no("Conflicted", "NoConflicts", "", 1).is_problem());
        assert!(Condition::yes("Conflicted", "HostnameConflict", "", 1).is_problem());
        assert!(Condition::yes("PartiallyInvalid", "UnsupportedValue", "", 1).is_problem());
        assert!(Condition::no("Accepted", "Invalid", "", 1).is_problem());
        assert!(!Condition::yes("Programmed", "Programmed", "", 1).is_problem());
    }
}
