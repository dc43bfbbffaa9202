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

use crate::objects::{ObjectRef, Objects};
use crate::snapshot::Catalog;
use crate::translate;

/// After a change, the folder is read once no further change came for this long (an
/// editor's or `kubectl cp`'s writes of one file arrive within microseconds of each
/// other; a rename over the old file, the usual way to replace it, is a single event).
const QUIET: Duration = Duration::from_millis(3);
/// … but no later than this after the first change, even if changes keep coming.
const SETTLE_MAX: Duration = Duration::from_millis(50);

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
    let (objects, native) = read(dir, &mut ParsedFiles::default())?;
    Ok(catalog(objects, native))
}

/// [`load`] for a folder that changed while `previous` was served: an object the change
/// made unreadable keeps its last good version (see [`keep_last_good`]). Files whose
/// text is the same as in `parsed` are not parsed again.
pub fn reload(
    dir: &Path,
    previous: &Catalog,
    parsed: &mut ParsedFiles,
) -> Result<Catalog, FolderError> {
    let (mut objects, native) = read(dir, parsed)?;
    if keep_last_good(&mut objects, &previous.objects) {
        objects.sort();
    }
    Ok(catalog(objects, native))
}

fn catalog(objects: Objects, native: file::Resources) -> Catalog {
    Catalog {
        native,
        translation: translate::translate(&objects),
        objects: Arc::new(objects),
    }
}

/// Keeps the last good version of each object a change made unreadable, as the API server
/// keeps an object when an invalid `kubectl apply` is refused: an object of
/// `next.rejected` that `previous` holds (and `next` does not) is carried over, and its
/// rejection is still reported, saying so. Returns whether anything was carried over.
fn keep_last_good(next: &mut Objects, previous: &Objects) -> bool {
    fn carry<T: kube::Resource + Clone>(now: &mut Vec<T>, before: &[T], r: &ObjectRef) -> bool {
        let same = |o: &T| ObjectRef::of(&r.kind, o.meta()) == *r;
        if now.iter().any(same) {
            return false;
        }
        match before.iter().find(|o| same(o)) {
            Some(o) => {
                now.push(o.clone());
                true
            }
            None => false,
        }
    }
    let mut carried = false;
    for rejected in &mut next.rejected {
        let r = &rejected.reference;
        let kept = match r.kind.as_str() {
            "GatewayClass" => carry(&mut next.gateway_classes, &previous.gateway_classes, r),
            "Gateway" => carry(&mut next.gateways, &previous.gateways, r),
            "HTTPRoute" => carry(&mut next.http_routes, &previous.http_routes, r),
            "GRPCRoute" => carry(&mut next.grpc_routes, &previous.grpc_routes, r),
            "TLSRoute" => carry(&mut next.tls_routes, &previous.tls_routes, r),
            "TCPRoute" => carry(&mut next.tcp_routes, &previous.tcp_routes, r),
            "ReferenceGrant" => carry(&mut next.reference_grants, &previous.reference_grants, r),
            "Service" => carry(&mut next.services, &previous.services, r),
            "Secret" => carry(&mut next.secrets, &previous.secrets, r),
            "Pod" => carry(&mut next.pods, &previous.pods, r),
            "Namespace" => carry(&mut next.namespaces, &previous.namespaces, r),
            "AgentBackend" => carry(&mut next.agent_backends, &previous.agent_backends, r),
            "AgentPolicy" => carry(&mut next.agent_policies, &previous.agent_policies, r),
            _ => false,
        };
        if kept {
            rejected
                .reason
                .push_str("; the version read before this change is still served");
            carried = true;
        }
    }
    carried
}

/// Reads every file of `dir`: the objects (sorted) and the merged native config.
fn read(dir: &Path, parsed: &mut ParsedFiles) -> Result<(Objects, file::Resources), FolderError> {
    let files = config_files(dir)?;
    // Forget files that are gone.
    let present: std::collections::HashSet<&PathBuf> = files.iter().collect();
    parsed.0.retain(|path, _| present.contains(path));
    let mut objects = Objects::default();
    let mut merged = LocalConfig::default();
    let mut settings_from: Option<String> = None;
    let mut sidecar_from: Option<String> = None;
    for path in files {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| {
            FolderError::File(ConfigError::Read {
                path: name.clone(),
                reason: e.to_string(),
            })
        })?;
        let documents = match parsed.0.get(&path) {
            Some((same, documents)) if *same == text => documents.clone(),
            _ => {
                let documents = documents(&text, &name)?;
                parsed.0.insert(path.clone(), (text, documents.clone()));
                documents
            }
        };
        for (index, document) in documents.into_iter().enumerate() {
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
    Ok((objects, file::flatten(merged)))
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The documents of each file as last parsed, with the text they were parsed from: after
/// a change, usually one file of many, only files whose text differs are parsed again
/// (reading is cheap; YAML parsing is most of the cost of a reload).
#[derive(Debug, Default)]
pub struct ParsedFiles(std::collections::HashMap<PathBuf, (String, Vec<serde_json::Value>)>);

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

/// Whether a watcher event can change what the folder holds: a config file created,
/// written, renamed or removed. Reads (the controller's own, too: reacting to them would
/// reload forever) and metadata changes are not, nor are hidden or temporary files (an
/// editor's swap file, the temporary file renamed over a config file: the rename is).
fn is_change(event: &notify::Event) -> bool {
    use notify::EventKind;
    use notify::event::ModifyKind;
    let kind = matches!(
        event.kind,
        EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any)
            | EventKind::Any
    );
    kind && event.paths.iter().any(|p| is_config_file(p))
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
    let mut parsed = ParsedFiles::default();
    let (objects, native) = read(&dir, &mut parsed)?;
    let first = Arc::new(catalog(objects, native));
    tracing::info!(folder = %dir.display(), objects = first.objects.count(), "folder loaded");
    log_rejected(&first);
    let (publish, snapshots) = watch::channel(first.clone());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| is_change(&e)) {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        let mut previous = first;
        while rx.recv().await.is_some() {
            let first_change = tokio::time::Instant::now();
            loop {
                match tokio::time::timeout(QUIET, rx.recv()).await {
                    Ok(Some(())) if first_change.elapsed() < SETTLE_MAX => continue,
                    Ok(None) => return,
                    _ => break,
                }
            }
            let started = std::time::Instant::now();
            match reload(&dir, &previous, &mut parsed) {
                Ok(next) => {
                    let next = Arc::new(next);
                    tracing::info!(
                        folder = %dir.display(),
                        objects = next.objects.count(),
                        took_us = started.elapsed().as_micros() as u64,
                        "folder changed"
                    );
                    log_rejected(&next);
                    previous = next.clone();
                    publish.send_replace(next);
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

/// Says which objects could not be read, and why (also in `status`).
fn log_rejected(catalog: &Catalog) {
    for rejected in &catalog.objects.rejected {
        tracing::warn!(
            object = %rejected.reference,
            origin = %rejected.origin,
            reason = %rejected.reason,
            "object rejected"
        );
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{AccessKind, CreateKind, DataChange, ModifyKind, RenameMode};
    use notify::{Event, EventKind};

    use super::*;

    fn event(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn only_writes_to_config_files_are_changes() {
        // Reading the folder (as the controller itself does on every reload) is not.
        assert!(!is_change(&event(
            EventKind::Access(AccessKind::Any),
            "/m/route.yaml"
        )));
        // The temporary file an editor writes is not; the rename over the file is.
        assert!(!is_change(&event(
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            "/m/.route.yaml.tmp"
        )));
        assert!(is_change(&event(
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            "/m/route.yaml"
        )));
        assert!(is_change(&event(
            EventKind::Create(CreateKind::File),
            "/m/new.yml"
        )));
        assert!(!is_change(&event(
            EventKind::Create(CreateKind::File),
            "/m/notes.txt"
        )));
    }
}
