//! The folder source: a directory of manifests, translated and watched for changes.
//!
//! Each `.yaml`, `.yml` or `.json` file (hidden files skipped, read in name order) holds
//! one or more YAML documents (`---`). A document with `apiVersion` and `kind` is a
//! Kubernetes object, exactly as a user would `kubectl apply` it (Gateway API kinds,
//! Services, Secrets, Pods, Namespaces; other kinds are ignored); an object that cannot
//! be read is reported in status and left out, never failing the rest. A document
//! without `apiVersion` is agentmesh's own nested config (the format of
//! `agentmesh-proxy --config`), merged across files and served to `standalone` nodes:
//! at most one file may set `settings` or `sidecar`, and validation is the proxy's (it
//! NACKs an invalid resource with the reason, which the ADS server logs).
//! A folder that cannot be read is reported and the previous catalog keeps being served.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agentmesh_proto::config::v1::LocalConfig;
use agentmesh_proxy::config::ConfigError;
use agentmesh_proxy::config::file;
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::objects::Objects;
use crate::snapshot::Catalog;
use crate::translate;

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

/// Reads every file in `dir` into a catalog: objects translated, native config merged.
pub fn load(dir: &Path) -> Result<Catalog, FolderError> {
    let mut objects = Objects::default();
    let mut merged = LocalConfig::default();
    let mut settings_from: Option<String> = None;
    let mut sidecar_from: Option<String> = None;
    for path in config_files(dir)? {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| {
            FolderError::File(ConfigError::Read {
                path: name.clone(),
                reason: e.to_string(),
            })
        })?;
        for (index, document) in documents(&text, &name)?.into_iter().enumerate() {
            let origin = format!("{}#{}", file_name(&path), index + 1);
            if document.get("apiVersion").is_some() || document.get("kind").is_some() {
                objects.insert(document, &origin);
                continue;
            }
            let mut one = native(&document, &name)?;
            file::resolve_paths(&mut one, dir);
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
                sidecar_from = Some(name.clone());
                merged.sidecar = Some(sidecar);
            }
            merged.binds.append(&mut one.binds);
            merged.backends.append(&mut one.backends);
            merged.policies.append(&mut one.policies);
        }
    }
    objects.sort();
    Ok(Catalog {
        native: file::flatten(merged),
        translation: translate::translate(&objects),
        objects: std::sync::Arc::new(objects),
    })
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The non-empty YAML documents of a file, as JSON values (JSON files are YAML too).
fn documents(text: &str, file: &str) -> Result<Vec<serde_json::Value>, FolderError> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = serde_json::Value::deserialize(document).map_err(|e| {
            FolderError::File(ConfigError::Parse {
                file: Some(format!("{file} (document {})", index + 1)),
                path: String::new(),
                reason: e.to_string(),
            })
        })?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// Reads one agentmesh-native document with the proxy's own parser (unknown fields are
/// errors naming their path).
fn native(document: &serde_json::Value, file: &str) -> Result<LocalConfig, FolderError> {
    file::parse(&document.to_string(), true).map_err(|e| match e {
        ConfigError::Parse { path, reason, .. } => FolderError::File(ConfigError::Parse {
            file: Some(file.to_owned()),
            path,
            reason,
        }),
        other => FolderError::File(other),
    })
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

/// Loads `dir` now, then follows it: every change is
/// published on the returned channel. Fails only when the first load fails or the folder
/// cannot be watched.
pub fn follow(dir: PathBuf) -> Result<watch::Receiver<Arc<Catalog>>, crate::BoxError> {
    let first = Arc::new(load(&dir)?);
    tracing::info!(folder = %dir.display(), objects = first.objects.count(), "folder loaded");
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
                Ok(next) => {
                    tracing::info!(folder = %dir.display(), objects = next.objects.count(), "folder changed");
                    publish.send_replace(Arc::new(next));
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
