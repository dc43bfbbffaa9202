//! The injection webhook's serving certificate, in Kubernetes mode.
//!
//! Two sources, chosen by flags ([`WebhookCertOptions`]):
//!
//! - **cert-manager** (`--webhook-cert-dir`): someone else writes `tls.crt` and
//!   `tls.key` (a Secret volume) and injects the `caBundle`; the controller only checks,
//!   at start, that the files are there and belong together.
//! - **generated** (`--webhook-cert-secret`, `--webhook-configuration`,
//!   `--webhook-service`): the controller keeps a CA (ten years) and a serving
//!   certificate for the Service's DNS names (one year, renewed in its last third) in a
//!   `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`, `ca.crt`, and `ca.key` so that
//!   renewals keep the CA), keeps every webhook's `clientConfig.caBundle` of the
//!   MutatingWebhookConfiguration equal to the CA, and writes the files the HTTPS server
//!   reads into `--webhook-generated-cert-dir` ([`files`]).
//!
//! **Every replica runs the keeper, not only the leader.** Each replica serves the
//! webhook, so each needs the files from its first second, whether or not an election
//! has been won; and the writes are safe without a leader: the Secret is created with a
//! `create` (the API server refuses a second one with 409 AlreadyExists) and replaced
//! with the `resourceVersion` it was read at (409 Conflict for a stale one), so of
//! replicas racing exactly one write lands and the others read the winner's Secret and
//! serve it. The `caBundle` is written with a JSON patch that tests each webhook's name
//! at its index and touches nothing but `caBundle`: replicas write the same value, and
//! a concurrent `helm upgrade` that reorders webhooks fails the test and is read again.
//!
//! Order matters for a CA change: the keeper patches the `caBundle` before it writes
//! new files, so a replica never serves a certificate the API server cannot verify yet.
//!
//! The keeper watches the Secret and the configuration by name (a `helm upgrade`
//! re-creates the configuration without `caBundle`, a rotation by another replica
//! changes the Secret) and wakes up when the serving certificate is due for renewal.
//!
//! This module must not serve anything: the webhook's HTTPS server reads the files.

pub mod files;
pub mod issue;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

use self::files::CertFileError;
use self::issue::{CertificateSet, IssueError, Lifetimes, Verdict};

/// The default of `--webhook-generated-cert-dir` (an emptyDir in the chart).
pub const DEFAULT_GENERATED_DIR: &str = "/var/run/agentmesh/webhook";
/// The Secret key of the CA's private key (next to `tls.crt`, `tls.key` and `ca.crt`).
pub const CA_KEY: &str = "ca.key";
/// How often the keeper checks everything even when nothing was announced.
const RESYNC: Duration = Duration::from_secs(600);
/// How long the keeper waits after a failed pass before it tries again.
const RETRY: Duration = Duration::from_secs(10);
/// How often one pass re-reads and retries after losing a race.
const ATTEMPTS: usize = 5;

/// Where the webhook's serving certificate comes from (Kubernetes mode).
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookCertOptions {
    /// A directory where someone else (cert-manager, through a Secret volume) keeps
    /// `tls.crt` and `tls.key` for the webhook, and the `caBundle` of its
    /// configuration. The controller only checks that they are a valid pair.
    #[arg(
        long = "webhook-cert-dir",
        id = "webhook_cert_dir",
        value_name = "DIR",
        requires = "kubernetes",
        conflicts_with = "webhook_cert_secret"
    )]
    pub cert_dir: Option<PathBuf>,
    /// Generate the webhook's certificate and keep it (CA, serving certificate and
    /// keys) in this Secret of the controller's namespace; created if missing, renewed
    /// before it expires. Needs `--webhook-configuration` and `--webhook-service`.
    #[arg(
        long = "webhook-cert-secret",
        id = "webhook_cert_secret",
        value_name = "NAME",
        requires_all = ["kubernetes", "webhook_configuration", "webhook_service"]
    )]
    pub cert_secret: Option<String>,
    /// The MutatingWebhookConfiguration whose webhooks' `caBundle` the controller keeps
    /// equal to the generated CA.
    #[arg(
        long = "webhook-configuration",
        id = "webhook_configuration",
        value_name = "NAME",
        requires = "webhook_cert_secret"
    )]
    pub configuration: Option<String>,
    /// The Service the API server calls the webhook through: the generated certificate
    /// is for `NAME.NAMESPACE.svc`, `NAME.NAMESPACE.svc.cluster.local` and
    /// `NAME.NAMESPACE`.
    #[arg(
        long = "webhook-service",
        id = "webhook_service",
        value_name = "NAME",
        requires = "webhook_cert_secret"
    )]
    pub service: Option<String>,
    /// The namespace of the certificate Secret and the Service (the controller's own).
    #[arg(
        long = "webhook-namespace",
        id = "webhook_namespace",
        env = "POD_NAMESPACE",
        value_name = "NAMESPACE",
        default_value = "agentmesh-system"
    )]
    pub namespace: String,
    /// Where the generated certificate's files (`tls.crt`, `tls.key`, `ca.crt`) are
    /// written for the webhook's HTTPS server.
    #[arg(
        long = "webhook-generated-cert-dir",
        id = "webhook_generated_cert_dir",
        value_name = "DIR",
        default_value = DEFAULT_GENERATED_DIR
    )]
    pub generated_dir: PathBuf,
    /// How long a generated serving certificate is valid (`8760h`: a year); it is
    /// renewed once a third of that is left. The CA is valid for ten years.
    #[arg(
        long = "webhook-cert-validity",
        id = "webhook_cert_validity",
        value_name = "DURATION",
        default_value = "8760h",
        value_parser = validity
    )]
    pub validity: Duration,
}

fn validity(text: &str) -> Result<Duration, String> {
    let d = crate::crd::parse_duration(text)?;
    if d < Duration::from_secs(3600) {
        return Err(format!("{text:?} is too short (at least 1h)"));
    }
    Ok(d)
}

/// The generated certificate's settings, resolved from [`WebhookCertOptions`].
#[derive(Debug, Clone)]
pub struct GeneratedCert {
    /// The namespace of the Secret and the Service.
    pub namespace: String,
    /// The Secret keeping the certificates.
    pub secret: String,
    /// The MutatingWebhookConfiguration whose `caBundle` is kept current.
    pub configuration: String,
    /// The DNS names the serving certificate covers.
    pub names: Vec<String>,
    /// Where the files for the HTTPS server are written.
    pub dir: PathBuf,
    /// Lifetimes and renewal.
    pub lifetimes: Lifetimes,
}

/// What the options ask for.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// Files someone else keeps in this directory.
    Files(PathBuf),
    /// A certificate the controller generates and keeps.
    Generated(GeneratedCert),
}

impl WebhookCertOptions {
    /// The certificate source the flags name, if any (none: no webhook certificate).
    pub fn source(&self) -> Option<CertSource> {
        if let Some(dir) = &self.cert_dir {
            return Some(CertSource::Files(dir.clone()));
        }
        // clap makes the three generated-certificate flags come together.
        let (secret, configuration, service) = (
            self.cert_secret.clone()?,
            self.configuration.clone()?,
            self.service.as_deref()?,
        );
        Some(CertSource::Generated(GeneratedCert {
            names: issue::service_names(service, &self.namespace),
            namespace: self.namespace.clone(),
            secret,
            configuration,
            dir: self.generated_dir.clone(),
            lifetimes: Lifetimes {
                serving: self.validity,
                ..Lifetimes::default()
            },
        }))
    }
}

/// Why the webhook certificate could not be checked, issued, stored or published.
#[derive(Debug, thiserror::Error)]
pub enum WebhookCertError {
    /// The certificate files are missing or not a valid pair.
    #[error("webhook certificate: {0}")]
    Files(#[from] CertFileError),
    /// Issuing failed.
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// The API server refused a read or a write.
    #[error("webhook certificate: {what}: {source}")]
    Api {
        /// What was being done, naming the object.
        what: String,
        /// What the API server said.
        source: kube::Error,
    },
    /// The caBundle patch could not be put together (a bug, not an input error).
    #[error("webhook certificate: cannot build the caBundle patch: {0}")]
    PatchText(serde_json::Error),
    /// Other replicas kept winning the race for the object.
    #[error("webhook certificate: {0} kept changing under us; giving up this pass")]
    Contended(String),
}

/// Gets the webhook certificate ready and keeps it so: with files from elsewhere,
/// checks them; with a generated certificate, makes one pass (Secret, `caBundle`,
/// files) and spawns the [`CertificateKeeper`] that keeps them current. Returns the
/// directory holding the `tls.crt` and `tls.key` the HTTPS server must serve.
pub async fn start(client: kube::Client, source: CertSource) -> Result<PathBuf, WebhookCertError> {
    match source {
        CertSource::Files(dir) => {
            let not_after = files::check(&dir)?;
            tracing::info!(
                dir = %dir.display(),
                not_after = %issue::rfc3339(not_after),
                "webhook certificate from files (kept by cert-manager)"
            );
            Ok(dir)
        }
        CertSource::Generated(settings) => {
            let dir = settings.dir.clone();
            let keeper = CertificateKeeper::new(client, settings);
            let renew_at = keeper.reconcile().await?;
            tokio::spawn(keeper.run(renew_at));
            Ok(dir)
        }
    }
}

/// Keeps the generated certificate in its Secret, the CA in the configuration's
/// `caBundle`, and the files current.
pub struct CertificateKeeper {
    secrets: Api<Secret>,
    configurations: Api<MutatingWebhookConfiguration>,
    settings: GeneratedCert,
}

impl CertificateKeeper {
    /// A keeper for `settings`, talking to the API server through `client`.
    pub fn new(client: kube::Client, settings: GeneratedCert) -> CertificateKeeper {
        CertificateKeeper {
            secrets: Api::namespaced(client.clone(), &settings.namespace),
            configurations: Api::all(client),
            settings,
        }
    }

    /// Follows the Secret and the configuration, and renews on time, until the task is
    /// dropped. `renew_at` is when the certificate of the last pass is due.
    pub async fn run(self, mut renew_at: SystemTime) {
        let by_name =
            |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
        let secret_events = watcher(self.secrets.clone(), by_name(&self.settings.secret))
            .default_backoff()
            .map(|e| e.map(|_| ()))
            .boxed();
        let configuration_events = watcher(
            self.configurations.clone(),
            by_name(&self.settings.configuration),
        )
        .default_backoff()
        .map(|e| e.map(|_| ()))
        .boxed();
        let mut events = futures_util::stream::select(secret_events, configuration_events);
        loop {
            let due = renew_at
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .min(RESYNC);
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "webhook certificate: watch interrupted");
                        continue;
                    }
                    None => return,
                },
                () = tokio::time::sleep(due) => {}
            }
            renew_at = match self.reconcile().await {
                Ok(at) => at,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook certificate: will try again");
                    SystemTime::now() + RETRY
                }
            };
        }
    }

    /// One pass: the Secret holds a valid certificate (issued or renewed if needed),
    /// the configuration's `caBundle` holds its CA, and the files hold it. Returns when
    /// the certificate is due for renewal.
    pub async fn reconcile(&self) -> Result<SystemTime, WebhookCertError> {
        let (set, not_after, renew_at) = self.ensure_secret().await?;
        self.ensure_ca_bundle(&set.ca_cert).await?;
        if files::write(&self.settings.dir, &set)? {
            tracing::info!(
                dir = %self.settings.dir.display(),
                not_after = %issue::rfc3339(not_after),
                "webhook certificate files written"
            );
        }
        Ok(renew_at)
    }

    /// Reads the Secret and keeps, renews or replaces what it holds; returns the
    /// certificates it holds now, their expiry and renewal time.
    async fn ensure_secret(
        &self,
    ) -> Result<(CertificateSet, SystemTime, SystemTime), WebhookCertError> {
        let GeneratedCert {
            namespace,
            secret: name,
            names,
            lifetimes,
            ..
        } = &self.settings;
        let described = format!("Secret {namespace}/{name}");
        for _ in 0..ATTEMPTS {
            let current =
                self.secrets
                    .get_opt(name)
                    .await
                    .map_err(|source| WebhookCertError::Api {
                        what: format!("cannot read {described}"),
                        source,
                    })?;
            let held = current.as_ref().and_then(certificate_set);
            let now = SystemTime::now();
            let (issued, reason, ca_replaced) =
                match issue::assess(held.as_ref(), names, lifetimes, now) {
                    Verdict::Keep {
                        not_after,
                        renew_at,
                    } => {
                        if let Some(held) = held {
                            return Ok((held, not_after, renew_at));
                        }
                        // assess keeps only what is held; unreachable in practice.
                        continue;
                    }
                    Verdict::RenewServing { reason } => match &held {
                        Some(held) => (
                            issue::renew_serving(
                                &held.ca_cert,
                                &held.ca_key,
                                names,
                                lifetimes,
                                now,
                            )?,
                            reason,
                            false,
                        ),
                        None => (issue::issue_all(names, lifetimes, now)?, reason, true),
                    },
                    Verdict::Replace { reason } => {
                        (issue::issue_all(names, lifetimes, now)?, reason, true)
                    }
                };
            let written = match current {
                None => {
                    let secret = Secret {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            namespace: Some(namespace.clone()),
                            labels: Some(BTreeMap::from([
                                ("app.kubernetes.io/part-of".into(), "agentmesh".into()),
                                (
                                    "app.kubernetes.io/managed-by".into(),
                                    super::FIELD_MANAGER.into(),
                                ),
                            ])),
                            ..ObjectMeta::default()
                        },
                        type_: Some("kubernetes.io/tls".into()),
                        data: Some(secret_data(&issued)),
                        ..Secret::default()
                    };
                    self.secrets.create(&PostParams::default(), &secret).await
                }
                Some(mut secret) => {
                    // Replaced from the resourceVersion read; the type (immutable) and
                    // other keys, labels and annotations stay as they are.
                    secret
                        .data
                        .get_or_insert_with(BTreeMap::new)
                        .extend(secret_data(&issued));
                    self.secrets
                        .replace(name, &PostParams::default(), &secret)
                        .await
                }
            };
            match written {
                Ok(_) => {
                    let not_after = issue::not_after(&issued.cert).map_err(|reason| {
                        IssueError::Crypto(format!("the issued certificate: {reason}"))
                    })?;
                    tracing::info!(
                        secret = %described,
                        %reason,
                        ca_replaced,
                        not_after = %issue::rfc3339(not_after),
                        "webhook certificate issued"
                    );
                    // The next read assesses what was written, renewal time included.
                    continue;
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    tracing::debug!(
                        secret = %described,
                        "another replica wrote the webhook certificate first; reading theirs"
                    );
                }
                Err(source) => {
                    return Err(WebhookCertError::Api {
                        what: format!("cannot write {described}"),
                        source,
                    });
                }
            }
        }
        Err(WebhookCertError::Contended(described))
    }

    /// Sets every webhook's `clientConfig.caBundle` of the configuration to `ca_cert`
    /// where it differs. A configuration that does not exist yet is left for the watch.
    async fn ensure_ca_bundle(&self, ca_cert: &str) -> Result<(), WebhookCertError> {
        let name = &self.settings.configuration;
        let described = format!("MutatingWebhookConfiguration {name}");
        let wanted = ByteString(ca_cert.as_bytes().to_vec());
        for _ in 0..ATTEMPTS {
            let Some(configuration) =
                self.configurations.get_opt(name).await.map_err(|source| {
                    WebhookCertError::Api {
                        what: format!("cannot read {described}"),
                        source,
                    }
                })?
            else {
                tracing::warn!(
                    configuration = %name,
                    "webhook configuration not found; its caBundle is set once it exists"
                );
                return Ok(());
            };
            let webhooks = configuration.webhooks.unwrap_or_default();
            let mut operations = Vec::new();
            for (index, webhook) in webhooks.iter().enumerate() {
                if webhook.client_config.ca_bundle.as_ref() == Some(&wanted) {
                    continue;
                }
                // The index is only right if the webhook there is still the one read.
                operations.push(serde_json::json!({
                    "op": "test", "path": format!("/webhooks/{index}/name"), "value": webhook.name,
                }));
                operations.push(serde_json::json!({
                    "op": "add",
                    "path": format!("/webhooks/{index}/clientConfig/caBundle"),
                    "value": wanted,
                }));
            }
            if operations.is_empty() {
                return Ok(());
            }
            let patch: json_patch::Patch =
                serde_json::from_value(operations.into()).map_err(WebhookCertError::PatchText)?;
            match self
                .configurations
                .patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(
                        configuration = %name,
                        webhooks = webhooks.len(),
                        ca_not_after = %issue::not_after(ca_cert).map_or_else(|e| e, issue::rfc3339),
                        "webhook caBundle set to the CA"
                    );
                    return Ok(());
                }
                // A failed test (the webhooks changed since they were read): read again.
                Err(kube::Error::Api(status)) if status.code == 409 || status.code == 422 => {
                    tracing::debug!(configuration = %name, "webhook configuration changed; reading it again");
                }
                Err(source) => {
                    return Err(WebhookCertError::Api {
                        what: format!("cannot patch the caBundle of {described}"),
                        source,
                    });
                }
            }
        }
        Err(WebhookCertError::Contended(described))
    }
}

/// The Secret's data for a certificate set.
fn secret_data(set: &CertificateSet) -> BTreeMap<String, ByteString> {
    let bytes = |text: &str| ByteString(text.as_bytes().to_vec());
    BTreeMap::from([
        (files::CERT_FILE.into(), bytes(&set.cert)),
        (files::KEY_FILE.into(), bytes(&set.key)),
        (files::CA_FILE.into(), bytes(&set.ca_cert)),
        (CA_KEY.into(), bytes(&set.ca_key)),
    ])
}

/// The certificate set a Secret holds, if it holds all four texts.
fn certificate_set(secret: &Secret) -> Option<CertificateSet> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| {
        data.get(key)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    Some(CertificateSet {
        ca_cert: text(files::CA_FILE)?,
        ca_key: text(CA_KEY)?,
        cert: text(files::CERT_FILE)?,
        key: text(files::KEY_FILE)?,
    })
}
