//! Metrics of the sidecar's transparent capture: captured connections by detected
//! protocol, connections and requests refused by the outbound policy, and connections
//! refused because they would loop back into the proxy.
//!
//! Labels are closed sets (protocol names); destinations go to the logs, never to labels.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// What the capture path detected on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CapturedProtocol {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
    /// TLS (a ClientHello).
    Tls,
    /// Anything else, forwarded byte for byte.
    Opaque,
    /// Nothing from the client within the detection timeout: forwarded byte for byte.
    ServerFirst,
}

impl CapturedProtocol {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::Http2 => "http2",
            Self::Tls => "tls",
            Self::Opaque => "opaque",
            Self::ServerFirst => "server_first",
        }
    }
}

#[derive(EncodeLabelSet, Clone, Hash, Eq, PartialEq, Debug)]
struct ProtocolLabelSet {
    protocol: &'static str,
}

/// The sidecar capture metrics, registered in the proxy's registry.
#[derive(Debug, Clone, Default)]
pub struct SidecarMetrics {
    connections: Family<ProtocolLabelSet, Counter>,
    denied: Family<ProtocolLabelSet, Counter>,
    loops: Counter,
}

impl SidecarMetrics {
    /// Registers the families in `registry` (prefix `agentmesh_` comes from the registry).
    pub fn register(registry: &mut Registry) -> Self {
        let m = SidecarMetrics::default();
        registry.register(
            "outbound_connections",
            "Connections captured from the pod's outbound traffic, by detected protocol",
            m.connections.clone(),
        );
        registry.register(
            "outbound_denied",
            "Captured connections (TLS, opaque TCP) and HTTP requests refused by the sidecar's outbound policy, by protocol",
            m.denied.clone(),
        );
        registry.register(
            "outbound_loop_refused",
            "Captured connections refused because their destination is one of the proxy's own ports",
            m.loops.clone(),
        );
        m
    }

    /// Counts one captured connection.
    pub fn connection(&self, protocol: CapturedProtocol) {
        self.connections
            .get_or_create(&ProtocolLabelSet {
                protocol: protocol.as_str(),
            })
            .inc();
    }

    /// Counts one refused connection or HTTP request.
    pub fn denied(&self, protocol: CapturedProtocol) {
        self.denied
            .get_or_create(&ProtocolLabelSet {
                protocol: protocol.as_str(),
            })
            .inc();
    }

    /// Counts one connection refused as a loop.
    pub fn loop_refused(&self) {
        self.loops.inc();
    }
}
