//! The folder source: a directory of config files, merged into one resource set and
//! watched for changes.
//!
//! Each `.yaml`, `.yml` or `.json` file (hidden files skipped, read in name order) holds
//! one nested `LocalConfig`, exactly as `agentmesh-proxy --config` reads it; the files'
//! binds, backends and policies are concatenated, and at most one file may set
//! `settings` or `sidecar`. The merged config is flattened with the proxy's own
//! `flatten`, so the proxy compiles over xDS exactly what it would compile from a file.
//! A folder that cannot be read or parsed is reported and the previous snapshot keeps
//! being served. Validation is the proxy's: an invalid resource reaches the proxy, which
//! rejects it (NACK) with the reason, which the ADS server logs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agentmesh_proto::config::v1::LocalConfig;
use agentmesh_proxy::config::ConfigError;
use agentmesh_proxy::config::file::{self, Resources};
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::snapshot::Snapshot;

/// How long to wait after a change for more changes before reading the folder.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Why a folder could not be turned into resources.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    /// The folder could not be listed.
    #[error("cannot read folder {path}: {reason}")]
    List {
        /// The folder.
        path: String,
        /// What the OS said.
        reason: String,
    },
    /// A file could not be read or parsed.
    #[error(transparent)]
    File(#[from] ConfigError),
    /// Two files set the same singleton.
    #[error("{second}: `{field}` is already set in {first}; set it in one file only")]
    Duplicate {
        /// The singleton field.
        field: &'static str,
        /// The file that set it first.
        first: String,
        /// The file that set it again.
        second: String,
    },
}

/// Reads every config file in `dir` and returns the merged, flat resources.
pub fn load(dir: &Path) -> Result<Resources, FolderError> {
    let mut merged = LocalConfig::default();
    let mut settings_from: Option<String> = None;
    let mut sidecar_from: Option<String> = None;
    for path in config_files(dir)? {
        let mut one = file::load(&path)?;
        let name = path.display().to_string();
        if let Some(settings) = one.settings.take() {
            if let Some(first) = &settings_from {
                return Err(FolderError::Duplicate {
                    field: "settings",
                    first: first.clone(),
                    second: name,
                });
            }
            settings_from = Some(name.clone());
            merged.settings = Some(settings);
        }
        if let Some(sidecar) = one.sidecar.take() {
            if let Some(first) = &sidecar_from {
                return Err(FolderError::Duplicate {
                    field: "sidecar",
                    first: first.clone(),
                    second: name,
                });
            }
            sidecar_from = Some(name);
            merged.sidecar = Some(sidecar);
        }
        merged.binds.append(&mut one.binds);
        merged.backends.append(&mut one.backends);
        merged.policies.append(&mut one.policies);
    }
    Ok(file::flatten(merged))
}

/// The config files of `dir`, in name order.
fn config_files(dir: &Path) -> Result<Vec<PathBuf>, FolderError> {
    let list_error = |e: std::io::Error| FolderError::List {
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(list_error)? {
        let path = entry.map_err(list_error)?.path();
        if path.is_file() && is_config_file(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// `.yaml`, `.yml` or `.json`, and not hidden (editors' swap and temporary files are).
fn is_config_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    !hidden && ["yaml", "yml", "json"].contains(&ext.to_ascii_lowercase().as_str())
}

/// Loads `dir` now, then follows it: every change that yields a different snapshot is
/// published on the returned channel. Fails only when the first load fails or the folder
/// cannot be watched.
pub fn follow(dir: PathBuf) -> Result<watch::Receiver<Arc<Snapshot>>, crate::BoxError> {
    let first = Snapshot::new(&load(&dir)?);
    tracing::info!(folder = %dir.display(), resources = first.resources.len(), "folder loaded");
    let (publish, snapshots) = watch::channel(first);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        while rx.recv().await.is_some() {
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            match load(&dir) {
                Ok(resources) => {
                    let next = Snapshot::new(&resources);
                    if *next != **publish.borrow() {
                        tracing::info!(folder = %dir.display(), resources = next.resources.len(), "folder changed");
                        publish.send_replace(next);
                    }
                }
                Err(e) => tracing::warn!(
                    folder = %dir.display(),
                    error = %e,
                    "folder change ignored; still serving the previous resources"
                ),
            }
        }
    });
    Ok(snapshots)
}
