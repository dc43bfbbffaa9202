//! The Kubernetes source: one reflector per kind, debounced into catalogs.
//!
//! Each kind is watched untyped ([`DynamicObject`]) and read into [`Objects`] with
//! [`Objects::insert`], the same code the folder source uses: an object that does not fit
//! the controller's types (a CRD version newer than ours, say) is reported in status and
//! left out, and never stops the list of its kind, as a typed watcher would.
//!
//! The first catalog is published once every kind has been listed, so a proxy is never
//! served half a cluster. A kind whose CRD is not installed (the list answers 404) is
//! logged once and counts as listed and empty; its reflector keeps retrying with backoff
//! and picks the kind up when the CRD appears. Any other error (RBAC, network) is logged
//! and retried; until the first list succeeds, the controller keeps waiting and says
//! which kinds it waits for.
//!
//! This module must not know about proxies or status writing.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{mpsc, oneshot, watch};

use super::Kind;
use crate::objects::Objects;
use crate::snapshot::Catalog;
use crate::translate;

/// How long to wait after a change for more changes before translating.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// How often to say which kinds the first catalog still waits for.
const WAITING_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One watched kind and the reflector store holding its objects.
#[derive(Debug, Clone)]
pub struct Watched {
    /// The kind.
    pub kind: Kind,
    /// Its objects as the API server last said (managed fields dropped).
    pub store: Store<DynamicObject>,
}

/// The running source.
#[derive(Debug, Clone)]
pub struct KubernetesSource {
    /// The latest catalog; the first one is complete (every kind listed).
    pub catalogs: watch::Receiver<Arc<Catalog>>,
    /// The reflector stores, for the status writer (current status, resourceVersion).
    pub watched: Arc<Vec<Watched>>,
}

/// What a reflector tells the assembler.
#[derive(Debug)]
enum Signal {
    /// Kind `n` has been listed (again).
    Listed(usize),
    /// Kind `n` is not served by the API server.
    Absent(usize),
    /// An object changed.
    Changed,
}

/// Where a kind stands with respect to the first catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    Waiting,
    Listed,
    Absent,
}

/// Starts one reflector per kind of `kinds` and waits until the first complete catalog
/// is published. It waits as long as it takes (logging which kinds are missing and why):
/// serving before every kind is known would withdraw routes from running proxies.
pub async fn follow(client: kube::Client, kinds: Vec<Kind>) -> KubernetesSource {
    let (signals, mut received) = mpsc::unbounded_channel();
    let mut watched = Vec::with_capacity(kinds.len());
    for (index, kind) in kinds.into_iter().enumerate() {
        let writer = reflector::store::Writer::new(kind.resource.clone());
        watched.push(Watched {
            kind: kind.clone(),
            store: writer.as_reader(),
        });
        tokio::spawn(reflect(
            client.clone(),
            index,
            kind,
            writer,
            signals.clone(),
        ));
    }
    drop(signals);
    let watched = Arc::new(watched);
    let (publish, catalogs) = watch::channel(Arc::new(Catalog::default()));
    let (first_tx, first_rx) = oneshot::channel();
    let assembler = watched.clone();
    tokio::spawn(async move {
        let mut listing = vec![Listing::Waiting; assembler.len()];
        let mut first = Some(first_tx);
        let mut waiting_log = tokio::time::interval(WAITING_LOG_INTERVAL);
        waiting_log.tick().await;
        loop {
            tokio::select! {
                signal = received.recv() => match signal {
                    Some(signal) => {
                        if !note(&mut listing, signal) {
                            continue;
                        }
                    }
                    None => return,
                },
                _ = waiting_log.tick(), if first.is_some() => {
                    let missing: Vec<&str> = listing
                        .iter()
                        .zip(assembler.iter())
                        .filter(|(l, _)| **l == Listing::Waiting)
                        .map(|(_, w)| w.kind.resource.kind.as_str())
                        .collect();
                    tracing::warn!(kinds = ?missing, "still waiting for the first list of these kinds before serving");
                    continue;
                }
            }
            if listing.contains(&Listing::Waiting) {
                continue;
            }
            // Let a burst of events (a `kubectl apply` of many objects) settle.
            tokio::time::sleep(DEBOUNCE).await;
            while let Ok(signal) = received.try_recv() {
                note(&mut listing, signal);
            }
            let catalog = assemble(&assembler);
            tracing::info!(
                objects = catalog.objects.count(),
                rejected = catalog.objects.rejected.len(),
                "Kubernetes objects translated"
            );
            publish.send_replace(Arc::new(catalog));
            if let Some(tx) = first.take() {
                let _ = tx.send(());
            }
        }
    });
    // The assembler only ends when every reflector has, which they do not.
    let _ = first_rx.await;
    KubernetesSource { catalogs, watched }
}

/// Records `signal`; returns whether the objects may have changed.
fn note(listing: &mut [Listing], signal: Signal) -> bool {
    match signal {
        Signal::Listed(i) => {
            listing[i] = Listing::Listed;
            true
        }
        // The first 404 completes the kind; the retries that follow change nothing.
        Signal::Absent(i) => {
            let first = listing[i] == Listing::Waiting;
            if first {
                listing[i] = Listing::Absent;
            }
            first
        }
        Signal::Changed => true,
    }
}

/// Reads every store into objects and translates them.
pub fn assemble(watched: &[Watched]) -> Catalog {
    let mut objects = Objects::default();
    for w in watched {
        for object in w.store.state() {
            let Ok(mut value) = serde_json::to_value(&*object) else {
                continue;
            };
            // List items of built-in kinds carry no apiVersion/kind.
            value["apiVersion"] = w.kind.resource.api_version.clone().into();
            value["kind"] = w.kind.resource.kind.clone().into();
            objects.insert(value, "from the API server");
        }
    }
    objects.sort();
    Catalog {
        native: Default::default(),
        translation: translate::translate(&objects),
        objects: Arc::new(objects),
    }
}

/// Runs the reflector of one kind, forever, telling the assembler what happens.
async fn reflect(
    client: kube::Client,
    index: usize,
    kind: Kind,
    writer: reflector::store::Writer<DynamicObject>,
    signals: mpsc::UnboundedSender<Signal>,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &kind.resource);
    let name = kind.resource.kind.clone();
    let events = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|o| o.metadata.managed_fields = None)
        .reflect(writer);
    let mut events = std::pin::pin!(events);
    let mut absent_logged = false;
    while let Some(event) = events.next().await {
        let signal = match event {
            Ok(watcher::Event::InitDone) => {
                if absent_logged {
                    tracing::info!(kind = %name, "the kind is served now");
                    absent_logged = false;
                }
                tracing::debug!(kind = %name, "listed");
                Signal::Listed(index)
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => Signal::Changed,
            Err(e) if is_not_found(&e) => {
                if !absent_logged {
                    tracing::info!(
                        kind = %name,
                        api_version = %kind.resource.api_version,
                        "the API server does not serve this kind (CRD not installed?); treated as empty"
                    );
                    absent_logged = true;
                }
                Signal::Absent(index)
            }
            Err(e) => {
                tracing::warn!(kind = %name, error = %e, "watching failed; retrying with backoff");
                continue;
            }
        };
        if signals.send(signal).is_err() {
            return;
        }
    }
}

/// Whether a watcher error is the API server saying the resource does not exist.
fn is_not_found(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.code == 404,
        _ => false,
    }
}
