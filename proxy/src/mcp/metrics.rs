//! The MCP metric families, registered in the proxy's one registry by
//! [`Metrics`](crate::telemetry::Metrics) and reached through `Metrics::mcp()`.
//!
//! Label values are config names (backend, target), closed sets (method, outcome) and
//! tool names the targets listed (see `known_tool`): nothing a client types alone can
//! add a series.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::telemetry::metrics::NameLabel;

#[derive(EncodeLabelSet, Clone, Hash, Eq, PartialEq, Debug)]
struct RequestSet {
    backend: NameLabel,
    method: &'static str,
    target: NameLabel,
    tool: NameLabel,
    outcome: &'static str,
}

#[derive(EncodeLabelSet, Clone, Hash, Eq, PartialEq, Debug)]
struct DurationSet {
    backend: NameLabel,
    method: &'static str,
    target: NameLabel,
}

#[derive(EncodeLabelSet, Clone, Hash, Eq, PartialEq, Debug)]
struct BackendSet {
    backend: NameLabel,
}

#[derive(EncodeLabelSet, Clone, Hash, Eq, PartialEq, Debug)]
struct TargetSet {
    backend: NameLabel,
    target: NameLabel,
}

#[derive(EncodeLabelSet, Clone, Hash, Eq, PartialEq, Debug)]
struct FallbackSet {
    backend: NameLabel,
    target: NameLabel,
    transport: &'static str,
}

fn new_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// The MCP metric families.
pub struct McpMetrics {
    requests: Family<RequestSet, Counter>,
    duration: Family<DurationSet, Histogram, fn() -> Histogram>,
    sessions: Family<BackendSet, Gauge>,
    reinits: Family<TargetSet, Counter>,
    fallbacks: Family<FallbackSet, Counter>,
}

impl std::fmt::Debug for McpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("McpMetrics")
    }
}

/// One MCP request to one target, as counted.
#[derive(Debug, Clone)]
pub struct McpRequest<'a> {
    /// Backend key.
    pub backend: &'a Arc<str>,
    /// MCP method (a closed set; see [`method_label`]).
    pub method: &'static str,
    /// Target name.
    pub target: &'a Arc<str>,
    /// Tool name for `tools/call` (a known one, `other` or empty).
    pub tool: Arc<str>,
    /// Outcome: `ok`, `tool_error`, `error`, `upstream_failed`, `timeout`,
    /// `failed_open`...
    pub outcome: &'static str,
}

impl McpMetrics {
    /// Registers the families in `registry` (prefixed `agentmesh_`).
    pub fn register(registry: &mut Registry) -> McpMetrics {
        let requests = Family::<RequestSet, Counter>::default();
        registry.register(
            "mcp_requests",
            "MCP requests sent to targets, by backend, method, target, tool and outcome",
            requests.clone(),
        );
        let duration = Family::<DurationSet, Histogram, fn() -> Histogram>::new_with_constructor(
            new_histogram,
        );
        registry.register(
            "mcp_request_duration_seconds",
            "Time an MCP target took to answer, by backend, method and target, in seconds",
            duration.clone(),
        );
        let sessions = Family::<BackendSet, Gauge>::default();
        registry.register(
            "mcp_sessions_active",
            "MCP client sessions this proxy has seen and not ended, by backend",
            sessions.clone(),
        );
        let reinits = Family::<TargetSet, Counter>::default();
        registry.register(
            "mcp_upstream_session_inits",
            "Upstream MCP sessions opened after the client's initialize (target restarted or added), by target",
            reinits.clone(),
        );
        let fallbacks = Family::<FallbackSet, Counter>::default();
        registry.register(
            "mcp_transport_fallbacks",
            "Upstream MCP sessions opened over the other HTTP transport than the target is configured with (transport: the one used, sse or streamable_http), by target",
            fallbacks.clone(),
        );
        McpMetrics {
            requests,
            duration,
            sessions,
            reinits,
            fallbacks,
        }
    }

    /// Counts one request to a target and observes how long it took.
    pub fn record(&self, r: &McpRequest<'_>, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestSet {
                backend: NameLabel(r.backend.clone()),
                method: r.method,
                target: NameLabel(r.target.clone()),
                tool: NameLabel(r.tool.clone()),
                outcome: r.outcome,
            })
            .inc();
        self.duration
            .get_or_create(&DurationSet {
                backend: NameLabel(r.backend.clone()),
                method: r.method,
                target: NameLabel(r.target.clone()),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the number of active sessions of `backend`.
    pub fn set_sessions(&self, backend: &Arc<str>, n: usize) {
        self.sessions
            .get_or_create(&BackendSet {
                backend: NameLabel(backend.clone()),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts an upstream session opened after the client's initialize.
    pub fn record_upstream_init(&self, backend: &Arc<str>, target: &Arc<str>) {
        self.reinits
            .get_or_create(&TargetSet {
                backend: NameLabel(backend.clone()),
                target: NameLabel(target.clone()),
            })
            .inc();
    }

    /// Counts an upstream session opened over `transport` (`sse` or `streamable_http`),
    /// which the target is not configured with.
    pub fn record_fallback(&self, backend: &Arc<str>, target: &Arc<str>, transport: &'static str) {
        self.fallbacks
            .get_or_create(&FallbackSet {
                backend: NameLabel(backend.clone()),
                target: NameLabel(target.clone()),
                transport,
            })
            .inc();
    }
}

/// The method label: MCP methods the gateway serves, else `other`.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 13] = [
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "completion/complete",
        "logging/setLevel",
    ];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Metrics;

    #[test]
    fn mcp_families_are_named_as_documented() {
        let m = Metrics::new();
        let (backend, target): (Arc<str>, Arc<str>) = ("tools".into(), "docs".into());
        let call = McpRequest {
            backend: &backend,
            method: method_label("tools/call"),
            target: &target,
            tool: "docs_search".into(),
            outcome: "ok",
        };
        m.mcp().record(&call, Duration::from_millis(3));
        m.mcp().set_sessions(&backend, 2);
        m.mcp().record_upstream_init(&backend, &target);
        m.mcp().record_fallback(&backend, &target, "sse");
        let text = m.encode();
        assert!(text.contains(r#"agentmesh_mcp_requests_total{backend="tools",method="tools/call",target="docs",tool="docs_search",outcome="ok"} 1"#), "{text}");
        assert!(text.contains(r#"agentmesh_mcp_sessions_active{backend="tools"} 2"#));
        assert!(text.contains(
            r#"agentmesh_mcp_upstream_session_inits_total{backend="tools",target="docs"} 1"#
        ));
        assert!(text.contains(
            r#"agentmesh_mcp_transport_fallbacks_total{backend="tools",target="docs",transport="sse"} 1"#
        ));
        assert_eq!(method_label("tools/explode"), "other");
    }
}
