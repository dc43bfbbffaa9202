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
//! And a replaced CA is not dropped at once: the Secret keeps it as `previous-ca.crt`
//! until the time in its annotation `agentmesh.dev/previous-ca-until`
//! (`--webhook-ca-overlap` after the replacement), and the `caBundle` holds both CAs
//! until then, so a replica still serving a certificate of the old CA (it has not seen
//! the new Secret yet) is not rejected by the API server in between. The overlap is a
//! bound in time rather than a count of replicas that acknowledged the new CA: replicas
//! see the Secret through their watch within seconds and re-read it at least every ten
//! minutes, and a time bound needs no registry of replicas that could itself go stale.
//!
//! The keeper watches the Secret and the configuration by name (a `helm upgrade`
//! re-creates the configuration without `caBundle`, a rotation by another replica
//! changes the Secret) and wakes up when the serving certificate is due for renewal.
//!
//! This module must not serve anything: the webhook's HTTPS server reads the files.

pub mod files;
pub mod issue;
pub mod metrics;

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
use self::metrics::CertMetrics;

/// The default of `--webhook-generated-cert-dir` (an emptyDir in the chart).
pub const DEFAULT_GENERATED_DIR: &str = "/var/run/agentmesh/webhook";
/// The Secret key of the CA's private key (next to `tls.crt`, `tls.key` and `ca.crt`).
pub const CA_KEY: &str = "ca.key";
/// The Secret key of the CA replaced last, trusted next to the new one for a while.
pub const PREVIOUS_CA: &str = "previous-ca.crt";
/// The Secret annotation saying until when (RFC 3339) [`PREVIOUS_CA`] stays trusted.
pub const PREVIOUS_CA_UNTIL: &str = "agentmesh.dev/previous-ca-until";
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
    /// How long a replaced CA stays in the webhook configuration's `caBundle` next to
    /// the new one, so replicas still serving a certificate of the old CA are accepted
    /// until they load the new one (they do within seconds, and at least every ten
    /// minutes).
    #[arg(
        long = "webhook-ca-overlap",
        id = "webhook_ca_overlap",
        value_name = "DURATION",
        default_value = "1h",
        value_parser = overlap
    )]
    pub ca_overlap: Duration,
}

/// Parses an overlap flag: a duration of at least a second (`1h`, `24h`).
pub(crate) fn overlap(text: &str) -> Result<Duration, String> {
    let d = crate::crd::parse_duration(text)?;
    if d < Duration::from_secs(1) {
        return Err(format!("{text:?} is too short (at least 1s)"));
    }
    Ok(d)
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
    /// How long a replaced CA stays in the `caBundle` next to the new one.
    pub ca_overlap: Duration,
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
            ca_overlap: self.ca_overlap,
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
/// checks them (and reports them to `metrics` every minute); with a generated
/// certificate, makes one pass (Secret, `caBundle`, files) and spawns the
/// [`CertificateKeeper`] that keeps them current. Returns the directory holding the
/// `tls.crt` and `tls.key` the HTTPS server must serve.
pub async fn start(
    client: kube::Client,
    source: CertSource,
    metrics: CertMetrics,
) -> Result<PathBuf, WebhookCertError> {
    match source {
        CertSource::Files(dir) => {
            let not_after = files::check(&dir)?;
            tracing::info!(
                dir = %dir.display(),
                not_after = %issue::rfc3339(not_after),
                "webhook certificate from files (kept by cert-manager)"
            );
            // Detached: it reports for as long as the process runs.
            drop(metrics.follow_files(dir.clone()));
            Ok(dir)
        }
        CertSource::Generated(settings) => {
            let dir = settings.dir.clone();
            let keeper = CertificateKeeper::new(client, settings, metrics);
            let renew_at = keeper.reconcile().await?;
            tokio::spawn(keeper.run(renew_at));
            Ok(dir)
        }
    }
}

/// What the Secret holds: the certificates, and the CA replaced last while it is
/// still trusted.
struct Held {
    set: CertificateSet,
    /// The previous CA (PEM) and until when it stays in the `caBundle`.
    previous: Option<(String, SystemTime)>,
    not_after: SystemTime,
    /// When the keeper must look again: the renewal, or the overlap's end.
    wake_at: SystemTime,
}

impl Held {
    /// The `caBundle`: the CA, then the previous one during the overlap.
    fn ca_bundle(&self) -> String {
        let mut bundle = self.set.ca_cert.clone();
        if let Some((previous, _)) = &self.previous {
            if !bundle.ends_with('\n') {
                bundle.push('\n');
            }
            bundle.push_str(previous);
        }
        bundle
    }
}

/// Keeps the generated certificate in its Secret, the CA in the configuration's
/// `caBundle`, and the files current.
pub struct CertificateKeeper {
    secrets: Api<Secret>,
    configurations: Api<MutatingWebhookConfiguration>,
    settings: GeneratedCert,
    metrics: CertMetrics,
}

impl CertificateKeeper {
    /// A keeper for `settings`, talking to the API server through `client`, reporting
    /// to `metrics`.
    pub fn new(
        client: kube::Client,
        settings: GeneratedCert,
        metrics: CertMetrics,
    ) -> CertificateKeeper {
        CertificateKeeper {
            secrets: Api::namespaced(client.clone(), &settings.namespace),
            configurations: Api::all(client),
            settings,
            metrics,
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
                    self.metrics.failed();
                    tracing::warn!(error = %e, "webhook certificate: will try again");
                    SystemTime::now() + RETRY
                }
            };
        }
    }

    /// One pass: the Secret holds a valid certificate (issued or renewed if needed),
    /// the configuration's `caBundle` holds its CA (and the previous one during an
    /// overlap), and the files hold it. Returns when the keeper must look again: the
    /// certificate's renewal or the overlap's end.
    pub async fn reconcile(&self) -> Result<SystemTime, WebhookCertError> {
        let held = self.ensure_secret().await?;
        self.ensure_ca_bundle(&held.ca_bundle(), &held.set.ca_cert)
            .await?;
        if files::write(&self.settings.dir, &held.set)? {
            tracing::info!(
                dir = %self.settings.dir.display(),
                not_after = %issue::rfc3339(held.not_after),
                "webhook certificate files written"
            );
        }
        self.metrics.served(&held.set.cert, Some(&held.set.ca_cert));
        Ok(held.wake_at)
    }

    /// Reads the Secret and keeps, renews or replaces what it holds (dropping a
    /// previous CA whose overlap is over); returns what it holds now.
    async fn ensure_secret(&self) -> Result<Held, WebhookCertError> {
        let GeneratedCert {
            namespace,
            secret: name,
            names,
            lifetimes,
            ca_overlap,
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
            let previous = current.as_ref().and_then(previous_ca);
            let (issued, reason, ca_replaced) =
                match issue::assess(held.as_ref(), names, lifetimes, now) {
                    Verdict::Keep {
                        not_after,
                        renew_at,
                    } => {
                        let Some(set) = held.clone() else {
                            // assess keeps only what is held; unreachable in practice.
                            continue;
                        };
                        match previous.clone() {
                            Some((_, until)) if until <= now => {
                                // The overlap is over: the Secret forgets the old CA
                                // (below), and the next read returns the CA alone.
                                (set, "the previous CA's overlap is over".to_string(), false)
                            }
                            previous => {
                                let wake_at = previous
                                    .as_ref()
                                    .map_or(renew_at, |(_, until)| renew_at.min(*until));
                                return Ok(Held {
                                    set,
                                    previous,
                                    not_after,
                                    wake_at,
                                });
                            }
                        }
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
            // A replaced CA that API servers may still see served stays trusted for the
            // overlap (not garbage, and not a certificate that is no CA).
            let kept_ca = held
                .as_ref()
                .filter(|held| ca_replaced && issue::is_ca_certificate(&held.ca_cert))
                .map(|held| (held.ca_cert.clone(), now + *ca_overlap));
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
                    // Nothing was held, so nothing was served: no previous CA.
                    self.secrets.create(&PostParams::default(), &secret).await
                }
                Some(mut secret) => {
                    // Replaced from the resourceVersion read; the type (immutable) and
                    // other keys, labels and annotations stay as they are.
                    let data = secret.data.get_or_insert_with(BTreeMap::new);
                    data.extend(secret_data(&issued));
                    let annotations = secret
                        .metadata
                        .annotations
                        .get_or_insert_with(BTreeMap::new);
                    // A new CA keeps the one it replaces; a kept CA keeps its
                    // previous one until the overlap ends, and then forgets it.
                    match (&kept_ca, ca_replaced) {
                        (Some((ca, until)), _) => {
                            data.insert(PREVIOUS_CA.into(), ByteString(ca.as_bytes().to_vec()));
                            annotations.insert(PREVIOUS_CA_UNTIL.into(), issue::rfc3339(*until));
                        }
                        (None, true) => {
                            data.remove(PREVIOUS_CA);
                            annotations.remove(PREVIOUS_CA_UNTIL);
                        }
                        (None, false) => {
                            if previous.is_none_or(|(_, until)| until <= now) {
                                data.remove(PREVIOUS_CA);
                                annotations.remove(PREVIOUS_CA_UNTIL);
                            }
                        }
                    }
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
                        "webhook certificate Secret written"
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

    /// Sets every webhook's `clientConfig.caBundle` of the configuration to `bundle`
    /// (the CA `ca_cert`, and the previous one during an overlap) where it differs. A
    /// configuration that does not exist yet is left for the watch.
    async fn ensure_ca_bundle(&self, bundle: &str, ca_cert: &str) -> Result<(), WebhookCertError> {
        let name = &self.settings.configuration;
        let described = format!("MutatingWebhookConfiguration {name}");
        let wanted = ByteString(bundle.as_bytes().to_vec());
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
                        with_previous_ca = bundle.len() > ca_cert.len(),
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

/// The previous CA a Secret keeps, and until when, if it keeps one with a readable time.
fn previous_ca(secret: &Secret) -> Option<(String, SystemTime)> {
    let text = secret.data.as_ref()?.get(PREVIOUS_CA)?;
    let text = String::from_utf8(text.0.clone()).ok()?;
    let until = secret
        .metadata
        .annotations
        .as_ref()?
        .get(PREVIOUS_CA_UNTIL)?
        .parse::<k8s_openapi::jiff::Timestamp>()
        .ok()?;
    let until = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(until.as_second()).unwrap_or_default());
    Some((text, until))
}
