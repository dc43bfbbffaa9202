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
//!
//! A change costs in proportion to what changed: only the files the watcher named are
//! read again, only those whose text differs are parsed again, and every other file's
//! objects are taken as parsed before; the whole set is then translated (translation is
//! a pure function of all objects). Each reload logs how long each stage took.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentmesh_proto::config::v1::LocalConfig;
use agentmesh_proxy::config::ConfigError;
use agentmesh_proxy::config::file;
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::objects::{ObjectRef, Objects};
use crate::snapshot::Catalog;
use crate::translate;

/// After a change, the folder is read again once the changed files are whole: at once
/// when each was renamed into place (how editors and `kubectl cp` replace a file, a
/// single event) or closed after writing; otherwise (a write still going on, a file
/// removed or renamed away) once no further change came for this long (a writer's
/// writes of one file arrive within microseconds of each other).
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
    let mut parsed = ParsedFiles::default();
    parsed.refresh(dir, &Dirty::All)?;
    let (objects, native) = parsed.assemble(dir)?;
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

/// The folder as last read: each config file's text and what it was parsed into, by
/// file name (so in name order). After a change, usually to one file of many, only the
/// files the watcher named are read again, and only those whose text differs are parsed
/// again: parsing (YAML, then typed objects) is most of the cost of a reload.
#[derive(Debug, Default)]
pub struct ParsedFiles {
    files: BTreeMap<OsString, ParsedFile>,
}

/// One config file as last read.
#[derive(Debug)]
struct ParsedFile {
    /// Its text.
    text: String,
    /// The objects of its documents, in document order.
    objects: Objects,
    /// Its agentmesh-native documents (paths resolved against the folder).
    native: Vec<LocalConfig>,
}

/// Which files a reload must look at again.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dirty {
    /// All of them (the first read, or the watcher lost track).
    All,
    /// These files of the folder (by name), each changed, created or removed.
    Files(BTreeSet<OsString>),
}

/// What [`ParsedFiles::refresh`] did, for the log.
#[derive(Debug, Default, Clone, Copy)]
struct Refreshed {
    /// Files read.
    read: usize,
    /// Files parsed (their text had changed).
    parsed: usize,
}

impl ParsedFiles {
    /// Reads the `dirty` files of `dir` again: a file gone is forgotten, a file whose
    /// text changed is parsed again. On error (a file that cannot be read or parsed) the
    /// files refreshed before it keep their new state; call again with [`Dirty::All`]
    /// to be sure of the rest.
    fn refresh(&mut self, dir: &Path, dirty: &Dirty) -> Result<Refreshed, FolderError> {
        let mut done = Refreshed::default();
        match dirty {
            Dirty::All => {
                let names = config_files(dir)?;
                self.files.retain(|name, _| names.contains(name));
                for name in &names {
                    self.refresh_file(dir, name, &mut done)?;
                }
            }
            Dirty::Files(names) => {
                for name in names {
                    if dir.join(name).is_file() {
                        self.refresh_file(dir, name, &mut done)?;
                    } else {
                        self.files.remove(name);
                    }
                }
            }
        }
        Ok(done)
    }

    fn refresh_file(
        &mut self,
        dir: &Path,
        name: &OsString,
        done: &mut Refreshed,
    ) -> Result<(), FolderError> {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            FolderError::File(ConfigError::Read {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        })?;
        done.read += 1;
        if self.files.get(name).is_some_and(|f| f.text == text) {
            return Ok(());
        }
        let parsed = parse_file(dir, &path, text)?;
        done.parsed += 1;
        self.files.insert(name.clone(), parsed);
        Ok(())
    }

    /// Every file's objects (sorted) and the merged native config.
    fn assemble(&self, dir: &Path) -> Result<(Objects, file::Resources), FolderError> {
        let mut objects = Objects::default();
        let mut merged = LocalConfig::default();
        let mut settings_from: Option<String> = None;
        let mut sidecar_from: Option<String> = None;
        for (name, parsed) in &self.files {
            objects.append(&parsed.objects);
            let path = dir.join(name).display().to_string();
            for one in &parsed.native {
                let mut one = one.clone();
                if let Some(settings) = one.settings.take() {
                    if let Some(first) = &settings_from {
                        return Err(FolderError::Duplicate {
                            field: "settings",
                            first: first.clone(),
                            second: path,
                        });
                    }
                    settings_from = Some(path.clone());
                    merged.settings = Some(settings);
                }
                if let Some(sidecar) = one.sidecar.take() {
                    if let Some(first) = &sidecar_from {
                        return Err(FolderError::Duplicate {
                            field: "sidecar",
                            first: first.clone(),
                            second: path,
                        });
                    }
                    sidecar_from = Some(path.clone());
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
}

/// Parses one file's text: each document with `apiVersion` or `kind` into an object
/// (or a rejection), the others with the proxy's parser.
fn parse_file(dir: &Path, path: &Path, text: String) -> Result<ParsedFile, FolderError> {
    let name = path.display().to_string();
    let mut objects = Objects::default();
    let mut native_documents = Vec::new();
    for (index, document) in documents(&text, &name)?.into_iter().enumerate() {
        if document.get("apiVersion").is_some() || document.get("kind").is_some() {
            let origin = format!("{}#{}", file_name(path), index + 1);
            objects.insert(document, &origin);
            continue;
        }
        let mut one = native(&document, &name)?;
        file::resolve_paths(&mut one, dir);
        native_documents.push(one);
    }
    Ok(ParsedFile {
        text,
        objects,
        native: native_documents,
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

/// The names of the config files of `dir`.
fn config_files(dir: &Path) -> Result<BTreeSet<OsString>, FolderError> {
    let list_error = |e: std::io::Error| FolderError::List {
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    let mut files = BTreeSet::new();
    for entry in std::fs::read_dir(dir).map_err(list_error)? {
        let path = entry.map_err(list_error)?.path();
        if path.is_file()
            && is_config_file(&path)
            && let Some(name) = path.file_name()
        {
            files.insert(name.to_owned());
        }
    }
    Ok(files)
}

/// What the watcher tells the folder task.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Notice {
    /// A config file of the folder (by name) changed; `complete` when the change leaves
    /// it whole (renamed into place, closed after writing, removed) rather than being
    /// written.
    File { name: OsString, complete: bool },
    /// The watcher lost track (its queue overflowed, or it failed): read everything.
    Rescan,
}

/// What a watcher event means for the folder `dir` (nothing, for most events).
fn notices(dir: &Path, event: &notify::Event) -> Vec<Notice> {
    if event.need_rescan() {
        return vec![Notice::Rescan];
    }
    if !is_change(event) {
        return Vec::new();
    }
    let last = event.paths.len().saturating_sub(1);
    event
        .paths
        .iter()
        .enumerate()
        .filter(|(_, p)| is_config_file(p))
        .map(|(index, p)| match (p.parent(), p.file_name()) {
            (Some(parent), Some(name)) if parent == dir => Notice::File {
                name: name.to_owned(),
                complete: leaves_whole(&event.kind, index == last),
            },
            // Not a path of this folder as we named it: do not guess which file it is.
            _ => Notice::Rescan,
        })
        .collect()
}

/// Whether a watcher event can change what the folder holds: a config file created,
/// written, renamed or removed. Reads (the controller's own, too: reacting to them would
/// reload forever) and metadata changes are not, nor are hidden or temporary files (an
/// editor's swap file, the temporary file renamed over a config file: the rename is).
fn is_change(event: &notify::Event) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    let kind = matches!(
        event.kind,
        EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Any
    );
    kind && event.paths.iter().any(|p| is_config_file(p))
}

/// Whether an event of `kind` leaves its file (the event's last path when `last`) whole,
/// so that no further event is worth waiting for: renamed into place (how editors and
/// `kubectl cp` replace a file) or closed after writing. A creation or a write is
/// followed by more; so may a removal or a rename away (an editor that renames the old
/// file to a backup, then writes the new one), which must not be served as the file
/// being gone.
fn leaves_whole(kind: &notify::EventKind, last: bool) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
    match kind {
        EventKind::Modify(ModifyKind::Name(RenameMode::To))
        | EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        // `[from, to]`: the destination is whole.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => last,
        _ => false,
    }
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

/// The changes gathered for one reload.
#[derive(Debug, Default)]
struct Pending {
    /// Changed files; `true` once the latest event left the file whole.
    files: BTreeMap<OsString, bool>,
    /// Whether everything must be read.
    rescan: bool,
}

impl Pending {
    fn note(&mut self, notice: Notice) {
        match notice {
            Notice::File { name, complete } => {
                self.files.insert(name, complete);
            }
            Notice::Rescan => self.rescan = true,
        }
    }

    /// Whether every changed file is whole, so the reload need not wait for more events.
    fn ready(&self) -> bool {
        !self.rescan && self.files.values().all(|complete| *complete)
    }

    fn into_dirty(self) -> Dirty {
        if self.rescan {
            Dirty::All
        } else {
            Dirty::Files(self.files.into_keys().collect())
        }
    }
}

/// Loads `dir` now, then follows it: every change is
/// published on the returned channel. Fails only when the first load fails or the folder
/// cannot be watched.
pub fn follow(dir: PathBuf) -> Result<watch::Receiver<Arc<Catalog>>, crate::BoxError> {
    let mut parsed = ParsedFiles::default();
    parsed.refresh(&dir, &Dirty::All)?;
    let (objects, native) = parsed.assemble(&dir)?;
    let first = Arc::new(catalog(objects, native));
    tracing::info!(folder = %dir.display(), objects = first.objects.count(), "folder loaded");
    log_rejected(&first);
    let (publish, snapshots) = watch::channel(first.clone());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watched = dir.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let notices = match event {
            Ok(event) => notices(&watched, &event),
            Err(_) => vec![Notice::Rescan],
        };
        for notice in notices {
            let _ = tx.send(notice);
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        let mut previous = first;
        // After a failed reload everything is read again, so that a file still broken
        // keeps being reported (and a file fixed meanwhile is seen).
        let mut read_all = false;
        while let Some(notice) = rx.recv().await {
            let first_change = Instant::now();
            let mut pending = Pending::default();
            pending.note(notice);
            loop {
                while let Ok(notice) = rx.try_recv() {
                    pending.note(notice);
                }
                if pending.ready() || first_change.elapsed() >= SETTLE_MAX {
                    break;
                }
                match tokio::time::timeout(QUIET, rx.recv()).await {
                    Ok(Some(notice)) => pending.note(notice),
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let dirty = if std::mem::take(&mut read_all) {
                Dirty::All
            } else {
                pending.into_dirty()
            };
            match reload(&dir, &dirty, &previous, &mut parsed) {
                Ok((next, timings)) => {
                    let next = Arc::new(next);
                    tracing::info!(
                        folder = %dir.display(),
                        objects = next.objects.count(),
                        files_read = timings.refreshed.read,
                        files_parsed = timings.refreshed.parsed,
                        wait_us = micros(first_change.elapsed().saturating_sub(timings.total)),
                        read_us = micros(timings.read),
                        assemble_us = micros(timings.assemble),
                        translate_us = micros(timings.translate),
                        took_us = micros(timings.total),
                        "folder changed"
                    );
                    log_rejected(&next);
                    previous = next.clone();
                    let retired = publish.send_replace(next);
                    retire(retired);
                }
                Err(e) => {
                    read_all = true;
                    tracing::warn!(
                        folder = %dir.display(),
                        error = %e,
                        "folder change ignored; still serving the previous resources"
                    );
                }
            }
        }
    });
    Ok(snapshots)
}

/// How long a replaced catalog is kept before it is freed.
const RETIRE_AFTER: Duration = Duration::from_millis(100);

/// Frees a replaced catalog a little later: freeing thousands of objects takes about as
/// long as translating them, and the proxies are waiting for the new catalog meanwhile.
fn retire(catalog: Arc<Catalog>) {
    tokio::spawn(async move {
        tokio::time::sleep(RETIRE_AFTER).await;
        drop(catalog);
    });
}

/// How long each stage of a reload took.
#[derive(Debug, Clone, Copy)]
struct ReloadTimings {
    refreshed: Refreshed,
    /// Reading (and parsing) the changed files.
    read: Duration,
    /// Putting every file's objects together.
    assemble: Duration,
    /// Translating them.
    translate: Duration,
    /// All of it.
    total: Duration,
}

/// The next catalog after a change to the `dirty` files of `dir`, while `previous` was
/// served: an object the change made unreadable keeps its last good version (see
/// [`keep_last_good`]).
fn reload(
    dir: &Path,
    dirty: &Dirty,
    previous: &Catalog,
    parsed: &mut ParsedFiles,
) -> Result<(Catalog, ReloadTimings), FolderError> {
    let started = Instant::now();
    let refreshed = parsed.refresh(dir, dirty)?;
    let read = started.elapsed();
    let (mut objects, native) = parsed.assemble(dir)?;
    if keep_last_good(&mut objects, &previous.objects) {
        objects.sort();
    }
    let assembled = started.elapsed();
    let next = catalog(objects, native);
    let total = started.elapsed();
    Ok((
        next,
        ReloadTimings {
            refreshed,
            read,
            assemble: assembled - read,
            translate: total - assembled,
            total,
        },
    ))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
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
    use notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, Flag, ModifyKind, RemoveKind, RenameMode,
    };
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

    #[test]
    fn a_file_renamed_into_place_or_closed_is_reloaded_without_waiting() {
        let dir = Path::new("/m");
        let file = |name: &str, complete| Notice::File {
            name: name.into(),
            complete,
        };
        // The rename over the file, as editors and `kubectl cp` do it (the hidden
        // temporary name is not a config file).
        let rename = Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::Both)))
            .add_path(PathBuf::from("/m/.route.yaml.tmp"))
            .add_path(PathBuf::from("/m/route.yaml"));
        assert_eq!(notices(dir, &rename), vec![file("route.yaml", true)]);
        let mut pending = Pending::default();
        for notice in notices(dir, &rename) {
            pending.note(notice);
        }
        assert!(pending.ready());
        // A write in place waits for the close (or for quiet).
        let mut pending = Pending::default();
        let write = event(
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            "/m/a.yaml",
        );
        for notice in notices(dir, &write) {
            pending.note(notice);
        }
        assert!(!pending.ready());
        let closed = event(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            "/m/a.yaml",
        );
        for notice in notices(dir, &closed) {
            pending.note(notice);
        }
        assert!(pending.ready());
        // A file gone may come back at once (an editor's backup rename, then the new
        // file): that waits too.
        let removed = event(EventKind::Remove(RemoveKind::File), "/m/b.yaml");
        for notice in notices(dir, &removed) {
            pending.note(notice);
        }
        assert!(!pending.ready());
        assert_eq!(
            pending.into_dirty(),
            Dirty::Files(["a.yaml".into(), "b.yaml".into()].into())
        );
        // Closing a file only read is no change.
        let read = event(
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            "/m/a.yaml",
        );
        assert!(notices(dir, &read).is_empty());
    }

    #[test]
    fn a_lost_watcher_reads_everything_again() {
        let dir = Path::new("/m");
        let overflow = Event::new(EventKind::Other).set_flag(Flag::Rescan);
        assert_eq!(notices(dir, &overflow), vec![Notice::Rescan]);
        // A path that is not in the folder as named is not guessed at.
        let elsewhere = event(EventKind::Create(CreateKind::File), "/other/route.yaml");
        assert_eq!(notices(dir, &elsewhere), vec![Notice::Rescan]);
        let mut pending = Pending::default();
        pending.note(Notice::File {
            name: "a.yaml".into(),
            complete: true,
        });
        pending.note(Notice::Rescan);
        assert!(!pending.ready());
        assert_eq!(pending.into_dirty(), Dirty::All);
    }

    /// Copies the files of `from` into `to`, returning their names.
    fn copy_files(from: &Path, to: &Path) -> BTreeSet<OsString> {
        let mut names = BTreeSet::new();
        for entry in std::fs::read_dir(from).expect("golden input") {
            let path = entry.expect("entry").path();
            let name = path.file_name().expect("a file").to_owned();
            std::fs::copy(&path, to.join(&name)).expect("copy");
            names.insert(name);
        }
        names
    }

    fn translated(dir: &Path, parsed: &ParsedFiles) -> serde_json::Value {
        let (objects, native) = parsed.assemble(dir).expect("assembles");
        catalog(objects, native).to_json()
    }

    #[test]
    fn reading_only_the_changed_files_gives_what_reading_everything_gives() {
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        let mut scenarios = 0;
        for scenario in std::fs::read_dir(&golden).expect("goldens") {
            let input = scenario.expect("scenario").path().join("input");
            let full = load(&input).expect("loads").to_json();
            // The scenario's files arrive one change at a time in an empty folder.
            let dir = tempfile::tempdir().expect("tempdir");
            let mut parsed = ParsedFiles::default();
            parsed
                .refresh(dir.path(), &Dirty::All)
                .expect("empty folder");
            let names = copy_files(&input, dir.path());
            let refreshed = parsed
                .refresh(dir.path(), &Dirty::Files(names.clone()))
                .expect("refreshes");
            let configs = names
                .iter()
                .filter(|n| is_config_file(Path::new(n)))
                .count();
            assert_eq!((refreshed.read, refreshed.parsed), (configs, configs));
            assert_eq!(translated(dir.path(), &parsed), full, "{}", input.display());
            // Unchanged text is read, not parsed; a removed file is forgotten.
            let first = names.iter().next().expect("a file");
            std::fs::remove_file(dir.path().join(first)).expect("remove");
            let refreshed = parsed
                .refresh(dir.path(), &Dirty::Files(names.clone()))
                .expect("refreshes");
            assert_eq!(refreshed.parsed, 0);
            let after = load(dir.path()).expect("loads").to_json();
            assert_eq!(
                translated(dir.path(), &parsed),
                after,
                "{}",
                input.display()
            );
            scenarios += 1;
        }
        assert!(scenarios >= 15);
    }
}
