//! The mesh CA's root in Kubernetes mode: where it lives, and where its certificate is
//! published.
//!
//! - **The root** is a `kubernetes.io/tls` Secret in the controller's namespace
//!   (`--mesh-ca-root-secret`, the chart's `agentmesh-mesh-ca`), keys `tls.crt` and
//!   `tls.key`: the shape cert-manager writes for a CA Certificate, so an operator can
//!   bring their own CA that way or by hand. When the Secret is absent, the controller
//!   generates a self-signed root (ten years) and creates it, unless told not to
//!   (`--mesh-ca-generate=false`, for a Secret cert-manager will write). Every replica
//!   loads and watches it ([`start`]) and hands the current root to the signer through
//!   a [`RootWatch`]; the creation is race-safe as the webhook certificate's is: the
//!   API server refuses a second `create` (409), and the loser reads the winner's
//!   Secret. An invalid Secret at start is an error naming the Secret and the key; a
//!   replacement that is invalid is refused and the last good root kept.
//! - **The published bundle** ([`publish`]): the root's certificate (never its key), in
//!   the ConfigMap the injector mounts into `intercept` pods (`--mesh-ca-configmap`,
//!   key `--mesh-ca-key`: `agentmesh-mesh-ca`, `ca-bundle.crt`) of every namespace
//!   labelled `agentmesh.dev/inject=enabled`. It holds the root, the previous root for
//!   `--mesh-ca-overlap` after a replacement (leaf certificates of the old root are
//!   still in use until their proxies get new ones), and the public roots of
//!   `--mesh-ca-public-roots`, because `SSL_CERT_FILE` replaces the app's own roots.
//!   The ConfigMap of the same name in the controller's namespace holds the same bundle
//!   and remembers the root it was made for (`root.crt`) and the previous root
//!   (`previous-root.crt`, until the time of its annotation): state kept where only
//!   the controller's operators can write, so a user editing the copy in their own
//!   namespace cannot make the controller carry a CA of their choosing. A copy that is
//!   edited or deleted is written again; a namespace that loses the label keeps its
//!   copy (its pods may still mount it).
//!
//! **Only the leader publishes.** The copies span every labelled namespace; two
//! replicas that see a root change a few hundred milliseconds apart would write the
//! old and the new bundle over each other until both caught up. One writer, as for
//! status, avoids that churn; loading the root stays on every replica, since every
//! replica signs.
//!
//! This module must not sign anything: the signer consumes the [`RootWatch`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use super::webhook_cert::issue;
use crate::mesh_ca::{MeshRoot, RootWatch};

/// The default name of the root's Secret (the chart's).
pub const DEFAULT_SECRET: &str = "agentmesh-mesh-ca";
/// The Secret key of the root certificate.
pub const CERT_KEY: &str = "tls.crt";
/// The Secret key of the root's private key.
pub const KEY_KEY: &str = "tls.key";
/// How long a generated root is valid.
pub const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The label of the namespaces the bundle is published to (the injector's).
pub const INJECT_LABEL: &str = "agentmesh.dev/inject";
/// The state ConfigMap's key of the root the bundle was made for.
pub const ROOT_FILE: &str = "root.crt";
/// The state ConfigMap's key of the previous root.
pub const PREVIOUS_ROOT_FILE: &str = "previous-root.crt";
/// The state ConfigMap's annotation: until when (RFC 3339) the previous root is kept.
pub const PREVIOUS_ROOT_UNTIL: &str = "agentmesh.dev/previous-root-until";
/// How often everything is checked even when nothing was announced.
const RESYNC: Duration = Duration::from_secs(600);
/// How long after a failed pass the next one runs.
const RETRY: Duration = Duration::from_secs(10);
/// Events arriving within this pause are handled by one pass.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// The mesh CA's root and its publication (Kubernetes mode).
#[derive(Debug, Clone, clap::Args)]
pub struct MeshCaOptions {
    /// The Secret (in the controller's namespace; `tls.crt`, `tls.key`) holding the
    /// mesh CA's root for intercepted egress TLS. Without it, no mesh CA.
    #[arg(
        long = "mesh-ca-root-secret",
        id = "mesh_ca_root_secret",
        value_name = "NAME",
        requires = "kubernetes"
    )]
    pub secret: Option<String>,
    /// The namespace of that Secret (the controller's own).
    #[arg(
        long = "mesh-ca-namespace",
        id = "mesh_ca_namespace",
        env = "POD_NAMESPACE",
        value_name = "NAMESPACE",
        default_value = "agentmesh-system"
    )]
    pub namespace: String,
    /// Generate a self-signed root when the Secret is absent (false: wait for it, as
    /// when cert-manager or an operator provides it).
    #[arg(
        long = "mesh-ca-generate",
        id = "mesh_ca_generate",
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub generate: bool,
    /// How long a replaced root stays in the published bundle next to the new one.
    #[arg(
        long = "mesh-ca-overlap",
        id = "mesh_ca_overlap",
        value_name = "DURATION",
        default_value = "24h",
        value_parser = super::webhook_cert::overlap
    )]
    pub overlap: Duration,
    /// A PEM file of public roots appended to the published bundle (apps whose
    /// `SSL_CERT_FILE` is the bundle still reach destinations left in passthrough).
    /// Missing: the bundle holds the mesh roots only, and a warning says so.
    #[arg(
        long = "mesh-ca-public-roots",
        id = "mesh_ca_public_roots",
        value_name = "FILE",
        default_value = "/etc/ssl/certs/ca-certificates.crt"
    )]
    pub public_roots: PathBuf,
}

/// Where the root lives.
#[derive(Debug, Clone)]
pub struct RootSettings {
    /// The controller's namespace.
    pub namespace: String,
    /// The Secret's name.
    pub secret: String,
    /// Whether to generate a root when the Secret is absent.
    pub generate: bool,
}

/// Where and how the root's certificate is published.
#[derive(Debug, Clone)]
pub struct PublishSettings {
    /// The controller's namespace (the state ConfigMap; never a target).
    pub namespace: String,
    /// The ConfigMap's name in every namespace (the injector's `--mesh-ca-configmap`).
    pub configmap: String,
    /// The key of the bundle (the injector's `--mesh-ca-key`).
    pub key: String,
    /// How long a replaced root stays in the bundle.
    pub overlap: Duration,
    /// Public roots appended to the bundle, if the file exists.
    pub public_roots: Option<PathBuf>,
}

impl MeshCaOptions {
    /// The root's settings, when `--mesh-ca-root-secret` is given.
    pub fn root(&self) -> Option<RootSettings> {
        Some(RootSettings {
            namespace: self.namespace.clone(),
            secret: self.secret.clone()?,
            generate: self.generate,
        })
    }

    /// The publication's settings for the injector's ConfigMap `configmap`, key `key`.
    pub fn publish(&self, configmap: &str, key: &str) -> PublishSettings {
        PublishSettings {
            namespace: self.namespace.clone(),
            configmap: configmap.to_owned(),
            key: key.to_owned(),
            overlap: self.overlap,
            public_roots: Some(self.public_roots.clone()),
        }
    }
}

/// Why the mesh root could not be loaded, generated or published.
#[derive(Debug, thiserror::Error)]
pub enum MeshCaError {
    /// The API server refused a read or a write.
    #[error("mesh CA: {what}: {source}")]
    Api {
        /// What was being done, naming the object.
        what: String,
        /// What the API server said (boxed: it is large, and errors are rare).
        source: Box<kube::Error>,
    },
    /// The Secret does not hold a usable root.
    #[error("mesh CA: Secret {secret}: {reason}")]
    Invalid {
        /// `namespace/name`.
        secret: String,
        /// What is wrong, naming the key.
        reason: String,
    },
    /// Generating a root failed.
    #[error("mesh CA: {0}")]
    Issue(#[from] issue::IssueError),
    /// Other replicas kept changing the object.
    #[error("mesh CA: {0} kept changing under us; giving up this pass")]
    Contended(String),
    /// Some namespaces refused their copy (the others have theirs).
    #[error("mesh CA: cannot publish the bundle to every namespace: {0}")]
    Publish(String),
}

/// Loads the root (generating it when absent and allowed), then follows its Secret
/// until the runtime stops; the receiver holds the current root (`None` while there is
/// none: `--mesh-ca-generate=false` and no Secret yet).
pub async fn start(client: kube::Client, settings: RootSettings) -> Result<RootWatch, MeshCaError> {
    let keeper = RootKeeper {
        secrets: Api::namespaced(client, &settings.namespace),
        settings,
    };
    let first = keeper.load().await?;
    match &first {
        Some(root) => tracing::info!(
            secret = %keeper.described(),
            not_after = %issue::not_after(&root.cert_pem).map_or_else(|e| e, issue::rfc3339),
            "mesh CA root loaded"
        ),
        None => tracing::warn!(
            secret = %keeper.described(),
            "mesh CA root Secret not found; waiting for it (--mesh-ca-generate=false)"
        ),
    }
    let (tx, rx) = watch::channel(first);
    tokio::spawn(keeper.follow(tx));
    Ok(rx)
}

struct RootKeeper {
    secrets: Api<Secret>,
    settings: RootSettings,
}

impl RootKeeper {
    fn described(&self) -> String {
        format!("{}/{}", self.settings.namespace, self.settings.secret)
    }

    /// Reloads on every change of the Secret (and every [`RESYNC`]) until the receivers
    /// are gone.
    async fn follow(self, tx: watch::Sender<Option<Arc<MeshRoot>>>) {
        let config =
            watcher::Config::default().fields(&format!("metadata.name={}", self.settings.secret));
        let mut events = watcher(self.secrets.clone(), config)
            .default_backoff()
            .boxed();
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "mesh CA: watch interrupted");
                        continue;
                    }
                    None => return,
                },
                () = tokio::time::sleep(RESYNC) => {}
                () = tx.closed() => return,
            }
            match self.load().await {
                Ok(Some(root)) => {
                    let changed = tx.send_if_modified(|held| {
                        if held.as_deref() == Some(&*root) {
                            return false;
                        }
                        *held = Some(root.clone());
                        true
                    });
                    if changed {
                        tracing::info!(secret = %self.described(), "mesh CA root replaced");
                    }
                }
                // Deleted and not ours to generate: the last root stays in use.
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "mesh CA: keeping the last good root"),
            }
        }
    }

    /// The root the Secret holds, after creating it with a generated root if it is
    /// absent and generating is allowed.
    async fn load(&self) -> Result<Option<Arc<MeshRoot>>, MeshCaError> {
        let name = &self.settings.secret;
        let api = |what: &str| {
            let what = format!("cannot {what} Secret {}", self.described());
            move |source: kube::Error| MeshCaError::Api {
                what,
                source: Box::new(source),
            }
        };
        for _ in 0..2 {
            if let Some(secret) = self.secrets.get_opt(name).await.map_err(api("read"))? {
                return self.root_of(&secret).map(|root| Some(Arc::new(root)));
            }
            if !self.settings.generate {
                return Ok(None);
            }
            let (cert_pem, key_pem) =
                issue::issue_ca("agentmesh mesh CA", ROOT_VALIDITY, SystemTime::now())?;
            let bytes = |text: &str| ByteString(text.as_bytes().to_vec());
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    labels: Some(managed_labels()),
                    ..ObjectMeta::default()
                },
                type_: Some("kubernetes.io/tls".into()),
                data: Some(BTreeMap::from([
                    (CERT_KEY.into(), bytes(&cert_pem)),
                    (KEY_KEY.into(), bytes(&key_pem)),
                ])),
                ..Secret::default()
            };
            match self.secrets.create(&PostParams::default(), &secret).await {
                Ok(_) => {
                    tracing::info!(secret = %self.described(), "mesh CA root generated");
                    return Ok(Some(Arc::new(MeshRoot { cert_pem, key_pem })));
                }
                // Another replica created it first: read theirs.
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(source) => return Err(api("create")(source)),
            }
        }
        Err(MeshCaError::Contended(format!(
            "Secret {}",
            self.described()
        )))
    }

    /// The root a Secret holds, checked: a CA certificate and its key.
    fn root_of(&self, secret: &Secret) -> Result<MeshRoot, MeshCaError> {
        let invalid = |reason: String| MeshCaError::Invalid {
            secret: self.described(),
            reason,
        };
        let text = |key: &str| -> Result<String, MeshCaError> {
            let bytes = secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .ok_or_else(|| invalid(format!("has no key {key}")))?;
            String::from_utf8(bytes.0.clone()).map_err(|_| invalid(format!("{key} is not text")))
        };
        let (cert_pem, key_pem) = (text(CERT_KEY)?, text(KEY_KEY)?);
        issue::check_ca(&cert_pem, &key_pem)
            .map_err(|reason| invalid(format!("{CERT_KEY} and {KEY_KEY}: {reason}")))?;
        Ok(MeshRoot { cert_pem, key_pem })
    }
}

fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/part-of".into(), "agentmesh".into()),
        (
            "app.kubernetes.io/managed-by".into(),
            super::FIELD_MANAGER.into(),
        ),
    ])
}

/// Publishes the root's certificate to every labelled namespace and keeps the copies
/// current, until the task is dropped (the leader runs it; see the module comment).
pub async fn publish(client: kube::Client, settings: PublishSettings, mut roots: RootWatch) {
    let publisher = Publisher {
        configmaps: Api::all(client.clone()),
        namespaces: Api::all(client.clone()),
        client,
        settings,
        public_roots_warned: std::sync::atomic::AtomicBool::new(false),
    };
    let namespace_events = watcher(
        publisher.namespaces.clone(),
        watcher::Config::default().labels(&format!("{INJECT_LABEL}=enabled")),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()))
    .boxed();
    let configmap_events = watcher(
        publisher.configmaps.clone(),
        watcher::Config::default()
            .fields(&format!("metadata.name={}", publisher.settings.configmap)),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()))
    .boxed();
    let mut events = futures_util::stream::select(namespace_events, configmap_events);
    let mut wake_at = SystemTime::now();
    loop {
        let due = wake_at
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .min(RESYNC);
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "mesh CA publication: watch interrupted");
                    continue;
                }
                None => return,
            },
            changed = roots.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(due) => {}
        }
        // One pass for a burst of events (a pass's own writes come back as events).
        tokio::time::sleep(DEBOUNCE).await;
        let root = roots.borrow_and_update().clone();
        let Some(root) = root else {
            wake_at = SystemTime::now() + RESYNC;
            continue;
        };
        wake_at = match publisher.reconcile(&root.cert_pem).await {
            Ok(at) => at,
            Err(e) => {
                tracing::warn!(error = %e, "mesh CA publication: will try again");
                SystemTime::now() + RETRY
            }
        };
    }
}

struct Publisher {
    client: kube::Client,
    configmaps: Api<ConfigMap>,
    namespaces: Api<Namespace>,
    settings: PublishSettings,
    public_roots_warned: std::sync::atomic::AtomicBool,
}

impl Publisher {
    /// One pass: the state ConfigMap says what the bundle is, and every labelled
    /// namespace has it. Returns when to look again (the overlap's end, or a resync).
    async fn reconcile(&self, root: &str) -> Result<SystemTime, MeshCaError> {
        let PublishSettings {
            namespace: home,
            configmap: name,
            key,
            overlap,
            ..
        } = &self.settings;
        let by_name = ListParams::default().fields(&format!("metadata.name={name}"));
        let existing = self
            .configmaps
            .list(&by_name)
            .await
            .map_err(|source| MeshCaError::Api {
                what: format!("cannot list the ConfigMaps {name}"),
                source: Box::new(source),
            })?;
        let mut by_namespace: BTreeMap<String, ConfigMap> = existing
            .items
            .into_iter()
            .filter(|c| c.metadata.name.as_deref() == Some(name.as_str()))
            .filter_map(|c| Some((c.metadata.namespace.clone()?, c)))
            .collect();
        let now = SystemTime::now();
        let state = by_namespace.remove(home);
        let previous = previous_root(state.as_ref(), root, now, *overlap);
        let bundle = self.bundle(root, previous.as_ref().map(|(p, _)| p.as_str()));
        let mut state_data = BTreeMap::from([
            (ROOT_FILE.to_string(), root.to_owned()),
            (key.clone(), bundle.clone()),
        ]);
        let mut state_annotations = BTreeMap::new();
        if let Some((previous, until)) = &previous {
            state_data.insert(PREVIOUS_ROOT_FILE.into(), previous.clone());
            state_annotations.insert(PREVIOUS_ROOT_UNTIL.to_string(), issue::rfc3339(*until));
        }
        self.write(home, state, state_data, state_annotations)
            .await?;

        let namespaces = self
            .namespaces
            .list(&ListParams::default().labels(&format!("{INJECT_LABEL}=enabled")))
            .await
            .map_err(|source| MeshCaError::Api {
                what: "cannot list the namespaces".into(),
                source: Box::new(source),
            })?;
        let mut failures = Vec::new();
        for namespace in namespaces.items {
            let labelled = namespace
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(INJECT_LABEL))
                .is_some_and(|v| v == "enabled");
            let Some(ns) = namespace.metadata.name.filter(|n| labelled && n != home) else {
                continue;
            };
            let current = by_namespace.remove(&ns);
            let mut data = current
                .as_ref()
                .and_then(|c| c.data.clone())
                .unwrap_or_default();
            data.insert(key.clone(), bundle.clone());
            // One namespace refusing (quota, a terminating namespace) does not stop
            // the others.
            if let Err(e) = self.write(&ns, current, data, BTreeMap::new()).await {
                failures.push(e.to_string());
            }
        }
        if !failures.is_empty() {
            return Err(MeshCaError::Publish(failures.join("; ")));
        }
        let wake_at = previous.map_or(now + RESYNC, |(_, until)| until.min(now + RESYNC));
        Ok(wake_at)
    }

    /// The bundle: the root, the previous root, then the public roots.
    fn bundle(&self, root: &str, previous: Option<&str>) -> String {
        let mut bundle = String::new();
        let mut add = |pem: &str| {
            bundle.push_str(pem.trim_end());
            bundle.push('\n');
        };
        add(root);
        if let Some(previous) = previous {
            add(previous);
        }
        if let Some(path) = &self.settings.public_roots {
            match std::fs::read_to_string(path) {
                Ok(text) => add(&text),
                Err(e) => {
                    if !self
                        .public_roots_warned
                        .swap(true, std::sync::atomic::Ordering::Relaxed)
                    {
                        tracing::warn!(
                            file = %path.display(),
                            error = %e,
                            "mesh CA: no public roots; the published bundle holds the mesh roots only"
                        );
                    }
                }
            }
        }
        bundle
    }

    /// Makes the ConfigMap `namespace/name` hold `data` (and `annotations`, ours):
    /// created when absent, replaced at the resourceVersion read when different.
    async fn write(
        &self,
        namespace: &str,
        current: Option<ConfigMap>,
        data: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
    ) -> Result<(), MeshCaError> {
        let name = &self.settings.configmap;
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let described = format!("ConfigMap {namespace}/{name}");
        let result = match current {
            None => {
                let configmap = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(namespace.to_owned()),
                        labels: Some(managed_labels()),
                        annotations: (!annotations.is_empty()).then_some(annotations),
                        ..ObjectMeta::default()
                    },
                    data: Some(data),
                    ..ConfigMap::default()
                };
                api.create(&PostParams::default(), &configmap).await
            }
            Some(mut configmap) => {
                let held = configmap.metadata.annotations.clone().unwrap_or_default();
                let ours_held: BTreeMap<String, String> = held
                    .iter()
                    .filter(|(k, _)| *k == PREVIOUS_ROOT_UNTIL)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if configmap.data.as_ref() == Some(&data) && ours_held == annotations {
                    return Ok(());
                }
                let mut merged = held;
                merged.remove(PREVIOUS_ROOT_UNTIL);
                merged.extend(annotations);
                configmap.metadata.annotations = (!merged.is_empty()).then_some(merged);
                configmap.data = Some(data);
                api.replace(name, &PostParams::default(), &configmap).await
            }
        };
        match result {
            Ok(_) => {
                tracing::info!(configmap = %described, "mesh CA bundle published");
                Ok(())
            }
            // Changed (or created) since the list: the event that says so brings the
            // next pass.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::debug!(configmap = %described, "changed meanwhile; next pass");
                Ok(())
            }
            Err(source) => Err(MeshCaError::Api {
                what: format!("cannot write {described}"),
                source: Box::new(source),
            }),
        }
    }
}

/// The previous root to keep in the bundle, and until when: the root the state was made
/// for, when it is not `root` any more (a replacement, from `now` for `overlap`), or the
/// previous root the state already keeps, until its time.
fn previous_root(
    state: Option<&ConfigMap>,
    root: &str,
    now: SystemTime,
    overlap: Duration,
) -> Option<(String, SystemTime)> {
    let state = state?;
    let data = state.data.as_ref()?;
    let stored = data.get(ROOT_FILE)?;
    if stored != root {
        return issue::is_ca_certificate(stored).then(|| (stored.clone(), now + overlap));
    }
    let previous = data.get(PREVIOUS_ROOT_FILE)?;
    let until = state
        .metadata
        .annotations
        .as_ref()?
        .get(PREVIOUS_ROOT_UNTIL)?
        .parse::<k8s_openapi::jiff::Timestamp>()
        .ok()?;
    let until =
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(until.as_second()).ok()?);
    (until > now).then(|| (previous.clone(), until))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn root(name: &str) -> String {
        issue::issue_ca(name, ROOT_VALIDITY, now()).unwrap().0
    }

    fn state(root: &str, previous: Option<(&str, SystemTime)>) -> ConfigMap {
        let mut data = BTreeMap::from([(ROOT_FILE.to_string(), root.to_string())]);
        let mut annotations = BTreeMap::new();
        if let Some((previous, until)) = previous {
            data.insert(PREVIOUS_ROOT_FILE.into(), previous.into());
            annotations.insert(PREVIOUS_ROOT_UNTIL.to_string(), issue::rfc3339(until));
        }
        ConfigMap {
            metadata: ObjectMeta {
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        }
    }

    #[test]
    fn a_replaced_root_is_kept_for_the_overlap_and_then_dropped() {
        let (old, new) = (root("old"), root("new"));
        // Nothing published yet, or published for this very root: no previous root.
        assert_eq!(previous_root(None, &new, now(), HOUR), None);
        assert_eq!(
            previous_root(Some(&state(&new, None)), &new, now(), HOUR),
            None
        );
        // Published for another root: that one is the previous, from now on.
        assert_eq!(
            previous_root(Some(&state(&old, None)), &new, now(), HOUR),
            Some((old.clone(), now() + HOUR))
        );
        // Kept until its time, then dropped.
        let kept = state(&new, Some((&old, now() + HOUR)));
        assert_eq!(
            previous_root(Some(&kept), &new, now() + HOUR / 2, HOUR),
            Some((old.clone(), now() + HOUR))
        );
        assert_eq!(previous_root(Some(&kept), &new, now() + HOUR, HOUR), None);
    }

    #[test]
    fn a_stored_root_that_is_no_ca_is_not_carried_over() {
        let new = root("new");
        let garbage = state("not a certificate", None);
        assert_eq!(previous_root(Some(&garbage), &new, now(), HOUR), None);
    }
}
