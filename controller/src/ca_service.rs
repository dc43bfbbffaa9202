//! The gRPC service `agentmesh.ca.v1.MeshCertificates`: sidecars send a CSR and get an
//! intermediate CA for intercepted TLS ([`crate::intermediate`]).
//!
//! Served next to ADS on the xDS address, and authenticated the same way ([`Auth`]): the
//! credential must belong to the node id the request names, so a pod can only ask for
//! its own intermediate. The names it may sign for are computed here from the
//! controller's current view of the node's policies (the resources ADS sends it), never
//! taken from the request. The root comes from a [`RootWatch`]; without one every call
//! fails with FAILED_PRECONDITION, and the controller logs why.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agentmesh_proto::ca::v1::mesh_certificates_server::{MeshCertificates, MeshCertificatesServer};
use agentmesh_proto::ca::v1::{SignIntermediateRequest, SignIntermediateResponse};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::auth::{Auth, NodeId};
use crate::intermediate::{self, InterceptNames, SignError};
use crate::mesh_ca::RootWatch;
use crate::snapshot::Catalog;

/// The mesh CA service over the catalogs ADS serves, the same authentication, and a root.
#[derive(Debug, Clone)]
pub struct MeshCaServer {
    catalogs: watch::Receiver<Arc<Catalog>>,
    auth: Auth,
    root: RootWatch,
    validity: Duration,
}

impl MeshCaServer {
    /// Signs intermediates valid for `validity` with the current root of `root`, for the
    /// nodes `auth` admits, constrained by what `catalogs` says they intercept.
    pub fn new(
        catalogs: watch::Receiver<Arc<Catalog>>,
        auth: Auth,
        root: RootWatch,
        validity: Duration,
    ) -> Self {
        MeshCaServer {
            catalogs,
            auth,
            root,
            validity,
        }
    }

    /// The tonic service, ready for `Server::add_service`.
    pub fn into_service(self) -> MeshCertificatesServer<Self> {
        MeshCertificatesServer::new(self)
    }
}

#[tonic::async_trait]
impl MeshCertificates for MeshCaServer {
    async fn sign_intermediate(
        &self,
        request: Request<SignIntermediateRequest>,
    ) -> Result<Response<SignIntermediateResponse>, Status> {
        let authorization = self.auth.check_request(&request)?;
        let request = request.into_inner();
        let node = NodeId::parse(&request.node_id)?;
        self.auth.admit(&node, authorization.as_deref()).await?;
        if node.role != "sidecar" {
            return Err(Status::permission_denied(format!(
                "node {node}: only sidecars get an intermediate CA for intercepted TLS"
            )));
        }
        let names = {
            let catalog = self.catalogs.borrow().clone();
            let resources = catalog
                .resources_for(&node)
                .map_err(|e| Status::permission_denied(format!("node {node}: {e}")))?;
            InterceptNames::of(resources.sidecar.as_ref())
        };
        let Some(root) = self.root.borrow().clone() else {
            tracing::error!(node = %node, "cannot sign an intermediate CA: the controller has no mesh root CA");
            return Err(Status::failed_precondition(
                "the controller has no mesh root CA to sign intermediates with (folder mode: \
                 start it with --mesh-ca-cert-file and --mesh-ca-key-file)",
            ));
        };
        let issued = intermediate::sign(
            &root,
            &node.name,
            &request.csr_pem,
            &names,
            self.validity,
            SystemTime::now(),
        )
        .map_err(|e| {
            let status = match &e {
                SignError::Csr(_) => Status::invalid_argument(format!("csrPem: {e}")),
                SignError::NothingIntercepted(_) => Status::permission_denied(e.to_string()),
                SignError::Root(_) | SignError::Name(_) => {
                    tracing::error!(node = %node, error = %e, "cannot sign an intermediate CA");
                    Status::failed_precondition(e.to_string())
                }
            };
            tracing::warn!(node = %node, error = %e, "intermediate CA refused");
            status
        })?;
        tracing::info!(
            node = %node,
            permitted = ?issued.permitted_dns,
            valid_for_s = self.validity.as_secs(),
            "intermediate CA signed"
        );
        Ok(Response::new(SignIntermediateResponse {
            chain_pem: issued.chain_pem,
            not_after: Some(timestamp(issued.not_after)),
            permitted_dns: issued.permitted_dns,
        }))
    }
}

fn timestamp(t: SystemTime) -> pbjson_types::Timestamp {
    let since = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    pbjson_types::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: 0,
    }
}
