//! What the controller serves at one moment: every resource, named and versioned.
//!
//! A resource's version is a hash of its content (canonical JSON), so it changes exactly
//! when the resource does, and a restarted controller computes the same versions: a
//! proxy reconnecting with the versions it holds receives only real differences.

use std::collections::BTreeMap;
use std::sync::Arc;

use agentmesh_proto::xds::v1::ConfigResource;
use agentmesh_proxy::config::file::Resources;
use agentmesh_proxy::config::xds::named_resources;
use pbjson_types::Any;
use prost::Message;

/// One resource ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionedResource {
    /// Content hash.
    pub version: String,
    /// The resource, encoded as `Any` of [`TYPE_URL`](agentmesh_proxy::config::xds::TYPE_URL).
    pub body: Any,
}

/// Every resource by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Resources by name (`route/main/http/api`).
    pub resources: BTreeMap<String, VersionedResource>,
}

impl Snapshot {
    /// Names, versions and encodes flat resources.
    pub fn new(resources: &Resources) -> Arc<Snapshot> {
        let resources = named_resources(resources)
            .into_iter()
            .map(|(name, r)| {
                let versioned = VersionedResource {
                    version: content_version(&r),
                    body: Any {
                        type_url: agentmesh_proxy::config::xds::TYPE_URL.into(),
                        value: r.encode_to_vec().into(),
                    },
                };
                (name, versioned)
            })
            .collect();
        Arc::new(Snapshot { resources })
    }
}

/// Everything the controller knows at one moment, able to say what each proxy serves.
///
/// The ADS server holds the latest catalog and asks it for a node's snapshot whenever the
/// catalog changes or a node connects; a node whose snapshot did not change is sent
/// nothing, so a change that concerns one pod reaches only that pod.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Resources for `standalone` nodes, and the base of every sidecar's: the folder's
    /// agentmesh-native config files.
    pub native: Resources,
    /// The Kubernetes objects, as read.
    pub objects: Arc<crate::objects::Objects>,
    /// Their translation.
    pub translation: crate::translate::Translation,
}

impl Catalog {
    /// The resources a node receives, or why it receives none.
    pub fn resources_for(&self, node: &crate::auth::NodeId) -> Result<Resources, String> {
        match node.role.as_str() {
            "standalone" => Ok(self.native.clone()),
            "gateway" => {
                let (name, namespace) = split_name(&node.name)?;
                let gateway = crate::objects::ObjectRef {
                    kind: "Gateway".into(),
                    namespace: namespace.into(),
                    name: name.into(),
                };
                self.translation
                    .gateways
                    .get(&gateway)
                    .cloned()
                    .ok_or_else(|| {
                        format!("{gateway} does not exist or is not of an agentmesh GatewayClass")
                    })
            }
            "sidecar" => {
                // Per-pod scoping (translate::sidecar): the native documents plus what
                // selects this pod.
                let (pod, namespace) = split_name(&node.name)?;
                Ok(crate::translate::sidecar::pod_resources(
                    &self.objects,
                    &self.native,
                    namespace,
                    pod,
                ))
            }
            _ => Err(format!(
                "this controller does not serve {} nodes yet",
                node.role
            )),
        }
    }

    /// The snapshot a node receives (empty when it receives nothing).
    pub fn snapshot_for(&self, node: &crate::auth::NodeId) -> Arc<Snapshot> {
        match self.resources_for(node) {
            Ok(resources) => Snapshot::new(&resources),
            Err(reason) => {
                tracing::debug!(node = %node, reason = %reason, "no resources for node");
                Arc::new(Snapshot::default())
            }
        }
    }
}

/// Splits a node name `<name>.<namespace>` (a namespace has no dots; a name may).
pub fn split_name(name: &str) -> Result<(&str, &str), String> {
    name.rsplit_once('.')
        .filter(|(n, ns)| !n.is_empty() && !ns.is_empty())
        .ok_or_else(|| format!("node name {name:?} is not `<name>.<namespace>`"))
}

/// FNV-1a of the resource's JSON with object keys sorted (protobuf encoding of map
/// fields has no fixed order, so it cannot be hashed directly).
fn content_version(resource: &ConfigResource) -> String {
    let value = serde_json::to_value(resource).unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    canonical(&value, &mut feed);
    format!("{hash:016x}")
}

fn canonical(value: &serde_json::Value, feed: &mut impl FnMut(&[u8])) {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            feed(b"{");
            for k in keys {
                feed(serde_json::Value::String(k.clone()).to_string().as_bytes());
                feed(b":");
                canonical(&map[k.as_str()], feed);
                feed(b",");
            }
            feed(b"}");
        }
        serde_json::Value::Array(items) => {
            feed(b"[");
            for item in items {
                canonical(item, feed);
                feed(b",");
            }
            feed(b"]");
        }
        other => feed(other.to_string().as_bytes()),
    }
}

impl Catalog {
    /// What `translate` prints: the resources of every node kind (proto3 JSON mapping,
    /// by resource name) and the status of every object.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        let native = resources_json(&self.native);
        if native.as_object().is_some_and(|m| m.len() > 1) {
            out.insert("standalone".into(), native);
        }
        let gateways: serde_json::Map<String, serde_json::Value> = self
            .translation
            .gateways
            .iter()
            .map(|(gateway, resources)| {
                (
                    format!("{}/{}", gateway.namespace, gateway.name),
                    resources_json(resources),
                )
            })
            .collect();
        if !gateways.is_empty() {
            out.insert("gateways".into(), serde_json::Value::Object(gateways));
        }
        // One entry per known Pod: what its sidecar would be served.
        let sidecars: serde_json::Map<String, serde_json::Value> = self
            .objects
            .pods
            .iter()
            .map(|pod| {
                let namespace = pod.metadata.namespace.clone().unwrap_or_default();
                let name = pod.metadata.name.clone().unwrap_or_default();
                let resources = crate::translate::sidecar::pod_resources(
                    &self.objects,
                    &self.native,
                    &namespace,
                    &name,
                );
                (format!("{namespace}/{name}"), resources_json(&resources))
            })
            .collect();
        if !sidecars.is_empty() {
            out.insert("sidecars".into(), serde_json::Value::Object(sidecars));
        }
        out.insert("status".into(), self.translation.status.to_json());
        serde_json::Value::Object(out)
    }
}

/// The resources as the controller serves them, as JSON (proto3 JSON mapping): an object
/// from resource name to resource, for `translate` and golden tests.
pub fn resources_json(resources: &Resources) -> serde_json::Value {
    let named: serde_json::Map<String, serde_json::Value> = named_resources(resources)
        .into_iter()
        .map(|(name, r)| (name, serde_json::to_value(r).unwrap_or_default()))
        .collect();
    serde_json::Value::Object(named)
}
