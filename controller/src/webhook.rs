//! The sidecar injection webhook, served by the controller with the `agentmesh-injector`
//! library (the same code as `agentmesh-injector serve` and `inject -f`), and the
//! controller's Prometheus endpoint, which carries the webhook's counters and its
//! certificate's expiry, rotations and failures.
//!
//! The certificate comes from a directory holding `tls.crt` and `tls.key` (mounted from
//! cert-manager's Secret, or written by [`crate::kubernetes::webhook_cert`]); the
//! library reads the files again when they change, so a rotation needs no restart.
//!
//! This module decides nothing about injection (the library does) and does not manage
//! the certificate (the `webhook_cert` module does).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use agentmesh_injector::tls::TlsSource;
use agentmesh_injector::{Injector, Settings, metrics, webhook};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::kubernetes::webhook_cert::metrics::CertMetrics;

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The address is taken or not ours.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Which server: the webhook or the metrics endpoint.
        what: &'static str,
        /// The bind error.
        source: std::io::Error,
    },
    /// The certificate files are missing or do not form a pair.
    #[error("webhook certificate in {dir}: {reason}")]
    Certificate {
        /// The directory.
        dir: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The running webhook: its address and the tasks serving it (aborted on drop).
pub struct RunningWebhook {
    /// Where the webhook listens (useful with port 0).
    pub addr: SocketAddr,
    /// Where `/metrics` listens, when asked for.
    pub metrics_addr: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RunningWebhook {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds the webhook on `addr` (HTTPS, certificate from `cert_dir`) and, with
/// `metrics_addr`, the Prometheus endpoint `GET /metrics` (the injector's counters and
/// the certificate's `cert_metrics`), and serves both in the background. Fails before serving when an address cannot be bound or the certificate
/// files cannot be loaded, so a misconfigured controller exits with the reason.
pub async fn start(
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    cert_dir: &Path,
    settings: Settings,
    cert_metrics: &CertMetrics,
) -> Result<RunningWebhook, WebhookError> {
    // Loaded once, here: a missing or mismatched pair is a start-up error, not a failed
    // handshake for the API server to report much later. The server re-reads the files
    // when they change.
    let config =
        TlsSource::dir(cert_dir)
            .server_config()
            .map_err(|e| WebhookError::Certificate {
                dir: cert_dir.display().to_string(),
                reason: e.to_string(),
            })?;
    let injector = Arc::new(Injector::new(settings));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| WebhookError::Listen {
            addr,
            what: "webhook",
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(addr);
    let mut tasks = Vec::new();
    let mut bound_metrics = None;
    if let Some(metrics_addr) = metrics_addr {
        let mut registry = Registry::default();
        injector.metrics().register(&mut registry);
        cert_metrics.register(&mut registry);
        let listener =
            TcpListener::bind(metrics_addr)
                .await
                .map_err(|source| WebhookError::Listen {
                    addr: metrics_addr,
                    what: "metrics",
                    source,
                })?;
        bound_metrics = Some(listener.local_addr().unwrap_or(metrics_addr));
        let registry = Arc::new(registry);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = metrics::serve(listener, registry).await {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        }));
    }
    tasks.push(tokio::spawn(async move {
        if let Err(e) = webhook::serve_with_config(listener, config, injector).await {
            tracing::error!(error = %e, "injection webhook stopped");
        }
    }));
    tracing::info!(%addr, metrics = ?bound_metrics, "injection webhook serving");
    Ok(RunningWebhook {
        addr,
        metrics_addr: bound_metrics,
        tasks,
    })
}
