//! The injector's Prometheus metrics: pods injected, skipped (by reason) and denied (by
//! reason), and a `/metrics` HTTP endpoint for the standalone binary.
//!
//! Labels are fixed words ([`crate::inject::SkipReason::label`], [`DenyReason`]), never pod
//! or namespace names, so their number stays bounded.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Why a request was denied (a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// An `agentmesh.dev/*` annotation has an unusable value.
    InvalidAnnotation,
    /// The request or its object could not be read.
    MalformedRequest,
}

impl DenyReason {
    fn as_str(self) -> &'static str {
        match self {
            DenyReason::InvalidAnnotation => "invalid_annotation",
            DenyReason::MalformedRequest => "malformed_request",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The injector's counters. Cheap to clone (shared counters).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    injected: Counter,
    skipped: Family<ReasonLabel, Counter>,
    denied: Family<ReasonLabel, Counter>,
}

impl Metrics {
    /// Registers the counters (`agentmesh_injector_*`) in `registry`; a host with its own
    /// registry (the controller) calls this with it.
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("agentmesh_injector");
        sub.register("injected", "Pods injected", self.injected.clone());
        sub.register(
            "skipped",
            "Pods left alone, by reason",
            self.skipped.clone(),
        );
        sub.register("denied", "Pods refused, by reason", self.denied.clone());
    }

    /// Counts an injected pod.
    pub fn injected(&self) {
        self.injected.inc();
    }

    /// Counts a skipped pod.
    pub fn skipped(&self, reason: &'static str) {
        self.skipped.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts a denied request.
    pub fn denied(&self, reason: DenyReason) {
        self.denied
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }
}

/// The registry in the Prometheus text format 0.0.4 (what the `content-type` of
/// `/metrics` says, and what `promtool check metrics` accepts).
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        text.clear();
    }
    to_text_format(&text)
}

/// prometheus-client writes OpenMetrics; the 0.0.4 text format differs where promtool
/// and older scrapers notice: no `# EOF` and no `# UNIT`, a counter's `# HELP` and
/// `# TYPE` name its samples (`…_total`), and a family without samples is not written
/// at all (promtool flags bare headers).
fn to_text_format(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // The headers of the family being read, written once its first sample is.
    let mut pending: Vec<String> = Vec::new();
    let mut counter_family: Option<&str> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix('#') {
            let mut words = rest.trim_start().splitn(3, ' ');
            let (keyword, name, tail) = (
                words.next().unwrap_or_default(),
                words.next().unwrap_or_default(),
                words.next().unwrap_or_default(),
            );
            match keyword {
                "HELP" => {
                    // A new family: the previous one's headers had no samples.
                    pending.clear();
                    counter_family = None;
                    pending.push(format!("# HELP {name} {tail}"));
                }
                "TYPE" => {
                    if tail == "counter" && !name.ends_with("_total") {
                        counter_family = Some(name);
                    }
                    pending.push(format!("# TYPE {name} {tail}"));
                }
                // EOF, UNIT and anything else OpenMetrics-only.
                _ => {}
            }
            continue;
        }
        if let Some(family) = counter_family.take() {
            let total = format!("{family}_total");
            for header in &mut pending {
                *header = header.replacen(family, &total, 1);
            }
        }
        for header in pending.drain(..) {
            out.push_str(&header);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Serves `GET /metrics` (plain HTTP) on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let registry = registry.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&req, &registry)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

fn answer(req: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, encode(registry)),
        (_, "/metrics") => (StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into()),
        _ => (StatusCode::NOT_FOUND, "not found; try /metrics\n".into()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_with_their_reason() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.injected();
        metrics.skipped("host_network");
        metrics.denied(DenyReason::InvalidAnnotation);
        let text = encode(&registry);
        assert!(
            text.contains("agentmesh_injector_injected_total 1"),
            "{text}"
        );
        assert!(
            text.contains("agentmesh_injector_skipped_total{reason=\"host_network\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("agentmesh_injector_denied_total{reason=\"invalid_annotation\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn text_format_names_counters_by_their_samples_and_drops_empty_families() {
        let openmetrics = "# HELP am_pods Pods.\n\
                           # TYPE am_pods counter\n\
                           am_pods_total{reason=\"a\"} 2\n\
                           am_pods_total{reason=\"b\"} 1\n\
                           # HELP am_never Never counted.\n\
                           # TYPE am_never counter\n\
                           # HELP am_expiry_seconds Expiry.\n\
                           # TYPE am_expiry_seconds gauge\n\
                           # UNIT am_expiry_seconds seconds\n\
                           am_expiry_seconds 17\n\
                           # EOF\n";
        assert_eq!(
            to_text_format(openmetrics),
            "# HELP am_pods_total Pods.\n\
             # TYPE am_pods_total counter\n\
             am_pods_total{reason=\"a\"} 2\n\
             am_pods_total{reason=\"b\"} 1\n\
             # HELP am_expiry_seconds Expiry.\n\
             # TYPE am_expiry_seconds gauge\n\
             am_expiry_seconds 17\n"
        );
    }
}
