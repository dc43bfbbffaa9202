//! The Kubernetes mode of the controller: everything that talks to the API server.
//!
//! - [`source`]: reflectors for every kind translation reads, debounced into a fresh
//!   [`Objects`](crate::objects::Objects) → [`translate`](crate::translate) →
//!   [`Catalog`](crate::snapshot::Catalog) published on a watch channel, exactly as the
//!   folder source does, so the ADS server cannot tell the two apart.
//! - [`status`]: writes the conditions of each translation back to the status
//!   subresource of the objects that are ours, only when they changed.
//! - [`token_review`]: verifies a proxy's projected service-account token with a
//!   TokenReview and checks that it belongs to the pod (or namespace) the proxy claims.
//! - [`apply`]: server-side apply of arbitrary objects (the gateway Deployments and
//!   Services the controller renders).
//! - [`leader`]: leader election between replicas (a Lease): only the leader writes
//!   status and applies; every replica serves xDS.
//! - [`webhook_cert`]: the injection webhook's serving certificate: generated into a
//!   Secret, rotated, its CA kept in the webhook configuration's `caBundle`, and
//!   written to files for the HTTPS server (or checked, when cert-manager keeps it).
//! - [`mesh_ca`]: the mesh CA's root, kept in a Secret (generated when absent) and
//!   handed to the signer, and its certificate published to every injected namespace.
//!
//! (The module is not called `kube`, so that `kube::…` always means the kube-rs crate.)
//!
//! Translation must not depend on anything here: it sees the same `Objects` either way.

pub mod apply;
pub mod leader;
pub mod mesh_ca;
pub mod source;
pub mod status;
pub mod token_review;
pub mod webhook_cert;

use std::path::Path;

use gateway_api::apis::standard::gatewayclasses::GatewayClass;
use gateway_api::apis::standard::gateways::Gateway;
use gateway_api::apis::standard::grpcroutes::GrpcRoute;
use gateway_api::apis::standard::httproutes::HttpRoute;
use gateway_api::apis::standard::referencegrants::ReferenceGrant;
use gateway_api::apis::standard::tlsroutes::TlsRoute;
use gateway_api::experimental::tcproutes::TcpRoute;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use kube::api::ApiResource;

/// The field manager of every write the controller makes (status, applied objects).
pub const FIELD_MANAGER: &str = "agentmesh-controller";

/// What the controller writes into an object's status, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusShape {
    /// Nothing (core kinds, ReferenceGrant).
    None,
    /// `status.conditions`, owned by us (GatewayClass of our class, our CRDs).
    Conditions,
    /// `status.conditions` and `status.listeners` of a Gateway of our class.
    Gateway,
    /// Our entries of a route's `status.parents` (others' entries are kept).
    RouteParents,
}

/// One kind the source watches.
#[derive(Debug, Clone)]
pub struct Kind {
    /// Group, version, kind and plural.
    pub resource: ApiResource,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// What status the controller writes to objects of this kind.
    pub status: StatusShape,
}

impl Kind {
    fn of<K: kube::Resource<DynamicType = ()>>(namespaced: bool, status: StatusShape) -> Kind {
        Kind {
            resource: ApiResource::erase::<K>(&()),
            namespaced,
            status,
        }
    }
}

/// Every kind translation reads, at the API version the controller's types have.
///
/// A kind whose CRD is not installed (TCPRoute is experimental) is treated as empty. A
/// kind added here needs its arm in `Objects::insert` too.
pub fn kinds() -> Vec<Kind> {
    use StatusShape as S;
    vec![
        Kind::of::<GatewayClass>(false, S::Conditions),
        Kind::of::<Gateway>(true, S::Gateway),
        Kind::of::<HttpRoute>(true, S::RouteParents),
        Kind::of::<GrpcRoute>(true, S::RouteParents),
        Kind::of::<TlsRoute>(true, S::RouteParents),
        Kind::of::<TcpRoute>(true, S::RouteParents),
        Kind::of::<ReferenceGrant>(true, S::None),
        Kind::of::<Service>(true, S::None),
        Kind::of::<Secret>(true, S::None),
        Kind::of::<Pod>(true, S::None),
        Kind::of::<Namespace>(false, S::None),
        Kind::of::<crate::crd::AgentBackend>(true, S::Conditions),
        Kind::of::<crate::crd::AgentPolicy>(true, S::Conditions),
    ]
}

/// A client for the API server: from `kubeconfig` when given, otherwise the in-cluster
/// service account, `KUBECONFIG` or `~/.kube/config` (kube-rs's inference order).
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, crate::BoxError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            format!("no Kubernetes configuration (in-cluster, KUBECONFIG or ~/.kube/config): {e}")
        })?,
    };
    Ok(kube::Client::try_from(config)?)
}
