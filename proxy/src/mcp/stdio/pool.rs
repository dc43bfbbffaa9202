//! The processes of one backend's stdio targets, by target and session key, and the
//! reaper that stops idle per-session processes and forgets exited ones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::process::StdioProcess;

type ProcessKey = (Arc<str>, Option<String>);

/// The processes of one backend's stdio targets, kept across config reloads. A
/// background task (started with the first process) kills per-session processes idle
/// for longer than the session idle timeout, and forgets exited ones.
#[derive(Debug)]
pub struct StdioPool {
    processes: Mutex<HashMap<ProcessKey, Arc<StdioProcess>>>,
    pub(super) starting: tokio::sync::Mutex<()>,
    idle_ms: AtomicU64,
    reaper_started: AtomicBool,
}

impl StdioPool {
    /// An empty pool; per-session processes idle for `idle` are killed.
    pub fn new(idle: Duration) -> StdioPool {
        StdioPool {
            processes: Mutex::default(),
            starting: tokio::sync::Mutex::default(),
            idle_ms: AtomicU64::new(idle.as_millis() as u64),
            reaper_started: AtomicBool::new(false),
        }
    }

    /// Changes the idle timeout (a config reload).
    pub fn set_idle_timeout(&self, idle: Duration) {
        self.idle_ms
            .store(idle.as_millis() as u64, Ordering::Relaxed);
    }

    /// Processes currently running.
    pub fn running(&self) -> usize {
        self.lock().values().filter(|p| p.is_running()).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ProcessKey, Arc<StdioProcess>>> {
        self.processes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn get(&self, key: &ProcessKey) -> Option<Arc<StdioProcess>> {
        self.lock().get(key).cloned()
    }

    pub(super) fn remove(&self, key: &ProcessKey) -> Option<Arc<StdioProcess>> {
        self.lock().remove(key)
    }

    pub(super) fn insert(
        self: &Arc<Self>,
        key: ProcessKey,
        process: Arc<StdioProcess>,
    ) -> Option<Arc<StdioProcess>> {
        let old = self.lock().insert(key, process);
        if !self.reaper_started.swap(true, Ordering::Relaxed) {
            tokio::spawn(reap_forever(Arc::downgrade(self)));
        }
        old
    }

    /// Takes out the processes to kill: idle per-session ones and exited ones.
    fn doomed(&self) -> Vec<Arc<StdioProcess>> {
        let idle = Duration::from_millis(self.idle_ms.load(Ordering::Relaxed));
        let mut doomed = Vec::new();
        self.lock().retain(|(target, key), p| {
            let idle_session = key.is_some() && p.idle_for() > idle;
            if idle_session {
                tracing::debug!(target = %target, "stdio process idle for the session timeout; stopping it");
            }
            let keep = p.is_running() && !idle_session;
            if !keep {
                doomed.push(p.clone());
            }
            keep
        });
        doomed
    }

    fn tick(&self) -> Duration {
        (Duration::from_millis(self.idle_ms.load(Ordering::Relaxed)) / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(30))
    }
}

async fn reap_forever(pool: std::sync::Weak<StdioPool>) {
    loop {
        let Some(p) = pool.upgrade() else {
            return;
        };
        let tick = p.tick();
        let doomed = p.doomed();
        drop(p);
        for process in doomed {
            process.kill().await;
        }
        tokio::time::sleep(tick).await;
    }
}
