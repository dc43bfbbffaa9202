//! Backend references: a route's `backendRefs` (and mirror targets) into proxy backends,
//! and the ReferenceGrant check every cross-namespace reference goes through.
//!
//! A Service backend is reached at `spec.clusterIP:port` when the Service has a cluster
//! IP (what kube-proxy answers on), at `externalName:port` for an ExternalName Service,
//! and at `<name>.<namespace>.svc.cluster.local:port` for a headless one. The backend key
//! is `<namespace>/<service>:<port>` (with `/h2` appended when the proxy must speak
//! HTTP/2 to it), so every route sending to the same Service port shares one backend.

use agentmesh_proto::config::v1 as pb;
use k8s_openapi::api::core::v1::Service;

use super::Problem;
use crate::objects::{GATEWAY_GROUP, Objects};

/// The ReferenceGrants of the input, for cross-namespace reference checks.
pub(super) struct Grants<'a> {
    objects: &'a Objects,
}

/// One side of a reference: who refers (or what is referred to).
#[derive(Debug, Clone, Copy)]
pub(super) struct RefSide<'a> {
    /// API group (`""` for core).
    pub group: &'a str,
    /// Kind.
    pub kind: &'a str,
    /// Namespace.
    pub namespace: &'a str,
}

impl<'a> Grants<'a> {
    /// The grants of `objects`.
    pub(super) fn new(objects: &'a Objects) -> Self {
        Grants { objects }
    }

    /// Whether `from` may refer to the object `name` of `to`: always within a namespace,
    /// across namespaces only when a ReferenceGrant in the target namespace allows it.
    pub(super) fn permits(&self, from: RefSide<'_>, to: RefSide<'_>, name: &str) -> bool {
        if from.namespace == to.namespace {
            return true;
        }
        self.objects.reference_grants.iter().any(|grant| {
            grant.metadata.namespace.as_deref() == Some(to.namespace)
                && grant.spec.from.iter().any(|f| {
                    f.group == from.group && f.kind == from.kind && f.namespace == from.namespace
                })
                && grant.spec.to.iter().any(|t| {
                    t.group == to.group
                        && t.kind == to.kind
                        && t.name.as_deref().is_none_or(|n| n == name)
                })
        })
    }
}

/// A backendRef, whatever the route kind.
#[derive(Debug, Clone)]
pub(super) struct BackendRef<'a> {
    pub group: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub name: &'a str,
    pub namespace: Option<&'a str>,
    pub port: Option<i32>,
}

/// Resolves a reference to a Service port into a backend key and backend.
///
/// `from` is the route (kind and namespace); `field` names the reference in messages;
/// `protocol` is what the proxy speaks to it (HTTP/2 for gRPC, or when the Service port
/// says `appProtocol: kubernetes.io/h2c`).
pub(super) fn resolve(
    objects: &Objects,
    grants: &Grants<'_>,
    from: RefSide<'_>,
    r: &BackendRef<'_>,
    field: &str,
    protocol: pb::UpstreamProtocol,
) -> Result<(String, pb::Backend), Problem> {
    let group = r.group.unwrap_or("");
    let kind = r.kind.unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        let shown = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{group}/{kind}")
        };
        return Err(Problem::new(
            "InvalidKind",
            format!("{field}: {shown} is not a supported backend kind (Service)"),
        ));
    }
    let namespace = r.namespace.unwrap_or(from.namespace);
    let to = RefSide {
        group: "",
        kind: "Service",
        namespace,
    };
    if !grants.permits(
        RefSide {
            group: GATEWAY_GROUP,
            ..from
        },
        to,
        r.name,
    ) {
        return Err(Problem::new(
            "RefNotPermitted",
            format!(
                "{field}: Service {namespace}/{} is in another namespace and no ReferenceGrant there allows {} from {} to refer to it",
                r.name, from.kind, from.namespace
            ),
        ));
    }
    let Some(service) = objects.services.iter().find(|s| {
        s.metadata.namespace.as_deref() == Some(namespace)
            && s.metadata.name.as_deref() == Some(r.name)
    }) else {
        return Err(Problem::new(
            "BackendNotFound",
            format!("{field}: Service {namespace}/{} does not exist", r.name),
        ));
    };
    let Some(port) = r.port else {
        return Err(Problem::new(
            "BackendNotFound",
            format!("{field}.port: required for a Service backend"),
        ));
    };
    let service_port = service
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .find(|p| p.port == port);
    let Some(service_port) = service_port else {
        return Err(Problem::new(
            "BackendNotFound",
            format!(
                "{field}.port: Service {namespace}/{} has no port {port}",
                r.name
            ),
        ));
    };
    let protocol = if service_port.app_protocol.as_deref() == Some("kubernetes.io/h2c") {
        pb::UpstreamProtocol::Http2
    } else {
        protocol
    };
    let mut key = format!("{namespace}/{}:{port}", r.name);
    if protocol == pb::UpstreamProtocol::Http2 {
        key.push_str("/h2");
    }
    let backend = pb::Backend {
        key: key.clone(),
        name: key.clone(),
        kind: Some(pb::backend::Kind::Host(pb::HostBackend {
            address: service_address(service, namespace, r.name, port),
            protocol: protocol as i32,
            tls: None,
        })),
        policies: None,
    };
    Ok((key, backend))
}

/// Where a Service port is reached.
fn service_address(service: &Service, namespace: &str, name: &str, port: i32) -> String {
    let spec = service.spec.as_ref();
    if let Some(external) = spec
        .filter(|s| s.type_.as_deref() == Some("ExternalName"))
        .and_then(|s| s.external_name.as_deref())
    {
        return format!("{external}:{port}");
    }
    match spec.and_then(|s| s.cluster_ip.as_deref()) {
        Some(ip) if !ip.is_empty() && ip != "None" => {
            if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            }
        }
        _ => format!("{name}.{namespace}.svc.cluster.local:{port}"),
    }
}
