//! The delta ADS server (`envoy.service.discovery.v3.AggregatedDiscoveryService`,
//! `DeltaAggregatedResources`).
//!
//! One stream per proxy. The first request names the node and subscribes (`*`, or an
//! empty list, means every resource; explicit names are honoured too) and may list the
//! versions the proxy already holds (`initial_resource_versions`, after a reconnect). The
//! server answers with everything the proxy lacks, then with each snapshot change it
//! sends only resources whose version differs from what the proxy holds, and the names
//! of those that are gone (`removed_resources`). Every response carries a fresh nonce;
//! the proxy's ACK or NACK echoes it, and a NACK's `error_detail` is logged with the node
//! id. A rejected update counts as held by the proxy (it keeps what it received and
//! recompiles on the next change), so a fix on disk is sent as an ordinary change.
//!
//! This module must not know where snapshots come from.

use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentmesh_proto::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use agentmesh_proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use agentmesh_proxy::config::xds::TYPE_URL;
use futures_util::Stream;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Auth, NodeId};
use crate::snapshot::{Catalog, Snapshot};

/// The ADS service over a stream of snapshots.
#[derive(Debug, Clone)]
pub struct AdsServer {
    catalogs: watch::Receiver<Arc<Catalog>>,
    auth: Auth,
}

impl AdsServer {
    /// Serves the latest of `catalogs` to the clients `auth` admits.
    pub fn new(catalogs: watch::Receiver<Arc<Catalog>>, auth: Auth) -> Self {
        AdsServer { catalogs, auth }
    }

    /// The tonic service, ready for `Server::add_service`.
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type DeltaAggregatedResourcesStream = ResponseStream;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let authorization = self.auth.check_request(&request)?;
        let mut requests = request.into_inner();
        let first = requests
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the stream ended before its first request"))?;
        let node = NodeId::parse(first.node.as_ref().map_or("", |n| n.id.as_str()))?;
        self.auth.admit(&node, authorization.as_deref()).await?;
        if first.type_url != TYPE_URL {
            return Err(Status::invalid_argument(format!(
                "unknown resource type {:?}; this controller serves {TYPE_URL}",
                first.type_url
            )));
        }
        tracing::info!(node = %node, "proxy subscribed");
        let (tx, rx) = mpsc::channel(16);
        let stream = ProxyStream {
            node,
            subscription: Subscription::default(),
            held: first.initial_resource_versions.clone(),
            nonce: 0,
            snapshot_took: Duration::ZERO,
            responses: tx,
        };
        tokio::spawn(stream.run(first, requests, self.catalogs.clone()));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Which resources a proxy asked for.
#[derive(Debug, Default)]
struct Subscription {
    wildcard: bool,
    names: BTreeSet<String>,
}

impl Subscription {
    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

/// The server's side of one proxy's stream.
struct ProxyStream {
    node: NodeId,
    subscription: Subscription,
    /// What the proxy holds (or was sent): name → version.
    held: HashMap<String, String>,
    nonce: u64,
    /// How long the latest snapshot took to compute, for the log line of its update.
    snapshot_took: Duration,
    responses: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
}

impl ProxyStream {
    async fn run(
        mut self,
        first: DeltaDiscoveryRequest,
        mut requests: Streaming<DeltaDiscoveryRequest>,
        mut catalogs: watch::Receiver<Arc<Catalog>>,
    ) {
        // An empty first subscription is the legacy spelling of the wildcard.
        self.subscription.wildcard = first.resource_names_subscribe.is_empty();
        self.update_subscription(&first);
        let mut snapshot = catalogs
            .borrow_and_update()
            .snapshot_for(&self.node, &Snapshot::default());
        // The initial state is always answered, even when empty: it is the proxy's
        // first complete config.
        if !self.send_changes(&snapshot, true).await {
            return;
        }
        loop {
            tokio::select! {
                request = requests.message() => match request {
                    Ok(Some(request)) => {
                        if !self.handle(request, &snapshot).await {
                            return;
                        }
                    }
                    Ok(None) => {
                        tracing::info!(node = %self.node, "proxy disconnected");
                        return;
                    }
                    Err(e) => {
                        tracing::info!(node = %self.node, error = %e, "proxy stream failed");
                        return;
                    }
                },
                changed = catalogs.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let started = Instant::now();
                    // The catalog is not borrowed while the snapshot is computed: a
                    // borrow would hold up the next publication.
                    let catalog = catalogs.borrow_and_update().clone();
                    let next = catalog.snapshot_for(&self.node, &snapshot);
                    drop(catalog);
                    if next == snapshot {
                        continue;
                    }
                    snapshot = next;
                    self.snapshot_took = started.elapsed();
                    if !self.send_changes(&snapshot, false).await {
                        return;
                    }
                }
            }
        }
    }

    /// Handles an ACK, a NACK or a subscription change. Returns false when the proxy
    /// is gone.
    async fn handle(&mut self, request: DeltaDiscoveryRequest, snapshot: &Snapshot) -> bool {
        if request.type_url != TYPE_URL {
            tracing::debug!(node = %self.node, type_url = %request.type_url, "request for a type this controller does not serve; ignored");
            return true;
        }
        if !request.response_nonce.is_empty() {
            match &request.error_detail {
                Some(error) => tracing::warn!(
                    node = %self.node,
                    nonce = %request.response_nonce,
                    error = %error.message,
                    "proxy rejected an update (NACK)"
                ),
                None => {
                    tracing::debug!(node = %self.node, nonce = %request.response_nonce, "update acknowledged")
                }
            }
        }
        if request.resource_names_subscribe.is_empty()
            && request.resource_names_unsubscribe.is_empty()
        {
            return true;
        }
        self.update_subscription(&request);
        self.send_changes(snapshot, false).await
    }

    fn update_subscription(&mut self, request: &DeltaDiscoveryRequest) {
        for name in &request.resource_names_subscribe {
            if name == "*" {
                self.subscription.wildcard = true;
            } else {
                self.subscription.names.insert(name.clone());
            }
        }
        for name in &request.resource_names_unsubscribe {
            if name == "*" {
                self.subscription.wildcard = false;
            } else {
                self.subscription.names.remove(name);
            }
            // An unsubscribed resource is forgotten: a later subscribe sends it again.
            self.held.remove(name);
        }
        if !self.subscription.wildcard {
            let subscription = &self.subscription;
            self.held
                .retain(|name, _| subscription.names.contains(name));
        }
    }

    /// Sends what the proxy lacks, if anything (or always, with `always`). Returns false
    /// when the proxy is gone.
    async fn send_changes(&mut self, snapshot: &Snapshot, always: bool) -> bool {
        let started = Instant::now();
        let resources: Vec<Resource> = snapshot
            .resources
            .iter()
            .filter(|(name, r)| {
                self.subscription.wants(name) && self.held.get(*name) != Some(&r.version)
            })
            .map(|(name, r)| Resource {
                version: r.version.clone(),
                resource: Some(r.body.clone()),
                name: name.clone(),
            })
            .collect();
        let removed: Vec<String> = self
            .held
            .keys()
            .filter(|name| !snapshot.resources.contains_key(*name))
            .cloned()
            .collect();
        if resources.is_empty() && removed.is_empty() && !always {
            return true;
        }
        for r in &resources {
            self.held.insert(r.name.clone(), r.version.clone());
        }
        for name in &removed {
            self.held.remove(name);
        }
        self.nonce += 1;
        let response = DeltaDiscoveryResponse {
            system_version_info: String::new(),
            type_url: TYPE_URL.into(),
            nonce: self.nonce.to_string(),
            removed_resources: removed,
            resources,
        };
        tracing::info!(
            node = %self.node,
            nonce = %response.nonce,
            changed = response.resources.len(),
            removed = response.removed_resources.len(),
            snapshot_us = u64::try_from(std::mem::take(&mut self.snapshot_took).as_micros())
                .unwrap_or(u64::MAX),
            diff_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "update sent"
        );
        self.responses.send(Ok(response)).await.is_ok()
    }
}
