//! What the controller serves at one moment: every resource, named and versioned.
//!
//! A resource's version is a hash of its content (canonical JSON), so it changes exactly
//! when the resource does, and a restarted controller computes the same versions: a
//! proxy reconnecting with the versions it holds receives only real differences.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use agentmesh_proto::config::v1 as pb;
use agentmesh_proto::xds::v1::ConfigResource;
use agentmesh_proto::xds::v1::config_resource::Kind;
use agentmesh_proxy::config::file::Resources;
use agentmesh_proxy::config::xds::{named_resources, resource_name};
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
        Snapshot::update(resources, &Snapshot::default())
    }

    /// [`Snapshot::new`] for the next state of a node that was served `previous`: a
    /// resource encoded exactly as before keeps its version (and shares its bytes), so
    /// only changed resources are versioned again (hashing a resource's canonical JSON
    /// costs far more than encoding it). The result is the same as `new`'s.
    pub fn update(resources: &Resources, previous: &Snapshot) -> Arc<Snapshot> {
        let mut out = BTreeMap::new();
        for_each_resource(resources, |resource| {
            let name = resource.name();
            let value = resource.encode();
            let versioned = match previous.resources.get(&name) {
                Some(before) if before.body.value[..] == value[..] => before.clone(),
                _ => VersionedResource {
                    version: content_version(&resource.to_owned()),
                    body: Any {
                        type_url: agentmesh_proxy::config::xds::TYPE_URL.into(),
                        value: value.into(),
                    },
                },
            };
            out.insert(name, versioned);
        });
        Arc::new(Snapshot { resources: out })
    }
}

/// One resource of a [`Resources`], borrowed: what [`named_resources`] gives, without
/// copying it (a snapshot of a thousand routes would copy them all, for each change).
#[derive(Debug, Clone, Copy)]
enum ResourceRef<'a> {
    Settings(&'a pb::ProxySettings),
    Sidecar(&'a pb::SidecarSettings),
    Bind(&'a pb::Bind),
    Listener(&'a pb::Listener),
    Route(&'a pb::Route),
    Backend(&'a pb::Backend),
    Policy(&'a pb::Policy),
}

/// Calls `f` with each resource of `resources` (as [`named_resources`] lists them).
fn for_each_resource<'a>(resources: &'a Resources, mut f: impl FnMut(ResourceRef<'a>)) {
    f(ResourceRef::Settings(&resources.settings));
    if let Some(sidecar) = &resources.sidecar {
        f(ResourceRef::Sidecar(sidecar));
    }
    resources.binds.iter().for_each(|r| f(ResourceRef::Bind(r)));
    resources
        .listeners
        .iter()
        .for_each(|r| f(ResourceRef::Listener(r)));
    resources
        .routes
        .iter()
        .for_each(|r| f(ResourceRef::Route(r)));
    resources
        .backends
        .iter()
        .for_each(|r| f(ResourceRef::Backend(r)));
    resources
        .policies
        .iter()
        .for_each(|r| f(ResourceRef::Policy(r)));
}

impl ResourceRef<'_> {
    /// The resource as a `ConfigResource` of its own (a copy).
    fn to_owned(self) -> ConfigResource {
        let kind = match self {
            ResourceRef::Settings(r) => Kind::Settings(*r),
            ResourceRef::Sidecar(r) => Kind::Sidecar(r.clone()),
            ResourceRef::Bind(r) => Kind::Bind(r.clone()),
            ResourceRef::Listener(r) => Kind::Listener(r.clone()),
            ResourceRef::Route(r) => Kind::Route(r.clone()),
            ResourceRef::Backend(r) => Kind::Backend(r.clone()),
            ResourceRef::Policy(r) => Kind::Policy(r.clone()),
        };
        ConfigResource { kind: Some(kind) }
    }

    /// Its name on the wire ([`resource_name`] of the `ConfigResource`).
    fn name(self) -> String {
        match self {
            ResourceRef::Route(r) => format!("route/{}", r.key),
            ResourceRef::Policy(r) => format!("policy/{}", r.key),
            ResourceRef::Backend(r) => format!("backend/{}", r.key),
            ResourceRef::Listener(r) => format!("listener/{}", r.key),
            ResourceRef::Bind(r) => format!("bind/{}", r.key),
            // Singletons: their name does not depend on their content.
            other => resource_name(&other.to_owned()),
        }
    }

    /// Its encoding as a `ConfigResource`: the one field of the `kind` oneof that is
    /// set, which is the encoding of that message as field `tag`.
    fn encode(self) -> Vec<u8> {
        use prost::encoding::message;
        fn one<M: Message>(tag: u32, m: &M) -> Vec<u8> {
            let mut buf = Vec::with_capacity(message::encoded_len(tag, m));
            message::encode(tag, m, &mut buf);
            buf
        }
        // The field numbers of `ConfigResource.kind` (proto/…/xds/v1): a test checks
        // that these encodings are the `ConfigResource`'s.
        match self {
            ResourceRef::Bind(r) => one(1, r),
            ResourceRef::Listener(r) => one(2, r),
            ResourceRef::Route(r) => one(3, r),
            ResourceRef::Backend(r) => one(4, r),
            ResourceRef::Policy(r) => one(5, r),
            ResourceRef::Settings(r) => one(6, r),
            ResourceRef::Sidecar(r) => one(7, r),
        }
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
        self.resources_of(node).map(Cow::into_owned)
    }

    /// [`Catalog::resources_for`], borrowed where the catalog holds them as they are.
    fn resources_of(&self, node: &crate::auth::NodeId) -> Result<Cow<'_, Resources>, String> {
        match node.role.as_str() {
            "standalone" => Ok(Cow::Borrowed(&self.native)),
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
                    .map(Cow::Borrowed)
                    .ok_or_else(|| {
                        format!("{gateway} does not exist or is not of an agentmesh GatewayClass")
                    })
            }
            "sidecar" => {
                // Per-pod scoping (translate::sidecar): the native documents plus what
                // selects this pod.
                let (pod, namespace) = split_name(&node.name)?;
                Ok(Cow::Owned(crate::translate::sidecar::pod_resources(
                    &self.objects,
                    &self.native,
                    namespace,
                    pod,
                )))
            }
            _ => Err(format!(
                "this controller does not serve {} nodes yet",
                node.role
            )),
        }
    }

    /// The snapshot a node receives (empty when it receives nothing), for a node that was
    /// served `previous` (see [`Snapshot::update`]; an empty snapshot for a new node).
    pub fn snapshot_for(&self, node: &crate::auth::NodeId, previous: &Snapshot) -> Arc<Snapshot> {
        match self.resources_of(node) {
            Ok(resources) => Snapshot::update(&resources, previous),
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

#[cfg(test)]
mod tests {
    use agentmesh_proxy::config::file;

    use super::*;

    fn resources(prefix: &str) -> Resources {
        let text = format!(
            "binds:\n- name: main\n  port: 8080\n  listeners:\n  - name: http\n    routes:\n    - name: a\n      matches: [{{path: {{prefix: /a}}}}]\n      backends: [{{backend: up}}]\n    - name: b\n      matches: [{{path: {{prefix: {prefix}}}}}]\n      backends: [{{backend: up}}]\nbackends:\n- name: up\n  host: {{address: 127.0.0.1:9}}\n"
        );
        file::flatten(file::parse(&text, false).expect("valid config"))
    }

    #[test]
    fn resources_are_named_and_encoded_as_the_proxy_names_and_decodes_them() {
        let text = "settings: {}\nsidecar: {outboundBinds: [out]}\nbinds:\n- name: out\n  port: 15001\n  listeners:\n  - name: http\n    routes:\n    - name: a\n      backends: [{backend: up}]\n      policies: {timeouts: {request: 1s}}\nbackends:\n- name: up\n  host: {address: 127.0.0.1:9}\n";
        let resources = file::flatten(file::parse(text, false).expect("valid config"));
        let mut ours = BTreeMap::new();
        for_each_resource(&resources, |r| {
            ours.insert(r.name(), r.encode());
        });
        let theirs: BTreeMap<String, Vec<u8>> = named_resources(&resources)
            .into_iter()
            .map(|(name, r)| (name, r.encode_to_vec()))
            .collect();
        assert_eq!(ours, theirs);
        let kinds: std::collections::BTreeSet<&str> = theirs
            .keys()
            .map(|n| n.split('/').next().unwrap_or_default())
            .collect();
        assert_eq!(
            kinds,
            [
                "backend", "bind", "listener", "policy", "route", "settings", "sidecar"
            ]
            .into()
        );
    }

    #[test]
    fn an_update_versions_again_only_what_changed() {
        let before = Snapshot::new(&resources("/b"));
        // Unchanged: the same snapshot, every resource's bytes shared.
        let same = Snapshot::update(&resources("/b"), &before);
        assert_eq!(same, before);
        // One route changed: its version (and only its) differs, as from scratch.
        let after = Snapshot::update(&resources("/c"), &before);
        assert_eq!(after, Snapshot::new(&resources("/c")));
        let changed: Vec<&String> = after
            .resources
            .iter()
            .filter(|(name, r)| before.resources[*name].version != r.version)
            .map(|(name, _)| name)
            .collect();
        assert_eq!(changed, ["route/main/http/b"]);
    }
}
