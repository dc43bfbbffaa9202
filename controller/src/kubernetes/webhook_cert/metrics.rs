//! The webhook certificate's Prometheus metrics, on the controller's `/metrics`: when the
//! served certificate and its CA expire, how often they were replaced, and how often
//! keeping them failed.
//!
//! An expiry gauge is what an alert needs ("less than 7 days left"), whichever source
//! keeps the certificate: the keeper of the generated certificate reports every pass,
//! and with cert-manager's files a small task reads them again every minute.
//!
//! This module must not decide anything: it only counts what the keepers report.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::files;

/// How often certificate files kept by someone else are read again for the gauges.
const FILES_INTERVAL: Duration = Duration::from_secs(60);

/// The label of a rotation of the serving certificate.
const SERVING: &str = "serving";
/// The label of a rotation of the CA the API server trusts it through.
const CA: &str = "ca";

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CertificateLabel {
    certificate: &'static str,
}

/// The webhook certificate's metrics. Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct CertMetrics {
    serving_expiry: Gauge,
    ca_expiry: Gauge,
    rotations: Family<CertificateLabel, Counter>,
    failures: Counter,
    /// The certificate and CA last reported, to tell a rotation from a repeat.
    served: Arc<Mutex<Option<Served>>>,
}

/// What was served at the last report (PEM).
#[derive(Debug)]
struct Served {
    cert: String,
    ca: Option<String>,
}

impl CertMetrics {
    /// Registers the metrics (`agentmesh_webhook_*`) in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("agentmesh_webhook");
        sub.register(
            "certificate_expiry_timestamp_seconds",
            "When the serving certificate of the injection webhook expires (Unix seconds)",
            self.serving_expiry.clone(),
        );
        sub.register(
            "ca_expiry_timestamp_seconds",
            "When the CA of the webhook's serving certificate expires (Unix seconds; 0: no ca.crt)",
            self.ca_expiry.clone(),
        );
        sub.register(
            "certificate_rotations",
            "Times this replica started serving a new certificate (serving) or one under a new CA (ca)",
            self.rotations.clone(),
        );
        sub.register(
            "certificate_failures",
            "Passes that failed to check, issue, store or publish the webhook certificate",
            self.failures.clone(),
        );
        // Both series exist from the start, so a rate() over them is defined.
        for certificate in [SERVING, CA] {
            let _ = self
                .rotations
                .get_or_create(&CertificateLabel { certificate });
        }
    }

    /// Reports the certificate (and CA, PEM) being served now; a change from the last
    /// report counts as a rotation.
    pub fn served(&self, cert_pem: &str, ca_pem: Option<&str>) {
        let seconds = |pem: &str| {
            super::issue::not_after(pem).map_or(0, |t| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            })
        };
        self.serving_expiry.set(seconds(cert_pem));
        self.ca_expiry.set(ca_pem.map_or(0, seconds));
        let mut served = self.served.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = served.as_ref() {
            if last.cert != cert_pem {
                self.rotated(SERVING);
            }
            if last.ca.as_deref() != ca_pem {
                self.rotated(CA);
            }
        }
        *served = Some(Served {
            cert: cert_pem.to_owned(),
            ca: ca_pem.map(str::to_owned),
        });
    }

    /// Counts a failed pass.
    pub fn failed(&self) {
        self.failures.inc();
    }

    fn rotated(&self, certificate: &'static str) {
        self.rotations
            .get_or_create(&CertificateLabel { certificate })
            .inc();
    }

    /// Reports the files in `dir` (kept by cert-manager) now and every minute until the
    /// task is dropped; a missing or broken pair counts as a failure.
    pub fn follow_files(&self, dir: PathBuf) -> tokio::task::JoinHandle<()> {
        let metrics = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = metrics.report_files(&dir) {
                    tracing::warn!(error = %e, "webhook certificate files");
                }
                tokio::time::sleep(FILES_INTERVAL).await;
            }
        })
    }

    /// Reports the files in `dir` once.
    pub fn report_files(&self, dir: &Path) -> Result<(), files::CertFileError> {
        let read = || -> Result<(String, Option<String>), files::CertFileError> {
            files::check(dir)?;
            let cert_path = dir.join(files::CERT_FILE);
            let cert =
                std::fs::read_to_string(&cert_path).map_err(|source| files::CertFileError::Io {
                    path: cert_path,
                    source,
                })?;
            Ok((cert, std::fs::read_to_string(dir.join(files::CA_FILE)).ok()))
        };
        match read() {
            Ok((cert, ca)) => {
                self.served(&cert, ca.as_deref());
                Ok(())
            }
            Err(e) => {
                self.failed();
                Err(e)
            }
        }
    }
}
