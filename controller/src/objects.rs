//! The controller's input: every Kubernetes object translation reads, as typed values.
//!
//! Both sources fill the same [`Objects`]: the folder source parses manifests (the YAML a
//! user would `kubectl apply`, several documents per file), the Kubernetes source copies
//! its reflector stores. Translation is a pure function of an `Objects` value.
//!
//! Objects are identified by an [`ObjectRef`] (kind, namespace, name). Gateway API kinds
//! are accepted in any of the API versions users write (`v1`, `v1beta1`, `v1alpha2`): the
//! fields we read have the same shape in each.

use std::collections::BTreeMap;

use gateway_api::apis::experimental::httproutes::HttpRouteRulesRetry;
use gateway_api::apis::standard::gatewayclasses::GatewayClass;
use gateway_api::apis::standard::gateways::Gateway;
use gateway_api::apis::standard::grpcroutes::GrpcRoute;
use gateway_api::apis::standard::httproutes::HttpRoute;
use gateway_api::apis::standard::referencegrants::ReferenceGrant;
use gateway_api::apis::standard::tlsroutes::TlsRoute;
use gateway_api::experimental::tcproutes::TcpRoute;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use kube::api::ObjectMeta;
use serde::de::DeserializeOwned;

/// The API group of the Gateway API.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// The `controllerName` a GatewayClass must carry for agentmesh to program its Gateways.
pub const CONTROLLER_NAME: &str = "agentmesh.dev/gateway-controller";

/// Names one object: its kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// `Gateway`, `HTTPRoute`, `Service`, …
    pub kind: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectRef {
    /// A reference to an object of `kind` with `meta`'s namespace and name.
    pub fn of(kind: &str, meta: &ObjectMeta) -> ObjectRef {
        ObjectRef {
            kind: kind.to_owned(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {:?}", self.kind, self.name)
        } else {
            write!(f, "{} \"{}/{}\"", self.kind, self.namespace, self.name)
        }
    }
}

/// Every object translation reads. Each list is sorted by namespace and name, so that
/// translation output does not depend on the order a source delivered objects in.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    /// `GatewayClass` (cluster-scoped).
    pub gateway_classes: Vec<GatewayClass>,
    /// `Gateway`.
    pub gateways: Vec<Gateway>,
    /// `HTTPRoute`.
    pub http_routes: Vec<HttpRoute>,
    /// `spec.rules[].retry` of each HTTPRoute that sets one, by route (namespace, name) and
    /// rule index. Retry is in the Gateway API's experimental channel, which the standard
    /// `HttpRoute` type does not carry, so it is read from the manifest beside it.
    pub http_route_retries: BTreeMap<(String, String), BTreeMap<usize, HttpRouteRulesRetry>>,
    /// `GRPCRoute`.
    pub grpc_routes: Vec<GrpcRoute>,
    /// `TLSRoute`.
    pub tls_routes: Vec<TlsRoute>,
    /// `TCPRoute`.
    pub tcp_routes: Vec<TcpRoute>,
    /// `ReferenceGrant`.
    pub reference_grants: Vec<ReferenceGrant>,
    /// `Service` (core/v1).
    pub services: Vec<Service>,
    /// `Secret` (core/v1), for listener certificates.
    pub secrets: Vec<Secret>,
    /// `Pod` (core/v1), for sidecar scoping.
    pub pods: Vec<Pod>,
    /// `Namespace` (core/v1), for labels (route namespace selectors, injection).
    pub namespaces: Vec<Namespace>,
    /// `AgentBackend` (agentmesh.dev).
    pub agent_backends: Vec<crate::crd::AgentBackend>,
    /// `AgentPolicy` (agentmesh.dev).
    pub agent_policies: Vec<crate::crd::AgentPolicy>,
    /// Objects that could not be read: each is reported in status and otherwise ignored,
    /// so one bad manifest never hides the good ones.
    pub rejected: Vec<Rejected>,
}

/// An object (or a document that should have been one) that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// What it claims to be, as far as that could be read.
    pub reference: ObjectRef,
    /// Where it came from (`file.yaml#2` for the second document of a file).
    pub origin: String,
    /// Why it was rejected, naming the field.
    pub reason: String,
}

/// What [`Objects::insert`] did with a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// The document became an object.
    Object(ObjectRef),
    /// A kind translation does not read (a ConfigMap, a Deployment): skipped.
    Ignored(ObjectRef),
    /// The document was recorded in [`Objects::rejected`].
    Rejected(ObjectRef),
}

impl Objects {
    /// Adds one manifest (a JSON value with `apiVersion`, `kind` and `metadata`).
    /// `origin` says where it came from, for messages.
    pub fn insert(&mut self, value: serde_json::Value, origin: &str) -> Inserted {
        let api_version = value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let kind = value
            .get("kind")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let meta = value.get("metadata");
        let field = |name: &str| {
            meta.and_then(|m| m.get(name))
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let cluster_scoped = matches!(kind.as_str(), "GatewayClass" | "Namespace");
        let mut namespace = field("namespace");
        if namespace.is_empty() && !cluster_scoped {
            namespace = "default".into();
        }
        let reference = ObjectRef {
            kind: kind.clone(),
            namespace,
            name: field("name"),
        };
        if reference.name.is_empty() {
            return self.reject(reference, origin, "field metadata.name: required");
        }
        let result = match (group, kind.as_str()) {
            (GATEWAY_GROUP, "GatewayClass") => push(&mut self.gateway_classes, value, false),
            (GATEWAY_GROUP, "Gateway") => push(&mut self.gateways, value, true),
            (GATEWAY_GROUP, "HTTPRoute") => match http_route_retries(&value) {
                Ok(retries) => push(&mut self.http_routes, value, true).map(|()| {
                    if !retries.is_empty() {
                        let key = (reference.namespace.clone(), reference.name.clone());
                        self.http_route_retries.insert(key, retries);
                    }
                }),
                Err(e) => Err(e),
            },
            (GATEWAY_GROUP, "GRPCRoute") => push(&mut self.grpc_routes, value, true),
            (GATEWAY_GROUP, "TLSRoute") => push(&mut self.tls_routes, value, true),
            (GATEWAY_GROUP, "TCPRoute") => push(&mut self.tcp_routes, value, true),
            (GATEWAY_GROUP, "ReferenceGrant") => push(&mut self.reference_grants, value, true),
            ("", "Service") => push(&mut self.services, value, true),
            ("", "Secret") => push(&mut self.secrets, value, true),
            ("", "Pod") => push(&mut self.pods, value, true),
            ("", "Namespace") => push(&mut self.namespaces, value, false),
            (crate::crd::GROUP, "AgentBackend") => push_strict(&mut self.agent_backends, value),
            (crate::crd::GROUP, "AgentPolicy") => push_strict(&mut self.agent_policies, value),
            _ => return Inserted::Ignored(reference),
        };
        match result {
            Ok(()) => Inserted::Object(reference),
            Err(reason) => self.reject(reference, origin, &reason),
        }
    }

    fn reject(&mut self, reference: ObjectRef, origin: &str, reason: &str) -> Inserted {
        self.rejected.push(Rejected {
            reference: reference.clone(),
            origin: origin.to_owned(),
            reason: reason.to_owned(),
        });
        Inserted::Rejected(reference)
    }

    /// Puts every list in namespace/name order (call once after the last insert).
    pub fn sort(&mut self) {
        fn by_key<T: kube::Resource>(items: &mut [T]) {
            fn key<T: kube::Resource>(o: &T) -> (Option<&str>, Option<&str>) {
                (o.meta().namespace.as_deref(), o.meta().name.as_deref())
            }
            items.sort_by(|a, b| key(a).cmp(&key(b)));
        }
        by_key(&mut self.gateway_classes);
        by_key(&mut self.gateways);
        by_key(&mut self.http_routes);
        by_key(&mut self.grpc_routes);
        by_key(&mut self.tls_routes);
        by_key(&mut self.tcp_routes);
        by_key(&mut self.reference_grants);
        by_key(&mut self.services);
        by_key(&mut self.secrets);
        by_key(&mut self.pods);
        by_key(&mut self.namespaces);
        by_key(&mut self.agent_backends);
        by_key(&mut self.agent_policies);
    }

    /// Appends copies of `other`'s objects after this value's own, as if its documents
    /// had been inserted next (call [`Objects::sort`] after the last one).
    pub fn append(&mut self, other: &Objects) {
        // Destructured, so that a kind added to `Objects` cannot be forgotten here.
        let Objects {
            gateway_classes,
            gateways,
            http_routes,
            http_route_retries,
            grpc_routes,
            tls_routes,
            tcp_routes,
            reference_grants,
            services,
            secrets,
            pods,
            namespaces,
            agent_backends,
            agent_policies,
            rejected,
        } = other;
        self.gateway_classes.extend_from_slice(gateway_classes);
        self.gateways.extend_from_slice(gateways);
        self.http_routes.extend_from_slice(http_routes);
        self.http_route_retries.extend(
            http_route_retries
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        self.grpc_routes.extend_from_slice(grpc_routes);
        self.tls_routes.extend_from_slice(tls_routes);
        self.tcp_routes.extend_from_slice(tcp_routes);
        self.reference_grants.extend_from_slice(reference_grants);
        self.services.extend_from_slice(services);
        self.secrets.extend_from_slice(secrets);
        self.pods.extend_from_slice(pods);
        self.namespaces.extend_from_slice(namespaces);
        self.agent_backends.extend_from_slice(agent_backends);
        self.agent_policies.extend_from_slice(agent_policies);
        self.rejected.extend_from_slice(rejected);
    }

    /// How many objects were read (rejected ones included).
    pub fn count(&self) -> usize {
        self.gateway_classes.len()
            + self.gateways.len()
            + self.http_routes.len()
            + self.grpc_routes.len()
            + self.tls_routes.len()
            + self.tcp_routes.len()
            + self.reference_grants.len()
            + self.services.len()
            + self.secrets.len()
            + self.pods.len()
            + self.namespaces.len()
            + self.agent_backends.len()
            + self.agent_policies.len()
            + self.rejected.len()
    }

    /// Labels of a namespace (empty when the namespace object is unknown).
    pub fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        self.namespaces
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(namespace))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default()
    }
}

/// Deserializes `value` as `T` and appends it; a namespaced kind without a namespace is
/// put in `default`, as `kubectl apply` would.
/// The `spec.rules[].retry` of an HTTPRoute manifest, by rule index.
fn http_route_retries(
    value: &serde_json::Value,
) -> Result<BTreeMap<usize, HttpRouteRulesRetry>, String> {
    let mut out = BTreeMap::new();
    let rules = value
        .pointer("/spec/rules")
        .and_then(|r| r.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, rule) in rules.iter().enumerate() {
        let Some(retry) = rule.get("retry") else {
            continue;
        };
        let retry: HttpRouteRulesRetry = serde_path_to_error::deserialize(retry.clone())
            .map_err(|e| format!("field spec.rules[{i}].retry.{}: {}", e.path(), e.inner()))?;
        out.insert(i, retry);
    }
    Ok(out)
}

fn push<T: DeserializeOwned + kube::Resource>(
    items: &mut Vec<T>,
    value: serde_json::Value,
    namespaced: bool,
) -> Result<(), String> {
    let mut object: T = serde_path_to_error::deserialize(value)
        .map_err(|e| format!("field {}: {}", e.path(), e.inner()))?;
    if namespaced && object.meta().namespace.is_none() {
        object.meta_mut().namespace = Some("default".into());
    }
    items.push(object);
    Ok(())
}

/// [`push`] for agentmesh's own kinds, which are strict: besides the unknown fields their
/// types refuse inside `spec`, an unknown top-level field is refused too, and the API
/// version must be the one we serve.
fn push_strict<T: DeserializeOwned + kube::Resource<DynamicType = ()>>(
    items: &mut Vec<T>,
    value: serde_json::Value,
) -> Result<(), String> {
    let api_version = value
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let expected = T::api_version(&());
    if api_version != expected {
        return Err(format!(
            "field apiVersion: {api_version:?} is not served; use {expected:?}"
        ));
    }
    if let Some(map) = value.as_object()
        && let Some(unknown) = map
            .keys()
            .find(|k| !["apiVersion", "kind", "metadata", "spec", "status"].contains(&k.as_str()))
    {
        return Err(format!("field {unknown}: unknown field"));
    }
    if value.get("spec").is_none() {
        return Err("field spec: required".into());
    }
    push(items, value, true)
}
