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

/// The resources as the controller serves them, as JSON (proto3 JSON mapping): an object
/// from resource name to resource, for `translate` and golden tests.
pub fn resources_json(resources: &Resources) -> serde_json::Value {
    let named: serde_json::Map<String, serde_json::Value> = named_resources(resources)
        .into_iter()
        .map(|(name, r)| (name, serde_json::to_value(r).unwrap_or_default()))
        .collect();
    serde_json::Value::Object(named)
}
