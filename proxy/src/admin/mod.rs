//! The proxy's own HTTP servers, separate from the traffic it proxies: readiness
//! (`/healthz/ready`, for Kubernetes probes), metrics (`/metrics`, for Prometheus) and
//! the admin API (config dump, log level, drain; loopback only).
//!
//! Each `serve_*` function takes an already bound listener, so the caller picks the
//! addresses (by default 127.0.0.1:16000 admin, 0.0.0.0:16020 metrics, 0.0.0.0:16021
//! readiness) and tests use port 0. Each runs until its shutdown channel turns `true`
//! (or its sender is dropped), then stops accepting and returns.
//!
//! This module must not serve proxied traffic, compute metrics or build the config dump;
//! it only exposes state that other modules own.

mod api;
pub mod dump;
pub mod hooks;
mod readiness;
mod server;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use http::{Method, StatusCode, Uri};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use readiness::Readiness;

use crate::telemetry::{LogControl, Metrics, metrics};
use server::{AdminResponse, is_read, method_not_allowed, not_found, respond, text};

/// What the admin API exposes and controls.
#[derive(Clone)]
pub struct AdminState {
    /// Renders the running configuration for `GET /config_dump`. The closure must
    /// already have redacted secrets; the admin API serves its output as is.
    pub config_dump: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
    /// The log filter that `GET`/`POST /logging` reads and changes.
    pub logs: LogControl,
    /// The readiness state, reported by `GET /` and set to draining by `POST /drain`.
    pub readiness: Readiness,
}

impl fmt::Debug for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminState")
            .field("logs", &self.logs)
            .field("readiness", &self.readiness)
            .finish_non_exhaustive()
    }
}

/// Serves `GET /healthz/ready`: 200 `ready` once `ready` says so, 503
/// `not ready: <reason>` before that and while draining. Returns after `shutdown`.
pub async fn serve_ready(listener: TcpListener, ready: Readiness, shutdown: watch::Receiver<bool>) {
    let handler = Arc::new(move |method: &Method, uri: &Uri| ready_response(&ready, method, uri));
    server::serve(listener, shutdown, "ready", handler).await;
}

/// Serves `GET /metrics`: every metric in the Prometheus text format. Returns after
/// `shutdown`.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) {
    let handler =
        Arc::new(move |method: &Method, uri: &Uri| metrics_response(&metrics, method, uri));
    server::serve(listener, shutdown, "metrics", handler).await;
}

/// Serves the admin API (`GET /` lists the endpoints). Returns after `shutdown`.
///
/// The API can change logging and start a drain, so bind it to loopback only.
pub async fn serve_admin(
    listener: TcpListener,
    admin: AdminState,
    shutdown: watch::Receiver<bool>,
) {
    let handler = Arc::new(move |method: &Method, uri: &Uri| api::handle(&admin, method, uri));
    server::serve(listener, shutdown, "admin", handler).await;
}

fn ready_response(ready: &Readiness, method: &Method, uri: &Uri) -> AdminResponse {
    match uri.path() {
        "/healthz/ready" if is_read(method) => match ready.not_ready_reason() {
            None => text(StatusCode::OK, "ready\n"),
            Some(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        },
        "/healthz/ready" => method_not_allowed(method, "GET, HEAD"),
        _ => not_found(uri),
    }
}

fn metrics_response(metrics: &Metrics, method: &Method, uri: &Uri) -> AdminResponse {
    match uri.path() {
        "/metrics" if is_read(method) => {
            respond(StatusCode::OK, metrics::CONTENT_TYPE, metrics.encode())
        }
        "/metrics" => method_not_allowed(method, "GET, HEAD"),
        _ => not_found(uri),
    }
}
