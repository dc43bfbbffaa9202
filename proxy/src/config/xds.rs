//! The xDS client: configuration from the controller over delta ADS.
//!
//! The proxy opens one `DeltaAggregatedResources` stream, subscribes to every resource
//! of our one type ([`TYPE_URL`]), and merges each response (changed resources, removed
//! names) into the set it has received. Each merged set is compiled with the same
//! [`compile`](super::compile) as a config file; a valid one replaces the running config
//! atomically and is ACKed, an invalid one is NACKed with the compile error (resource and
//! field) while the last good config keeps serving. When the stream breaks the proxy keeps
//! serving and reconnects with exponential backoff and jitter, sending the versions it
//! holds so the controller sends only what changed meanwhile.
//!
//! A config whose mesh CA is controller-issued (`meshCa.controller`) is applied only once
//! an intermediate for it is held ([`issued_ca`]): the client asks the controller for one
//! before compiling, and renews it from the same loop that reads responses.
//!
//! The resource naming and the mapping between flat [`Resources`] and named
//! [`ConfigResource`]s live here too, and the controller uses them, so both ends agree.
//! This module must not know where the controller gets its resources from.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agentmesh_proto::envoy::config::core::v3::Node;
use agentmesh_proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use agentmesh_proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use agentmesh_proto::google::rpc::Status;
use agentmesh_proto::xds::v1::{ConfigResource, config_resource::Kind};
use prost::Message;
use tokio::sync::mpsc;

use super::file::Resources;
use super::{CompileContext, ConfigError, Store, compile, issued_ca};
use crate::admin::Readiness;
use crate::telemetry::Metrics;

/// The one resource type served over xDS: any resource of the config model.
pub const TYPE_URL: &str = "type.googleapis.com/agentmesh.xds.v1.ConfigResource";

/// gRPC status code `INVALID_ARGUMENT`, sent in the NACK of an invalid update.
const INVALID_ARGUMENT: i32 = 3;

/// First reconnect delay; doubles per failed attempt up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Longest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The name of a resource on the wire: `<kind>/<key>`, or the kind for singletons.
pub fn resource_name(resource: &ConfigResource) -> String {
    match &resource.kind {
        Some(Kind::Bind(b)) => format!("bind/{}", b.key),
        Some(Kind::Listener(l)) => format!("listener/{}", l.key),
        Some(Kind::Route(r)) => format!("route/{}", r.key),
        Some(Kind::Backend(b)) => format!("backend/{}", b.key),
        Some(Kind::Policy(p)) => format!("policy/{}", p.key),
        Some(Kind::Settings(_)) => "settings".into(),
        Some(Kind::Sidecar(_)) => "sidecar".into(),
        None => String::new(),
    }
}

/// Splits flat resources into named xDS resources, sorted by name.
pub fn named_resources(resources: &Resources) -> BTreeMap<String, ConfigResource> {
    let wrap = |kind| ConfigResource { kind: Some(kind) };
    let mut all: Vec<ConfigResource> = vec![wrap(Kind::Settings(resources.settings))];
    all.extend(resources.sidecar.clone().map(Kind::Sidecar).map(wrap));
    all.extend(resources.binds.iter().cloned().map(Kind::Bind).map(wrap));
    all.extend(
        resources
            .listeners
            .iter()
            .cloned()
            .map(Kind::Listener)
            .map(wrap),
    );
    all.extend(resources.routes.iter().cloned().map(Kind::Route).map(wrap));
    all.extend(
        resources
            .backends
            .iter()
            .cloned()
            .map(Kind::Backend)
            .map(wrap),
    );
    all.extend(
        resources
            .policies
            .iter()
            .cloned()
            .map(Kind::Policy)
            .map(wrap),
    );
    all.into_iter().map(|r| (resource_name(&r), r)).collect()
}

/// Puts named resources back into flat [`Resources`], in name order. (Routes whose
/// precedence ties are therefore ordered by key, as the Gateway API orders by name,
/// rather than by position in a file.)
pub fn assemble<'a>(resources: impl IntoIterator<Item = &'a ConfigResource>) -> Resources {
    let mut out = Resources::default();
    for r in resources {
        match r.kind.clone() {
            Some(Kind::Bind(b)) => out.binds.push(b),
            Some(Kind::Listener(l)) => out.listeners.push(l),
            Some(Kind::Route(r)) => out.routes.push(r),
            Some(Kind::Backend(b)) => out.backends.push(b),
            Some(Kind::Policy(p)) => out.policies.push(p),
            Some(Kind::Settings(s)) => out.settings = s,
            Some(Kind::Sidecar(s)) => out.sidecar = Some(s),
            None => {}
        }
    }
    out
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct XdsOptions {
    /// The controller, like `http://127.0.0.1:16010`.
    pub address: String,
    /// Node id, `<role>~<ip>~<name>`.
    pub node_id: String,
    /// File holding the bearer token to present; read at every connect (rotation).
    pub token_file: Option<PathBuf>,
}

/// What the client needs from the rest of the proxy.
#[derive(Clone)]
pub struct XdsClient {
    /// Connection settings.
    pub options: XdsOptions,
    /// The running config.
    pub store: Arc<Store>,
    /// Shared parts for compiling.
    pub ctx: CompileContext,
    /// Where to count.
    pub metrics: Arc<Metrics>,
    /// Set ready after the first applied config.
    pub readiness: Readiness,
}

/// A resource as last received, whether or not it could be applied.
#[derive(Debug, Clone)]
struct Held {
    version: String,
    resource: ConfigResource,
}

/// Why a session with the controller ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("stream failed: {0}")]
    Stream(#[from] tonic::Status),
    #[error("{0}")]
    Local(String),
}

impl XdsClient {
    /// Runs the client until the process ends: connects, applies updates, reconnects.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut held: BTreeMap<String, Held> = BTreeMap::new();
            let mut failures: u32 = 0;
            loop {
                let mut got_response = false;
                match self.session(&mut held, &mut got_response).await {
                    Ok(()) => tracing::warn!(
                        controller = %self.options.address,
                        "xDS stream closed by the controller; serving the last good config"
                    ),
                    Err(e) => tracing::warn!(
                        controller = %self.options.address,
                        error = %e,
                        "xDS stream unavailable; serving the last good config"
                    ),
                }
                self.metrics.xds.set_connected(false);
                failures = if got_response {
                    0
                } else {
                    failures.saturating_add(1)
                };
                self.pause(&held, backoff(failures)).await;
            }
        })
    }

    /// One stream: subscribe, then apply responses until it ends.
    async fn session(
        &self,
        held: &mut BTreeMap<String, Held>,
        got_response: &mut bool,
    ) -> Result<(), SessionError> {
        let channel = tonic::transport::Endpoint::from_shared(self.options.address.clone())?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        let (requests, outbound) = mpsc::channel(16);
        let subscribe = DeltaDiscoveryRequest {
            node: Some(Node {
                id: self.options.node_id.clone(),
                metadata: None,
            }),
            type_url: TYPE_URL.into(),
            resource_names_subscribe: vec!["*".into()],
            initial_resource_versions: held
                .iter()
                .map(|(name, h)| (name.clone(), h.version.clone()))
                .collect::<HashMap<_, _>>(),
            ..Default::default()
        };
        let _ = requests.send(subscribe).await;
        let mut request =
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(outbound));
        if let Some(token) = self.token()? {
            let value = format!("Bearer {token}").parse().map_err(|_| {
                SessionError::Local("the token file holds invalid characters".into())
            })?;
            request.metadata_mut().insert("authorization", value);
        }
        let mut responses = client
            .delta_aggregated_resources(request)
            .await?
            .into_inner();
        self.metrics.xds.set_connected(true);
        tracing::info!(controller = %self.options.address, node = %self.options.node_id, "xDS stream open");
        loop {
            // A controller-issued mesh CA due for renewal (or a retry) interrupts the wait.
            let needed = issued_ca::Wants::of(&assemble(held.values().map(|h| &h.resource)));
            let renewal = self.ctx.issued_ca.next_attempt(needed.is_some(), backoff);
            let response = tokio::select! {
                response = responses.message() => response?,
                () = sleep_until(renewal) => {
                    if let Some(wants) = needed {
                        self.renew_ca(held, &wants).await;
                    }
                    continue;
                }
            };
            let Some(response) = response else {
                break;
            };
            *got_response = true;
            let error_detail = self.apply(held, &response).await.err().map(|e| Status {
                code: INVALID_ARGUMENT,
                message: e.to_string(),
            });
            let reply = DeltaDiscoveryRequest {
                type_url: response.type_url.clone(),
                response_nonce: response.nonce.clone(),
                error_detail,
                ..Default::default()
            };
            if requests.send(reply).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    fn token(&self) -> Result<Option<String>, SessionError> {
        let Some(path) = &self.options.token_file else {
            return Ok(None);
        };
        std::fs::read_to_string(path)
            .map(|t| Some(t.trim().to_string()))
            .map_err(|e| SessionError::Local(format!("cannot read {}: {e}", path.display())))
    }

    /// Waits `pause` before reconnecting, renewing the intermediate meanwhile when it is
    /// due: a controller that is away is tried (and the failure counted) on the
    /// renewal's own schedule too, not only when the stream comes back.
    async fn pause(&self, held: &BTreeMap<String, Held>, pause: Duration) {
        let until = tokio::time::Instant::now() + pause;
        loop {
            let needed = issued_ca::Wants::of(&assemble(held.values().map(|h| &h.resource)));
            let renewal = self.ctx.issued_ca.next_attempt(needed.is_some(), backoff);
            tokio::select! {
                () = tokio::time::sleep_until(until) => return,
                () = sleep_until(renewal) => {
                    if let Some(wants) = needed {
                        self.renew_ca(held, &wants).await;
                    }
                }
            }
        }
    }

    /// Asks for a new intermediate for `wants` (renewal, or a retry after a failure) and,
    /// on success, applies the held resources again so the new CA is the one minting. A
    /// failure keeps the current intermediate and is retried with backoff.
    async fn renew_ca(&self, held: &BTreeMap<String, Held>, wants: &issued_ca::Wants) {
        if self.fetch_ca(wants).await.is_err() {
            return;
        }
        let resources = assemble(held.values().map(|h| &h.resource));
        match self.install(resources).await {
            Ok(()) => tracing::info!("configuration applied with the new intermediate CA"),
            Err(e) => {
                tracing::warn!(error = %e, "held configuration still rejected; serving the previous one")
            }
        }
    }

    /// Requests an intermediate for `wants` and holds it; logs and counts the outcome.
    async fn fetch_ca(&self, wants: &issued_ca::Wants) -> Result<(), String> {
        let client = issued_ca::CaClient {
            address: self.options.address.clone(),
            node_id: self.options.node_id.clone(),
            token_file: self.options.token_file.clone(),
        };
        match client.request(wants).await {
            Ok(issued) => {
                let expires = issued
                    .not_after
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                self.metrics.xds.record_intermediate(Some(expires));
                tracing::info!(
                    permitted = ?issued.permitted_dns,
                    expires_unix = expires,
                    "intermediate CA issued by the controller"
                );
                self.ctx.issued_ca.set(issued);
                Ok(())
            }
            Err(e) => {
                self.metrics.xds.record_intermediate(None);
                let failures = self.ctx.issued_ca.failed();
                let keeping = self.ctx.issued_ca.current_ca().is_some();
                tracing::warn!(
                    error = %e,
                    failures,
                    keeping_current = keeping,
                    "cannot get an intermediate CA from the controller; will retry"
                );
                Err(e)
            }
        }
    }

    /// Compiles `resources` and installs them: first making sure a controller-issued
    /// mesh CA they ask for is held (requested now if there is none for their INTERCEPT
    /// hostnames, or it expired), so a config is never applied without the CA it mints
    /// with.
    async fn install(&self, resources: Resources) -> Result<(), ConfigError> {
        match issued_ca::Wants::of(&resources) {
            Some(wants) => {
                if self.ctx.issued_ca.usable_for(&wants).is_none() {
                    self.fetch_ca(&wants).await.map_err(|reason| {
                        ConfigError::Invalid(vec![super::FieldError {
                            resource: "sidecar settings".into(),
                            field: "meshCa.controller".into(),
                            reason: format!(
                                "cannot get an intermediate CA from the controller: {reason}"
                            ),
                        }])
                    })?;
                }
            }
            None => self.ctx.issued_ca.clear(),
        }
        let config = compile(resources, &self.ctx)
            .and_then(|config| super::watch::new_binds_can_listen(&self.store.load(), config))?;
        super::watch::install(&self.store, &self.ctx, config);
        self.readiness.set_ready();
        Ok(())
    }

    /// Merges a response into what was received and applies the result if it compiles.
    async fn apply(
        &self,
        held: &mut BTreeMap<String, Held>,
        response: &DeltaDiscoveryResponse,
    ) -> Result<(), ConfigError> {
        let invalid = |resource: String, field: &str, reason: String| {
            ConfigError::Invalid(vec![super::FieldError {
                resource,
                field: field.into(),
                reason,
            }])
        };
        if response.type_url != TYPE_URL {
            return Err(invalid(
                format!("response {:?}", response.nonce),
                "type_url",
                format!("unknown resource type {:?}", response.type_url),
            ));
        }
        let started = std::time::Instant::now();
        // Decode everything first, so that a bad resource leaves `held` as it was.
        let mut received = Vec::with_capacity(response.resources.len());
        for r in &response.resources {
            let resource = r
                .resource
                .as_ref()
                .filter(|any| any.type_url == TYPE_URL)
                .ok_or_else(|| {
                    invalid(
                        format!("resource {:?}", r.name),
                        "resource",
                        "not a ConfigResource".into(),
                    )
                })
                .and_then(|any| {
                    ConfigResource::decode(any.value.as_ref()).map_err(|e| {
                        invalid(format!("resource {:?}", r.name), "resource", e.to_string())
                    })
                })?;
            received.push((
                r.name.clone(),
                Held {
                    version: r.version.clone(),
                    resource,
                },
            ));
        }
        // What was received is held even when it cannot be applied: the controller
        // sends only changes, so a later fix arrives as a change to this set.
        held.extend(received);
        for name in &response.removed_resources {
            held.remove(name);
        }
        let resources = assemble(held.values().map(|h| &h.resource));
        match self.install(resources).await {
            Ok(()) => {
                self.metrics.xds.record_update(true);
                self.metrics.record_config_reload("xds", true);
                tracing::info!(
                    nonce = %response.nonce,
                    changed = response.resources.len(),
                    removed = response.removed_resources.len(),
                    took_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                    "xDS update applied"
                );
                Ok(())
            }
            Err(e) => {
                self.metrics.xds.record_update(false);
                self.metrics.record_config_reload("xds", false);
                tracing::warn!(nonce = %response.nonce, error = %e, "xDS update rejected (NACK); still serving the previous config");
                Err(e)
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// The delay before reconnect attempt `failures` (0 after a stream that worked):
/// exponential from [`BACKOFF_BASE`] up to [`BACKOFF_MAX`], with ±50% jitter so a fleet
/// of proxies does not reconnect in step.
fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << failures.min(10));
    let capped = exp.min(BACKOFF_MAX);
    capped.mul_f64(rand::random_range(0.5..1.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for _ in 0..50 {
            assert!(backoff(0) <= BACKOFF_BASE.mul_f64(1.5));
            assert!(backoff(30) <= BACKOFF_MAX.mul_f64(1.5));
            assert!(backoff(30) >= BACKOFF_MAX.mul_f64(0.5));
        }
    }

    #[test]
    fn named_resources_assemble_back_to_the_same_resources() {
        let text = "binds:\n- name: main\n  port: 8080\n  listeners:\n  - name: http\n    routes:\n    - name: api\n      backends: [{backend: up}]\nbackends:\n- name: up\n  host: {address: 127.0.0.1:9}\n";
        let resources = super::super::file::flatten(
            super::super::file::parse(text, false).expect("valid config"),
        );
        let named = named_resources(&resources);
        assert!(named.contains_key("route/main/http/api"));
        assert!(named.contains_key("backend/up"));
        assert_eq!(assemble(named.values()), resources);
    }
}
