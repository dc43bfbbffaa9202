//! The running configuration, swapped atomically.
//!
//! Readers take an `Arc<Config>` snapshot per request, so a request in flight keeps the
//! config it started with while a reload installs a new one. Subscribers (the bind
//! manager) are told when the config changes.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::Config;

/// Holds the current config.
#[derive(Debug)]
pub struct Store {
    current: ArcSwap<Config>,
    changes: watch::Sender<Arc<Config>>,
}

impl Store {
    /// Creates a store serving `config`.
    pub fn new(config: Config) -> Arc<Self> {
        let config = Arc::new(config);
        let (changes, _) = watch::channel(config.clone());
        Arc::new(Store {
            current: ArcSwap::new(config),
            changes,
        })
    }

    /// The current config; cheap, lock-free.
    pub fn load(&self) -> Arc<Config> {
        self.current.load_full()
    }

    /// Installs a new config; requests already running keep their snapshot.
    pub fn replace(&self, config: Config) {
        let config = Arc::new(config);
        self.current.store(config.clone());
        self.changes.send_replace(config);
    }

    /// Notified with every new config.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.changes.subscribe()
    }
}
