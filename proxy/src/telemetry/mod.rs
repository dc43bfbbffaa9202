//! Telemetry: what the proxy reports about itself. [`metrics`] counts requests,
//! connections and config reloads for Prometheus; [`logging`] installs the diagnostic
//! log subscriber and lets the admin API change its filter at runtime.
//!
//! This module must not make routing or policy decisions, and must not record request
//! content (paths, headers, bodies, credentials) in metric labels or logs. Serving the
//! metrics over HTTP is `admin`'s job.

mod exposition;
mod labels;
pub mod logging;
pub mod metrics;
pub mod sidecar;
pub mod xds;

pub use logging::{LogControl, LogError, LogFormat};
pub use metrics::{
    ConnectionErrorReason, ConnectionGuard, ErrorReason, Metrics, MirrorOutcome, RequestLabels,
};
