//! Metrics of the xDS client: whether the stream to the controller is up, and the
//! updates received by outcome (`applied` or `rejected`). The time since the last applied
//! update is `agentmesh_config_last_reload_success_timestamp_seconds`, shared with the
//! file source.

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
        m
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
