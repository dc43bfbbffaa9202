//! Metrics of the xDS client: whether the stream to the controller is up, and the
//! updates received by outcome (`applied` or `rejected`). The time since the last applied
//! update is `agentmesh_config_last_reload_success_timestamp_seconds`, shared with the
//! file source. Also the intermediate CA requests of a sidecar that intercepts TLS
//! (`issued` or `failed`) and when the current intermediate expires.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(EncodeLabelSet, Clone, Hash, Eq, PartialEq, Debug)]
struct OutcomeLabelSet {
    outcome: &'static str,
}

/// The xDS client's metric families.
#[derive(Debug, Default)]
pub struct XdsMetrics {
    connected: Gauge,
    updates: Family<OutcomeLabelSet, Counter>,
    intermediate_requests: Family<OutcomeLabelSet, Counter>,
    intermediate_expiry: Gauge,
}

impl XdsMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = XdsMetrics::default();
        registry.register(
            "xds_connected",
            "1 while the xDS stream to the controller is open, else 0",
            m.connected.clone(),
        );
        registry.register(
            "xds_updates",
            "xDS updates received, by outcome (applied, or rejected with a NACK)",
            m.updates.clone(),
        );
        registry.register(
            "mesh_ca_intermediate_requests",
            "Requests for an intermediate CA to the controller, by outcome (issued, failed)",
            m.intermediate_requests.clone(),
        );
        registry.register(
            "mesh_ca_intermediate_expiry_timestamp_seconds",
            "When the controller-issued intermediate CA in use expires (Unix time); 0 without one",
            m.intermediate_expiry.clone(),
        );
        m
    }

    /// Counts one intermediate CA request; `expires` is the new one's expiry (Unix
    /// seconds) when it was issued.
    pub fn record_intermediate(&self, expires: Option<i64>) {
        let outcome = if expires.is_some() {
            "issued"
        } else {
            "failed"
        };
        self.intermediate_requests
            .get_or_create(&OutcomeLabelSet { outcome })
            .inc();
        if let Some(t) = expires {
            self.intermediate_expiry.set(t);
        }
    }

    /// Records whether the stream is open.
    pub fn set_connected(&self, connected: bool) {
        self.connected.set(i64::from(connected));
    }

    /// Counts one update.
    pub fn record_update(&self, applied: bool) {
        let outcome = if applied { "applied" } else { "rejected" };
        self.updates
            .get_or_create(&OutcomeLabelSet { outcome })
            .inc();
    }
}
