//! Metrics of the sidecar's transparent capture: captured connections by detected
//! protocol (outbound and inbound), connections and requests refused by the outbound
//! policy or the inbound default, connections refused because they would loop back into the proxy, TLS
//! connections by egress mode, requests whose TLS the proxy originated, and the mesh CA's
//! minted and cached leaf certificates.
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

/// What the sidecar did with a captured TLS connection it let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// Passed through untouched.
    Passthrough,
    /// Terminated with a mesh CA leaf and served as HTTP.
    Intercept,
}

impl TlsMode {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passthrough => "passthrough",
            Self::Intercept => "intercept",
        }
    }
}

/// Where the leaf certificate of an intercepted connection came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeafCert {
    /// Minted from the mesh CA for this connection.
    Minted,
    /// Reused from the cache.
    Cached,
}

#[derive(EncodeLabelSet, Clone, Hash, Eq, PartialEq, Debug)]
struct ProtocolLabelSet {
    protocol: &'static str,
}

#[derive(EncodeLabelSet, Clone, Hash, Eq, PartialEq, Debug)]
struct ModeLabelSet {
    mode: &'static str,
}

#[derive(EncodeLabelSet, Clone, Hash, Eq, PartialEq, Debug)]
struct ResultLabelSet {
    result: &'static str,
}

/// The sidecar capture metrics, registered in the proxy's registry.
#[derive(Debug, Clone, Default)]
pub struct SidecarMetrics {
    connections: Family<ProtocolLabelSet, Counter>,
    denied: Family<ProtocolLabelSet, Counter>,
    loops: Counter,
    tls: Family<ModeLabelSet, Counter>,
    originated: Counter,
    leaf_certs: Family<ResultLabelSet, Counter>,
    inbound_connections: Family<ProtocolLabelSet, Counter>,
    inbound_loops: Counter,
    inbound_denied: Family<ProtocolLabelSet, Counter>,
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
        registry.register(
            "outbound_tls_connections",
            "Captured TLS connections let through, by egress TLS mode (passthrough, intercept)",
            m.tls.clone(),
        );
        registry.register(
            "outbound_tls_originated_requests",
            "Captured plain-HTTP requests the sidecar sent on over TLS it opened (egress tls ORIGINATE)",
            m.originated.clone(),
        );
        registry.register(
            "mesh_ca_leaf_certificates",
            "Leaf certificates served to intercepted TLS connections, by result (minted, cached)",
            m.leaf_certs.clone(),
        );
        registry.register(
            "inbound_connections",
            "Connections captured from the pod's inbound traffic, by detected protocol",
            m.inbound_connections.clone(),
        );
        registry.register(
            "inbound_loop_refused",
            "Captured inbound connections refused because their destination is one of the proxy's own ports",
            m.inbound_loops.clone(),
        );
        registry.register(
            "inbound_denied",
            "Captured inbound connections (TLS, opaque TCP) and HTTP requests refused by the sidecar's inbound default, by protocol",
            m.inbound_denied.clone(),
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

    /// Counts one TLS connection let through in `mode`.
    pub fn tls(&self, mode: TlsMode) {
        self.tls
            .get_or_create(&ModeLabelSet {
                mode: mode.as_str(),
            })
            .inc();
    }

    /// Counts one request sent on over TLS the sidecar originated.
    pub fn originated(&self) {
        self.originated.inc();
    }

    /// Counts one leaf certificate served to an intercepted connection.
    pub fn leaf_cert(&self, result: LeafCert) {
        let result = match result {
            LeafCert::Minted => "minted",
            LeafCert::Cached => "cached",
        };
        self.leaf_certs
            .get_or_create(&ResultLabelSet { result })
            .inc();
    }

    /// Counts one captured inbound connection.
    pub fn inbound_connection(&self, protocol: CapturedProtocol) {
        self.inbound_connections
            .get_or_create(&ProtocolLabelSet {
                protocol: protocol.as_str(),
            })
            .inc();
    }

    /// Counts one inbound connection refused as a loop.
    pub fn inbound_loop_refused(&self) {
        self.inbound_loops.inc();
    }

    /// Counts one inbound connection or HTTP request refused by the inbound default.
    pub fn inbound_denied(&self, protocol: CapturedProtocol) {
        self.inbound_denied
            .get_or_create(&ProtocolLabelSet {
                protocol: protocol.as_str(),
            })
            .inc();
    }
}
