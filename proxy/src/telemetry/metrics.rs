//! Prometheus metrics for the proxy: one [`Metrics`] value owns the registry and every
//! metric family, and offers one typed method per event the data plane counts.
//!
//! All names carry the `agentmesh_` prefix. Label values are either names from the
//! config (listener, route, backend, bind) or small closed sets from `labels` (method,
//! status class, error reasons), so the number of series stays bounded.
//!
//! This module must not put anything that comes from a request (paths, hosts, header
//! values, tool names, tokens) into a label, and must not log: it only counts.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode_registry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use super::exposition::CONTENT_TYPE;
use super::exposition::openmetrics_to_prometheus_text;
pub use super::labels::{
    ConnectionErrorReason, ErrorReason, MirrorOutcome, NameLabel, RequestLabels,
};
use super::labels::{method_label, status_class};

/// Upper bounds of the request-duration buckets, in seconds: 0.5 ms doubling 17 times,
/// up to about 33 s (plus the implicit `+Inf`).
fn duration_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0005, 2.0, 17)
}

/// Builds one request-duration histogram; a plain `fn` so the family type is nameable.
fn new_duration_histogram() -> Histogram {
    Histogram::new(duration_buckets())
}

#[derive(EncodeLabelSet, Clone, Hash, Eq, PartialEq, Debug)]
struct RequestLabelSet {
    listener: NameLabel,
    route: NameLabel,
    backend: NameLabel,
    method: &'static str,
    status_class: &'static str,
}

#[derive(EncodeLabelSet, Clone, Hash, Eq, PartialEq, Debug)]
struct RequestErrorLabelSet {
    listener: NameLabel,
    route: NameLabel,
    backend: NameLabel,
    reason: &'static str,
}

#[derive(EncodeLabelSet, Clone, Hash, Eq, PartialEq, Debug)]
struct ConnectionErrorLabelSet {
    bind: String,
    reason: &'static str,
}

#[derive(EncodeLabelSet, Clone, Hash, Eq, PartialEq, Debug)]
struct BindLabelSet {
    bind: String,
}

#[derive(EncodeLabelSet, Clone, Hash, Eq, PartialEq, Debug)]
struct WorkerLabelSet {
    worker: u32,
}

#[derive(EncodeLabelSet, Clone, Hash, Eq, PartialEq, Debug)]
struct BackendLabelSet {
    backend: String,
}

#[derive(EncodeLabelSet, Clone, Hash, Eq, PartialEq, Debug)]
struct MirrorLabelSet {
    backend: String,
    outcome: &'static str,
}

#[derive(EncodeLabelSet, Clone, Hash, Eq, PartialEq, Debug)]
struct ReloadLabelSet {
    source: String,
    outcome: &'static str,
}

#[derive(EncodeLabelSet, Clone, Hash, Eq, PartialEq, Debug)]
struct VersionLabelSet {
    version: &'static str,
}

/// Every metric the proxy exports. Shared as `Arc<Metrics>`; all methods take `&self`
/// and are cheap enough for the request path (a read lock and a hash per call once a
/// series exists).
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabelSet, Counter>,
    request_duration: Family<RequestLabelSet, Histogram, fn() -> Histogram>,
    request_errors: Family<RequestErrorLabelSet, Counter>,
    connection_errors: Family<ConnectionErrorLabelSet, Counter>,
    connections: Family<BindLabelSet, Counter>,
    connections_active: Family<BindLabelSet, Gauge>,
    worker_connections_active: Family<WorkerLabelSet, Gauge>,
    upstream_connections: Family<BackendLabelSet, Counter>,
    upstream_connections_active: Family<BackendLabelSet, Gauge>,
    upstream_connect_errors: Family<BackendLabelSet, Counter>,
    upstream_retries: Family<BackendLabelSet, Counter>,
    mirror_requests: Family<MirrorLabelSet, Counter>,
    config_reloads: Family<ReloadLabelSet, Counter>,
    config_last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    config_generation: Gauge,
    /// Sidecar capture metrics.
    pub sidecar: super::sidecar::SidecarMetrics,
    /// xDS client metrics.
    pub xds: super::xds::XdsMetrics,
    /// The MCP gateway's families.
    mcp: crate::mcp::metrics::McpMetrics,
    /// Serializes config-reload bookkeeping so timestamp and generation move together.
    reload_lock: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Keeps a connection counted in an `*_active` gauge; dropping it decrements the gauge.
#[derive(Debug)]
#[must_use = "the connection stops being counted as active when the guard is dropped"]
pub struct ConnectionGuard {
    active: Gauge,
    /// The serving thread's gauge, for client connections.
    worker: Option<Gauge>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.active.dec();
        if let Some(worker) = &self.worker {
            worker.dec();
        }
    }
}

/// The two series one kind of request is counted in (see [`Metrics::request_series`]).
/// Clones share the series.
#[derive(Clone, Debug)]
pub struct RequestSeries {
    requests: Counter,
    duration: Histogram,
}

impl RequestSeries {
    /// Counts one answered request and observes its duration.
    pub fn record(&self, elapsed: Duration) {
        self.requests.inc();
        self.duration.observe(elapsed.as_secs_f64());
    }
}

/// Remembers the series of the last request counted through it, so a keep-alive
/// connection whose requests take the same route finds its series by comparing config
/// names by pointer instead of hashing labels. One per client connection.
#[derive(Debug, Default)]
pub struct RequestSeriesCache {
    last: Mutex<Option<(RequestLabels, RequestSeries)>>,
}

impl RequestSeriesCache {
    /// Counts one answered request, as [`Metrics::record_request`] does.
    pub fn record(&self, metrics: &Metrics, labels: RequestLabels, elapsed: Duration) {
        // A poisoned lock only means a panic elsewhere mid-update; the cache is still a
        // valid (if stale) hint.
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((key, series)) = last.as_ref()
            && same_series(key, &labels)
        {
            series.record(elapsed);
            return;
        }
        let series = metrics.request_series(&labels);
        series.record(elapsed);
        *last = Some((labels, series));
    }
}

/// Whether two requests count in the same series. Config names compare by pointer
/// first (the same config), then by value (a reload that kept the names).
fn same_series(a: &RequestLabels, b: &RequestLabels) -> bool {
    let name = |x: &Arc<str>, y: &Arc<str>| Arc::ptr_eq(x, y) || x == y;
    status_class(a.status) == status_class(b.status)
        && a.method == b.method
        && name(&a.route, &b.route)
        && name(&a.backend, &b.backend)
        && name(&a.listener, &b.listener)
}

impl Metrics {
    /// Creates the registry with every metric registered (and `agentmesh_build_info`
    /// set to 1 for this crate's version).
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("agentmesh");

        let requests = Family::<RequestLabelSet, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests answered, by listener, route, backend, method and status class",
            requests.clone(),
        );
        let request_duration =
            Family::<RequestLabelSet, Histogram, fn() -> Histogram>::new_with_constructor(
                new_duration_histogram,
            );
        registry.register(
            "request_duration_seconds",
            "Time from receiving a request to sending the response head, in seconds",
            request_duration.clone(),
        );
        let request_errors = Family::<RequestErrorLabelSet, Counter>::default();
        registry.register(
            "request_errors",
            "Requests that failed in the proxy or upstream, by reason",
            request_errors.clone(),
        );
        let connection_errors = Family::<ConnectionErrorLabelSet, Counter>::default();
        registry.register(
            "downstream_connection_errors",
            "Client connections that failed below the request level, by bind and reason",
            connection_errors.clone(),
        );
        let connections = Family::<BindLabelSet, Counter>::default();
        registry.register(
            "downstream_connections",
            "Client connections accepted, by bind",
            connections.clone(),
        );
        let connections_active = Family::<BindLabelSet, Gauge>::default();
        registry.register(
            "downstream_connections_active",
            "Client connections currently open, by bind",
            connections_active.clone(),
        );
        let worker_connections_active = Family::<WorkerLabelSet, Gauge>::default();
        registry.register(
            "worker_connections_active",
            "Client connections currently open, by the serving thread (--worker-threads) \
             that serves them",
            worker_connections_active.clone(),
        );
        let upstream_connections = Family::<BackendLabelSet, Counter>::default();
        registry.register(
            "upstream_connections",
            "Connections opened to backends",
            upstream_connections.clone(),
        );
        let upstream_connections_active = Family::<BackendLabelSet, Gauge>::default();
        registry.register(
            "upstream_connections_active",
            "Connections to backends currently open",
            upstream_connections_active.clone(),
        );
        let upstream_connect_errors = Family::<BackendLabelSet, Counter>::default();
        registry.register(
            "upstream_connect_errors",
            "Failed attempts to connect to a backend",
            upstream_connect_errors.clone(),
        );
        let upstream_retries = Family::<BackendLabelSet, Counter>::default();
        registry.register(
            "upstream_retries",
            "Request attempts retried against a backend",
            upstream_retries.clone(),
        );
        let mirror_requests = Family::<MirrorLabelSet, Counter>::default();
        registry.register(
            "mirror_requests",
            "Mirrored request copies, by backend and outcome (sent or failed)",
            mirror_requests.clone(),
        );
        let config_reloads = Family::<ReloadLabelSet, Counter>::default();
        registry.register(
            "config_reloads",
            "Config updates received, by source and outcome (applied or rejected)",
            config_reloads.clone(),
        );
        let config_last_success = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time of the last config update that was applied",
            config_last_success.clone(),
        );
        let config_generation = Gauge::default();
        registry.register(
            "config_generation",
            "Number of config updates applied since the proxy started",
            config_generation.clone(),
        );
        let build_info = Family::<VersionLabelSet, Gauge>::default();
        build_info
            .get_or_create(&VersionLabelSet {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the version label names the running proxy build",
            build_info,
        );

        let sidecar = super::sidecar::SidecarMetrics::register(&mut registry);
        let xds = super::xds::XdsMetrics::register(&mut registry);
        let mcp = crate::mcp::metrics::McpMetrics::register(&mut registry);
        Arc::new(Metrics {
            mcp,
            registry,
            sidecar,
            xds,
            requests,
            request_duration,
            request_errors,
            connection_errors,
            connections,
            connections_active,
            worker_connections_active,
            upstream_connections,
            upstream_connections_active,
            upstream_connect_errors,
            upstream_retries,
            mirror_requests,
            config_reloads,
            config_last_success,
            config_generation,
            reload_lock: Mutex::new(()),
        })
    }

    /// Counts one answered request and observes its duration.
    pub fn record_request(&self, labels: &RequestLabels, elapsed: Duration) {
        let set = RequestLabelSet {
            listener: NameLabel(labels.listener.clone()),
            route: NameLabel(labels.route.clone()),
            backend: NameLabel(labels.backend.clone()),
            method: method_label(labels.method.as_str()),
            status_class: status_class(labels.status),
        };
        self.requests.get_or_create(&set).inc();
        self.request_duration
            .get_or_create(&set)
            .observe(elapsed.as_secs_f64());
    }

    /// The request-count and duration series of `labels`' combination (its status
    /// taken as a class), to keep and record into without looking labels up again.
    pub fn request_series(&self, labels: &RequestLabels) -> RequestSeries {
        let set = RequestLabelSet {
            listener: NameLabel(labels.listener.clone()),
            route: NameLabel(labels.route.clone()),
            backend: NameLabel(labels.backend.clone()),
            method: method_label(labels.method.as_str()),
            status_class: status_class(labels.status),
        };
        RequestSeries {
            requests: self.requests.get_or_create_owned(&set),
            duration: self.request_duration.get_or_create_owned(&set),
        }
    }

    /// Counts one request that failed for `reason`.
    pub fn record_request_error(
        &self,
        listener: &str,
        route: &str,
        backend: &str,
        reason: ErrorReason,
    ) {
        let set = RequestErrorLabelSet {
            listener: NameLabel(listener.into()),
            route: NameLabel(route.into()),
            backend: NameLabel(backend.into()),
            reason: reason.as_str(),
        };
        self.request_errors.get_or_create(&set).inc();
    }

    /// Counts one client connection on `bind` that failed for `reason`.
    pub fn record_connection_error(&self, bind: &str, reason: ConnectionErrorReason) {
        let set = ConnectionErrorLabelSet {
            bind: bind.to_owned(),
            reason: reason.as_str(),
        };
        self.connection_errors.get_or_create(&set).inc();
    }

    /// Counts an accepted client connection on `bind`; it stays counted as active until
    /// the returned guard is dropped.
    pub fn connection_opened(&self, bind: &str) -> ConnectionGuard {
        let set = BindLabelSet {
            bind: bind.to_owned(),
        };
        self.connections.get_or_create(&set).inc();
        let active = self.connections_active.get_or_create_owned(&set);
        active.inc();
        let worker = self
            .worker_connections_active
            .get_or_create_owned(&WorkerLabelSet {
                worker: u32::try_from(crate::workers::current()).unwrap_or(u32::MAX),
            });
        worker.inc();
        ConnectionGuard {
            active,
            worker: Some(worker),
        }
    }

    /// Counts a connection opened to `backend`; it stays counted as active until the
    /// returned guard is dropped.
    pub fn upstream_connection_opened(&self, backend: &str) -> ConnectionGuard {
        let set = BackendLabelSet {
            backend: backend.to_owned(),
        };
        self.upstream_connections.get_or_create(&set).inc();
        let active = self.upstream_connections_active.get_or_create_owned(&set);
        active.inc();
        ConnectionGuard {
            active,
            worker: None,
        }
    }

    /// Counts a failed attempt to connect to `backend`.
    pub fn record_upstream_connect_error(&self, backend: &str) {
        let set = BackendLabelSet {
            backend: backend.to_owned(),
        };
        self.upstream_connect_errors.get_or_create(&set).inc();
    }

    /// Counts one retried attempt against `backend`.
    pub fn record_retry(&self, backend: &str) {
        let set = BackendLabelSet {
            backend: backend.to_owned(),
        };
        self.upstream_retries.get_or_create(&set).inc();
    }

    /// Counts one mirrored request copy to `backend`.
    pub fn record_mirror_request(&self, backend: &str, outcome: MirrorOutcome) {
        let set = MirrorLabelSet {
            backend: backend.to_owned(),
            outcome: outcome.as_str(),
        };
        self.mirror_requests.get_or_create(&set).inc();
    }

    /// Counts a config update from `source` (for example `file` or `xds`). When
    /// `applied`, also moves the last-success timestamp to now and the generation up by
    /// one; a rejected update only counts.
    pub fn record_config_reload(&self, source: &str, applied: bool) {
        let set = ReloadLabelSet {
            source: source.to_owned(),
            outcome: if applied { "applied" } else { "rejected" },
        };
        // A poisoned lock only means another reload panicked mid-update; the gauges
        // are still usable, so carry on.
        let _serial = self
            .reload_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.config_reloads.get_or_create(&set).inc();
        if applied {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.config_last_success.set(now);
            self.config_generation.inc();
        }
    }

    /// The MCP gateway's metric families.
    pub fn mcp(&self) -> &crate::mcp::metrics::McpMetrics {
        &self.mcp
    }

    /// Renders every metric in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut openmetrics = String::with_capacity(4096);
        // Writing into a String cannot fail; an encoder error would be a bug in a
        // label value, and an empty-but-valid page is the least harmful answer.
        if encode_registry(&mut openmetrics, &self.registry).is_err() {
            return String::new();
        }
        openmetrics_to_prometheus_text(&openmetrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentmesh_e2e::promtool::assert_accepts as assert_promtool_accepts;

    fn sample_request() -> RequestLabels {
        RequestLabels {
            listener: "public".into(),
            route: "mcp".into(),
            backend: "github-mcp".into(),
            method: http::Method::POST,
            status: 200,
        }
    }

    /// Every metric family populated at least once, as a scraper would see it.
    fn populated() -> Arc<Metrics> {
        let m = Metrics::new();
        m.record_request(&sample_request(), Duration::from_millis(12));
        m.record_request_error("public", "mcp", "github-mcp", ErrorReason::UpstreamTimeout);
        m.record_connection_error("0.0.0.0:8080", ConnectionErrorReason::MalformedHttp);
        let _down = m.connection_opened("0.0.0.0:8080");
        let _up = m.upstream_connection_opened("github-mcp");
        m.record_upstream_connect_error("github-mcp");
        m.record_retry("github-mcp");
        m.record_mirror_request("shadow", MirrorOutcome::Sent);
        m.record_config_reload("file", true);
        m.record_config_reload("file", false);
        m
    }

    fn line_with<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn request_is_counted_with_status_class_and_duration() {
        let m = Metrics::new();
        m.record_request(&sample_request(), Duration::from_millis(12));
        let text = m.encode();
        let labels = r#"{listener="public",route="mcp",backend="github-mcp",method="POST",status_class="2xx"}"#;
        assert!(
            text.contains(&format!("agentmesh_requests_total{labels} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "agentmesh_request_duration_seconds_count{labels} 1\n"
            )),
            "{text}"
        );
        // 12 ms falls in the 16 ms bucket but not the 8 ms one.
        let bucket = |le: &str| {
            format!(
                "agentmesh_request_duration_seconds_bucket{{le=\"{le}\",listener=\"public\",route=\"mcp\",backend=\"github-mcp\",method=\"POST\",status_class=\"2xx\"}}"
            )
        };
        assert!(text.contains(&format!("{} 0\n", bucket("0.008"))), "{text}");
        assert!(text.contains(&format!("{} 1\n", bucket("0.016"))), "{text}");
        assert!(text.contains(&format!("{} 1\n", bucket("+Inf"))), "{text}");
    }

    #[test]
    fn cached_series_count_like_record_request() {
        let m = Metrics::new();
        let cache = RequestSeriesCache::default();
        cache.record(&m, sample_request(), Duration::from_millis(12));
        cache.record(&m, sample_request(), Duration::from_millis(1));
        let mut failed = sample_request();
        failed.status = 502;
        cache.record(&m, failed, Duration::ZERO);
        m.record_request(&sample_request(), Duration::ZERO);
        let text = m.encode();
        let ok = r#"{listener="public",route="mcp",backend="github-mcp",method="POST",status_class="2xx"}"#;
        let bad = r#"{listener="public",route="mcp",backend="github-mcp",method="POST",status_class="5xx"}"#;
        assert!(
            text.contains(&format!("agentmesh_requests_total{ok} 3\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("agentmesh_requests_total{bad} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("agentmesh_request_duration_seconds_count{ok} 3\n")),
            "{text}"
        );
    }

    #[test]
    fn duration_buckets_span_half_a_millisecond_to_about_thirty_seconds() {
        let b: Vec<f64> = duration_buckets().collect();
        assert_eq!(b.first().copied(), Some(0.0005));
        let last = b.last().copied().unwrap_or_default();
        assert!((30.0..40.0).contains(&last), "last bucket {last}");
    }

    #[test]
    fn unknown_methods_and_statuses_are_bucketed() {
        let m = Metrics::new();
        for method in ["BREW", "get", "PROPFIND"] {
            let mut labels = sample_request();
            labels.method =
                http::Method::from_bytes(method.as_bytes()).expect("valid method token");
            labels.status = 503;
            m.record_request(&labels, Duration::ZERO);
        }
        let mut labels = sample_request();
        labels.status = 0;
        m.record_request(&labels, Duration::ZERO);
        let text = m.encode();
        assert!(
            text.contains(r#"method="OTHER",status_class="5xx"} 3"#),
            "{text}"
        );
        assert!(text.contains(r#"method="POST",status_class="other"} 1"#));
        assert!(!text.contains("BREW") && !text.contains("PROPFIND"));
    }

    #[test]
    fn error_reasons_have_snake_case_labels() {
        let m = Metrics::new();
        m.record_request_error("l", "r", "b", ErrorReason::BodyTooLarge);
        m.record_request_error("l", "r", "b", ErrorReason::BodyTooLarge);
        m.record_connection_error("127.0.0.1:16001", ConnectionErrorReason::HeadersTooLarge);
        let text = m.encode();
        assert!(text.contains(
            r#"agentmesh_request_errors_total{listener="l",route="r",backend="b",reason="body_too_large"} 2"#
        ));
        assert!(text.contains(
            r#"agentmesh_downstream_connection_errors_total{bind="127.0.0.1:16001",reason="headers_too_large"} 1"#
        ));
        assert_eq!(ErrorReason::NoRoute.as_str(), "no_route");
        assert_eq!(
            ConnectionErrorReason::TlsHandshake.as_str(),
            "tls_handshake"
        );
    }

    #[test]
    fn connection_guards_track_active_connections() {
        let m = Metrics::new();
        let a = m.connection_opened("0.0.0.0:80");
        let b = m.connection_opened("0.0.0.0:80");
        let up = m.upstream_connection_opened("llm");
        let text = m.encode();
        assert!(text.contains(r#"agentmesh_downstream_connections_active{bind="0.0.0.0:80"} 2"#));
        assert!(text.contains(r#"agentmesh_upstream_connections_active{backend="llm"} 1"#));
        drop((a, up));
        let text = m.encode();
        assert!(text.contains(r#"agentmesh_downstream_connections_active{bind="0.0.0.0:80"} 1"#));
        assert!(text.contains(r#"agentmesh_downstream_connections_total{bind="0.0.0.0:80"} 2"#));
        assert!(text.contains(r#"agentmesh_upstream_connections_active{backend="llm"} 0"#));
        assert!(text.contains(r#"agentmesh_upstream_connections_total{backend="llm"} 1"#));
        drop(b);
    }

    #[test]
    fn applied_reload_moves_generation_and_timestamp_rejected_does_not() {
        let m = Metrics::new();
        m.record_config_reload("xds", false);
        let text = m.encode();
        assert!(text.contains("agentmesh_config_generation 0\n"), "{text}");
        assert!(text.contains("agentmesh_config_last_reload_success_timestamp_seconds 0.0\n"));
        m.record_config_reload("xds", true);
        m.record_config_reload("xds", true);
        let text = m.encode();
        assert!(
            text.contains(r#"agentmesh_config_reloads_total{source="xds",outcome="applied"} 2"#)
        );
        assert!(
            text.contains(r#"agentmesh_config_reloads_total{source="xds",outcome="rejected"} 1"#)
        );
        assert!(text.contains("agentmesh_config_generation 2\n"));
        let stamp = line_with(
            &text,
            "agentmesh_config_last_reload_success_timestamp_seconds ",
        )
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_default();
        assert!(stamp > 1.6e9, "timestamp {stamp}");
    }

    #[test]
    fn build_info_names_the_version() {
        let text = Metrics::new().encode();
        let want = format!(
            "agentmesh_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&want), "{text}");
    }

    #[test]
    fn output_is_prometheus_text_with_total_suffixed_counter_headers() {
        let text = populated().encode();
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        assert!(text.contains("# TYPE agentmesh_requests_total counter\n"));
        assert!(text.contains("# HELP agentmesh_requests_total HTTP requests answered"));
        assert!(text.contains("# TYPE agentmesh_request_duration_seconds histogram\n"));
        assert!(text.contains("# TYPE agentmesh_config_generation gauge\n"));
    }

    #[test]
    fn populated_output_passes_promtool_check_metrics() {
        assert_promtool_accepts(&populated().encode());
    }

    #[test]
    fn fresh_output_passes_promtool_and_omits_families_without_series() {
        let text = Metrics::new().encode();
        assert_promtool_accepts(&text);
        assert!(
            text.contains("# TYPE agentmesh_build_info gauge\n"),
            "{text}"
        );
        assert!(text.contains("agentmesh_config_generation 0\n"));
        assert!(!text.contains("agentmesh_requests_total"), "{text}");
    }
}
