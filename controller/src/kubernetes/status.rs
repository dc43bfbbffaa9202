//! Status write-back: the conditions of each translation, written to the status
//! subresource of the objects that are ours.
//!
//! What is ours: a GatewayClass whose `controllerName` is agentmesh's (its
//! `status.conditions`), a Gateway of such a class (`status.conditions` and
//! `status.listeners`), the entries of a route's `status.parents` whose `controllerName`
//! is agentmesh's (entries of other implementations are kept as they are), and the
//! conditions of our CRDs. Nothing else is ever written.
//!
//! A write is a JSON merge patch of the status subresource (field manager
//! `agentmesh-controller`) that carries the `resourceVersion` it was computed from, so a
//! concurrent change (another controller writing its route parents) makes it fail with a
//! conflict instead of erasing that change; the next round recomputes from the new
//! version. (A server-side apply would take ownership of the whole `status.parents`
//! list, which the Gateway API declares atomic, so it cannot leave others' entries
//! alone.) An object is written only when what we would write differs from what it holds;
//! a condition keeps its `lastTransitionTime` while its status stays the same.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::source::{KubernetesSource, Watched};
use super::{FIELD_MANAGER, StatusShape};
use crate::objects::{CONTROLLER_NAME, GATEWAY_GROUP, ObjectRef};
use crate::snapshot::Catalog;
use crate::status::{Condition, ObjectStatus, ParentStatus};

/// How long to wait before trying failed writes again when nothing else changes.
const RETRY: Duration = Duration::from_secs(5);

/// Writes the status of every catalog `source` publishes, until the source ends.
pub async fn run(client: kube::Client, source: KubernetesSource) {
    let mut catalogs = source.catalogs.clone();
    let mut writer = StatusWriter {
        client,
        watched: source.watched.clone(),
        written: HashMap::new(),
    };
    loop {
        let catalog = catalogs.borrow_and_update().clone();
        let complete = writer.write(&catalog).await;
        let changed = if complete {
            catalogs.changed().await
        } else {
            tokio::select! {
                changed = catalogs.changed() => changed,
                _ = tokio::time::sleep(RETRY) => Ok(()),
            }
        };
        if changed.is_err() {
            return;
        }
    }
}

/// The writer's memory between rounds.
struct StatusWriter {
    client: kube::Client,
    watched: Arc<Vec<Watched>>,
    /// What we last wrote to each object (without transition times), with the
    /// `resourceVersion`s before and after: an object still at one of those versions
    /// with the same wanted status is not written again, whether our write has come
    /// back through the watch yet or not, and even if the API server's copy reads back
    /// slightly differently.
    written: HashMap<ObjectRef, Written>,
}

/// A status write that succeeded.
struct Written {
    before: String,
    after: String,
    status: Value,
}

/// One status write to make.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusPatch {
    /// The object.
    pub object: ObjectRef,
    /// The `resourceVersion` the patch was computed from.
    pub resource_version: String,
    /// The new `status` fields (only those we own).
    pub status: Value,
}

impl StatusWriter {
    /// Writes what changed. Returns false when some write failed and should be retried.
    async fn write(&mut self, catalog: &Catalog) -> bool {
        let now = now();
        // Forget objects that are gone, so the memory stays the size of the cluster.
        let reported = &catalog.translation.status.objects;
        self.written
            .retain(|object, _| reported.contains_key(object));
        let mut complete = true;
        for patch in patches(&self.watched, catalog, &now) {
            let wanted = without_transition_times(&patch.status);
            if let Some(last) = self.written.get(&patch.object)
                && (last.after == patch.resource_version || last.before == patch.resource_version)
                && last.status == wanted
            {
                continue;
            }
            let Some(kind) = self
                .watched
                .iter()
                .find(|w| w.kind.resource.kind == patch.object.kind)
            else {
                continue;
            };
            let api: Api<DynamicObject> = if kind.kind.namespaced {
                Api::namespaced_with(
                    self.client.clone(),
                    &patch.object.namespace,
                    &kind.kind.resource,
                )
            } else {
                Api::all_with(self.client.clone(), &kind.kind.resource)
            };
            let body = json!({
                "metadata": { "resourceVersion": patch.resource_version },
                "status": patch.status,
            });
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            };
            match api
                .patch_status(&patch.object.name, &params, &Patch::Merge(&body))
                .await
            {
                Ok(written) => {
                    tracing::info!(object = %patch.object, "status written");
                    let after = written.metadata.resource_version.unwrap_or_default();
                    let record = Written {
                        before: patch.resource_version,
                        after,
                        status: wanted,
                    };
                    self.written.insert(patch.object, record);
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    tracing::debug!(object = %patch.object, "gone before its status was written");
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    tracing::debug!(object = %patch.object, "changed meanwhile; its status is recomputed");
                    complete = false;
                }
                Err(e) => {
                    tracing::warn!(object = %patch.object, error = %e, "cannot write status; will retry");
                    complete = false;
                }
            }
        }
        complete
    }
}

/// The status writes `catalog` calls for: for each object with a status report whose
/// kind takes status, what we would write, if it differs from what the object holds.
/// `now` is the transition time of conditions that change.
pub fn patches(watched: &[Watched], catalog: &Catalog, now: &str) -> Vec<StatusPatch> {
    let mut out = Vec::new();
    for (reference, report) in &catalog.translation.status.objects {
        let Some(kind) = watched
            .iter()
            .find(|w| w.kind.resource.kind == reference.kind)
        else {
            continue;
        };
        let Some(object) = current(kind, reference) else {
            continue;
        };
        let resource_version = object.metadata.resource_version.clone().unwrap_or_default();
        let held = object.data.get("status").cloned().unwrap_or(Value::Null);
        let status = match kind.kind.status {
            StatusShape::None => continue,
            StatusShape::Conditions => {
                if reference.kind == "GatewayClass"
                    && object.data["spec"]["controllerName"] != CONTROLLER_NAME
                {
                    continue;
                }
                json!({ "conditions": conditions(&report.conditions, &held["conditions"], now) })
            }
            StatusShape::Gateway => {
                if !gateway_is_ours(watched, &object) {
                    continue;
                }
                json!({
                    "addresses": report.addresses,
                    "conditions": conditions(&report.conditions, &held["conditions"], now),
                    "listeners": listeners(report, &object, &held["listeners"], now),
                })
            }
            StatusShape::RouteParents => {
                let parents = route_parents(watched, reference, report, &object, &held, now);
                json!({ "parents": parents })
            }
        };
        let unchanged = status
            .as_object()
            .into_iter()
            .flatten()
            .all(|(field, value)| held.get(field).unwrap_or(&Value::Null) == value);
        if !unchanged {
            out.push(StatusPatch {
                object: reference.clone(),
                resource_version,
                status,
            });
        }
    }
    out
}

/// The object as the reflector holds it.
fn current(watched: &Watched, reference: &ObjectRef) -> Option<Arc<DynamicObject>> {
    let key = kube::runtime::reflector::ObjectRef::new_with(
        &reference.name,
        watched.kind.resource.clone(),
    );
    let key = if watched.kind.namespaced {
        key.within(&reference.namespace)
    } else {
        key
    };
    watched.store.get(&key)
}

/// Whether `gateway` is of a GatewayClass whose controllerName is ours.
fn gateway_is_ours(watched: &[Watched], gateway: &DynamicObject) -> bool {
    let Some(class) = gateway.data["spec"]["gatewayClassName"].as_str() else {
        return false;
    };
    let Some(classes) = watched
        .iter()
        .find(|w| w.kind.resource.kind == "GatewayClass")
    else {
        return false;
    };
    current(
        classes,
        &ObjectRef {
            kind: "GatewayClass".into(),
            namespace: String::new(),
            name: class.into(),
        },
    )
    .is_some_and(|c| c.data["spec"]["controllerName"] == CONTROLLER_NAME)
}

/// Our conditions as `metav1.Condition` JSON; each keeps the `lastTransitionTime` of the
/// held condition of its type when the status did not change.
fn conditions(ours: &[Condition], held: &Value, now: &str) -> Value {
    let held = held.as_array().map(Vec::as_slice).unwrap_or_default();
    let list = ours
        .iter()
        .map(|c| {
            let since = held
                .iter()
                .find(|h| h["type"] == c.type_.as_str() && h["status"] == c.status.as_str())
                .and_then(|h| h["lastTransitionTime"].as_str())
                .unwrap_or(now);
            json!({
                "type": c.type_,
                "status": c.status,
                "reason": c.reason,
                "message": c.message,
                "observedGeneration": c.observed_generation,
                "lastTransitionTime": since,
            })
        })
        .collect();
    Value::Array(list)
}

/// The `status.listeners` of a Gateway: one entry per listener of the report, in the
/// order of `spec.listeners`.
fn listeners(report: &ObjectStatus, gateway: &DynamicObject, held: &Value, now: &str) -> Value {
    let spec = gateway.data["spec"]["listeners"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let held = held.as_array().map(Vec::as_slice).unwrap_or_default();
    let mut out = Vec::new();
    for listener in spec {
        let Some(name) = listener["name"].as_str() else {
            continue;
        };
        let Some(status) = report.listeners.get(name) else {
            continue;
        };
        let held_conditions = held
            .iter()
            .find(|h| h["name"] == name)
            .map_or(&Value::Null, |h| &h["conditions"]);
        out.push(json!({
            "name": name,
            "supportedKinds": supported_kinds(listener),
            "attachedRoutes": status.attached_routes,
            "conditions": conditions(&status.conditions, held_conditions, now),
        }));
    }
    Value::Array(out)
}

/// The route kinds a listener supports: those of `allowedRoutes.kinds` we implement, or
/// by default those its protocol carries.
fn supported_kinds(listener: &Value) -> Value {
    const IMPLEMENTED: [&str; 4] = ["HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute"];
    let allowed: Vec<&str> = listener["allowedRoutes"]["kinds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| k["group"].as_str().is_none_or(|g| g == GATEWAY_GROUP))
        .filter_map(|k| k["kind"].as_str())
        .filter(|k| IMPLEMENTED.contains(k))
        .collect();
    let kinds = if listener["allowedRoutes"]["kinds"].is_array() {
        allowed
    } else {
        match listener["protocol"].as_str().unwrap_or_default() {
            "HTTP" | "HTTPS" => vec!["HTTPRoute", "GRPCRoute"],
            "TLS" => vec!["TLSRoute"],
            "TCP" => vec!["TCPRoute"],
            _ => Vec::new(),
        }
    };
    kinds
        .into_iter()
        .map(|k| json!({ "group": GATEWAY_GROUP, "kind": k }))
        .collect()
}

/// A route's `status.parents`: the held entries of other controllers, then ours.
fn route_parents(
    watched: &[Watched],
    route: &ObjectRef,
    report: &ObjectStatus,
    object: &DynamicObject,
    held: &Value,
    now: &str,
) -> Value {
    let held = held["parents"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut out: Vec<Value> = held
        .iter()
        .filter(|p| p["controllerName"] != CONTROLLER_NAME)
        .cloned()
        .collect();
    let spec_refs = object.data["spec"]["parentRefs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut ours: Vec<(Value, &[Condition])> = report
        .parents
        .iter()
        .map(|p| (parent_ref(route, p, spec_refs), p.conditions.as_slice()))
        .collect();
    // An object that could not be read has only object-level conditions: they are
    // reported to each of its parents that is a Gateway of ours.
    if report.parents.is_empty() && !report.conditions.is_empty() {
        for spec_ref in spec_refs {
            let (namespace, name) = parent_key(route, spec_ref);
            let gateway = ObjectRef {
                kind: "Gateway".into(),
                namespace,
                name,
            };
            let ours_too = watched
                .iter()
                .find(|w| w.kind.resource.kind == "Gateway")
                .and_then(|w| current(w, &gateway))
                .is_some_and(|g| gateway_is_ours(watched, &g));
            if ours_too {
                ours.push((spec_ref.clone(), report.conditions.as_slice()));
            }
        }
    }
    for (parent_ref, conditions_of) in ours {
        let held_conditions = held
            .iter()
            .find(|h| h["controllerName"] == CONTROLLER_NAME && h["parentRef"] == parent_ref)
            .map_or(&Value::Null, |h| &h["conditions"]);
        out.push(json!({
            "parentRef": parent_ref,
            "controllerName": CONTROLLER_NAME,
            "conditions": conditions(conditions_of, held_conditions, now),
        }));
    }
    Value::Array(out)
}

/// The parentRef a parent status is about: the route's own `spec.parentRefs` entry
/// (the Gateway API asks for it verbatim), or one built from the report.
fn parent_ref(route: &ObjectRef, parent: &ParentStatus, spec_refs: &[Value]) -> Value {
    let (namespace, name) = parse_parent(&parent.parent, &route.namespace);
    let found = spec_refs.iter().find(|r| {
        parent_key(route, r) == (namespace.clone(), name.clone())
            && r["sectionName"].as_str() == parent.section_name.as_deref()
            && r["port"].as_i64() == parent.port.map(i64::from)
    });
    if let Some(found) = found {
        return found.clone();
    }
    let mut built = json!({
        "group": GATEWAY_GROUP,
        "kind": "Gateway",
        "namespace": namespace,
        "name": name,
    });
    if let Some(section) = &parent.section_name {
        built["sectionName"] = section.clone().into();
    }
    if let Some(port) = parent.port {
        built["port"] = port.into();
    }
    built
}

/// The (namespace, name) of a spec parentRef (its namespace defaults to the route's).
fn parent_key(route: &ObjectRef, spec_ref: &Value) -> (String, String) {
    (
        spec_ref["namespace"]
            .as_str()
            .unwrap_or(&route.namespace)
            .to_owned(),
        spec_ref["name"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Reads a report's parent (`Gateway "ns/name"`, `ns/name` or `name`).
fn parse_parent(parent: &str, route_namespace: &str) -> (String, String) {
    let bare = parent
        .strip_prefix("Gateway ")
        .unwrap_or(parent)
        .trim_matches('"');
    match bare.split_once('/') {
        Some((ns, name)) => (ns.to_owned(), name.to_owned()),
        None => (route_namespace.to_owned(), bare.to_owned()),
    }
}

/// `value` with every `lastTransitionTime` removed, to compare what is meant.
fn without_transition_times(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "lastTransitionTime")
                .map(|(k, v)| (k.clone(), without_transition_times(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_transition_times).collect()),
        other => other.clone(),
    }
}

/// The current time as Kubernetes writes it (RFC 3339, seconds, UTC).
fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::StatusReport;

    /// Stores holding `objects` (as the API server would list them).
    fn watched(objects: &[Value]) -> Vec<Watched> {
        super::super::kinds()
            .into_iter()
            .map(|kind| {
                let mut writer =
                    kube::runtime::reflector::store::Writer::new(kind.resource.clone());
                for o in objects.iter().filter(|o| o["kind"] == kind.resource.kind) {
                    let object: DynamicObject = serde_json::from_value(o.clone()).expect("object");
                    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(object));
                }
                Watched {
                    store: writer.as_reader(),
                    kind,
                }
            })
            .collect()
    }

    fn catalog(report: StatusReport) -> Catalog {
        let mut catalog = Catalog::default();
        catalog.translation.status = report;
        catalog
    }

    fn class(name: &str, controller: &str) -> Value {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
               "metadata": {"name": name, "resourceVersion": "1"},
               "spec": {"controllerName": controller}})
    }

    fn gateway(name: &str, class: &str) -> Value {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": name, "namespace": "default", "resourceVersion": "2"},
               "spec": {"gatewayClassName": class,
                        "listeners": [{"name": "tls", "protocol": "TLS", "port": 443}]}})
    }

    fn reference(kind: &str, namespace: &str, name: &str) -> ObjectRef {
        ObjectRef {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    #[test]
    fn only_objects_of_our_class_are_written_and_only_when_changed() {
        let mine = gateway("mine", "agentmesh");
        let theirs = gateway("theirs", "other");
        let stores = watched(&[
            class("agentmesh", CONTROLLER_NAME),
            class("other", "example.com/x"),
            mine,
            theirs,
        ]);
        let mut report = StatusReport::default();
        for name in ["mine", "theirs"] {
            let entry = report.entry(reference("Gateway", "default", name));
            entry
                .conditions
                .push(Condition::yes("Accepted", "Accepted", "ok", 1));
            entry.listeners.insert(
                "tls".into(),
                crate::status::ListenerStatus {
                    attached_routes: 0,
                    conditions: vec![Condition::yes("Programmed", "Programmed", "ok", 1)],
                },
            );
        }
        let found = patches(&stores, &catalog(report.clone()), "2030-01-01T00:00:00Z");
        assert_eq!(found.len(), 1, "{found:?}");
        let patch = &found[0];
        assert_eq!(patch.object.name, "mine");
        assert_eq!(patch.resource_version, "2");
        assert_eq!(
            patch.status["listeners"][0]["supportedKinds"],
            json!([{"group": GATEWAY_GROUP, "kind": "TLSRoute"}])
        );
        assert_eq!(
            patch.status["conditions"][0]["lastTransitionTime"],
            "2030-01-01T00:00:00Z"
        );

        // Once the object holds that status, nothing is written, even at a later time.
        let mut written = gateway("mine", "agentmesh");
        written["status"] = patch.status.clone();
        let stores = watched(&[class("agentmesh", CONTROLLER_NAME), written]);
        assert!(patches(&stores, &catalog(report), "2031-01-01T00:00:00Z").is_empty());
    }

    #[test]
    fn an_unreadable_route_reports_its_conditions_to_each_parent_of_ours() {
        let route = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "default", "resourceVersion": "3"},
            "spec": {"parentRefs": [{"name": "mine"}, {"name": "theirs"}], "rules": "not a list"}});
        let stores = watched(&[
            class("agentmesh", CONTROLLER_NAME),
            class("other", "example.com/x"),
            gateway("mine", "agentmesh"),
            gateway("theirs", "other"),
            route,
        ]);
        let mut report = StatusReport::default();
        report
            .entry(reference("HTTPRoute", "default", "r"))
            .conditions
            .push(Condition::no(
                "Accepted",
                "Invalid",
                "field spec.rules: invalid type",
                0,
            ));
        let found = patches(&stores, &catalog(report), "2030-01-01T00:00:00Z");
        assert_eq!(found.len(), 1);
        let parents = found[0].status["parents"].as_array().expect("parents");
        assert_eq!(parents.len(), 1, "{parents:?}");
        assert_eq!(parents[0]["parentRef"], json!({"name": "mine"}));
        assert_eq!(parents[0]["conditions"][0]["reason"], "Invalid");
    }

    #[test]
    fn report_parents_are_matched_to_the_routes_own_parent_refs() {
        let route = ObjectRef {
            kind: "HTTPRoute".into(),
            namespace: "apps".into(),
            name: "r".into(),
        };
        let spec = [json!({"name": "web", "namespace": "edge", "sectionName": "http"})];
        let parent = ParentStatus {
            parent: "edge/web".into(),
            section_name: Some("http".into()),
            port: None,
            conditions: Vec::new(),
        };
        assert_eq!(parent_ref(&route, &parent, &spec), spec[0]);
        let elsewhere = ParentStatus {
            parent: "Gateway \"web\"".into(),
            section_name: None,
            port: Some(80),
            conditions: Vec::new(),
        };
        assert_eq!(
            parent_ref(&route, &elsewhere, &spec),
            json!({"group": GATEWAY_GROUP, "kind": "Gateway", "namespace": "apps",
                   "name": "web", "port": 80})
        );
    }
}
