//! Hot reload of the local config file.
//!
//! The file's directory is watched (so editors that write a new file and rename it over
//! the old one are seen), changes are debounced, and the file is reloaded. A valid config
//! replaces the running one atomically; an invalid one is rejected with the reason logged
//! and counted, and the running config keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{CompileContext, Config, ConfigError, FieldError, Store, load_file};
use crate::telemetry::metrics::Metrics;

/// How long to wait after a change for more changes before reloading.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Reloads `path` into `store` whenever it changes, until the process ends. Returns an
/// error only when the watch cannot be set up.
pub fn spawn(
    path: PathBuf,
    store: Arc<Store>,
    ctx: CompileContext,
    metrics: Arc<Metrics>,
) -> Result<tokio::task::JoinHandle<()>, notify::Error> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let file_name = path.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && may_change_config(&event, file_name.as_deref())
        {
            let _ = tx.send(());
        }
    })?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        let mut last = std::fs::read(&path).ok();
        while rx.recv().await.is_some() {
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            let now = std::fs::read(&path).ok();
            if now.is_none() || now == last {
                continue;
            }
            last = now;
            reload(&path, &store, &ctx, &metrics);
        }
    }))
}

/// Whether a change in the watched directory may have changed what the config path
/// reads: any change to the file itself, or an entry of the directory created or
/// renamed. The latter is how Kubernetes updates a mounted ConfigMap: `config.yaml` is a
/// link through `..data`, and an update only swaps `..data`. Writes to other files
/// (a log file next to the config, say) are ignored; a reload whose content did not
/// change is skipped by the caller anyway.
fn may_change_config(event: &notify::Event, file_name: Option<&std::ffi::OsStr>) -> bool {
    use notify::EventKind;
    use notify::event::ModifyKind;
    let names_file = event
        .paths
        .iter()
        .any(|p| p.file_name().is_some() && p.file_name() == file_name);
    match event.kind {
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_)) => true,
        EventKind::Modify(_) | EventKind::Remove(_) => names_file,
        _ => false,
    }
}

/// Rejects a config that adds a bind on an address nobody in this process holds and that
/// cannot be listened on (a port taken by another process), so the change is refused as
/// a whole instead of being applied without that bind.
pub(super) fn new_binds_can_listen(old: &Config, new: Config) -> Result<Config, ConfigError> {
    let held: std::collections::HashSet<_> = old
        .binds
        .iter()
        .filter(|b| !old.sidecar.is_capture_bind(&b.key))
        .map(|b| b.addr)
        .collect();
    let errors: Vec<FieldError> = new
        .binds
        .iter()
        .filter(|b| !new.sidecar.is_capture_bind(&b.key) && !held.contains(&b.addr))
        .filter_map(|b| {
            crate::listen::probe_bind(b.addr).err().map(|e| FieldError {
                resource: format!("bind {:?}", b.key),
                field: "port".into(),
                reason: format!("cannot listen on {}: {e}", b.addr),
            })
        })
        .collect();
    if errors.is_empty() {
        Ok(new)
    } else {
        Err(ConfigError::Invalid(errors))
    }
}

/// Loads the file once and installs it if valid. Returns whether it was applied.
pub fn reload(path: &Path, store: &Store, ctx: &CompileContext, metrics: &Metrics) -> bool {
    match load_file(path, ctx).and_then(|config| new_binds_can_listen(&store.load(), config)) {
        Ok(config) => {
            install(store, ctx, config);
            metrics.record_config_reload("file", true);
            tracing::info!(path = %path.display(), "config reloaded");
            true
        }
        Err(e) => {
            metrics.record_config_reload("file", false);
            tracing::warn!(path = %path.display(), error = %e, "config change rejected; still serving the previous config");
            false
        }
    }
}

/// Installs a validated config: the clients of backends that are gone free their pooled
/// connections (requests still running on the old config hold their own client), then
/// the store swaps to the new config.
pub(super) fn install(store: &Store, ctx: &CompileContext, config: Config) {
    let keep: std::collections::HashSet<String> = config
        .resources
        .backends
        .iter()
        .map(|b| b.key.clone())
        .collect();
    ctx.upstreams.retain(|name| keep.contains(name));
    store.replace(config);
}
