//! Process wiring: load the config, open binds and the admin ports, start the sidecar's
//! outbound capture (and inbound capture when the config enables it) in sidecar mode,
//! follow file changes, drain on SIGTERM.
//!
//! `main.rs` parses the command line and calls [`run`]; everything a running proxy is
//! made of is assembled here, once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, AdminState, Readiness};
use crate::config::{self, CompileContext, ConfigError, Store};
use crate::http::upstream::{ConnectionObserver, UpstreamPool};
use crate::listen::Listeners;
use crate::listen::capture::{CaptureOptions, InboundSwitch, OutboundCapture, SoOriginalDst};
use crate::telemetry::{LogControl, Metrics};

/// Everything `run` needs, from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// The config file; unused when `xds` is set.
    pub config: PathBuf,
    /// Take the config from the controller over xDS instead of from `config`.
    pub xds: Option<config::xds::XdsOptions>,
    /// Admin API address (loopback); `None` disables it.
    pub admin_addr: Option<SocketAddr>,
    /// Metrics address; `None` disables it.
    pub metrics_addr: Option<SocketAddr>,
    /// Readiness address; `None` disables it.
    pub ready_addr: Option<SocketAddr>,
    /// How long a drain waits for in-flight requests.
    pub drain_timeout: Duration,
    /// Whether to reload the file when it changes.
    pub watch: bool,
    /// Sidecar mode: where to capture the pod's outbound traffic. `None` in standalone mode.
    pub sidecar: Option<SidecarOptions>,
}

/// Sidecar-mode options, from the command line.
#[derive(Debug, Clone)]
pub struct SidecarOptions {
    /// Outbound capture addresses (the iptables REDIRECT target).
    pub outbound_addrs: Vec<SocketAddr>,
    /// Inbound capture addresses, served when the config sets `sidecar.inbound.enabled`,
    /// or always with `inbound_capture`.
    pub inbound_addrs: Vec<SocketAddr>,
    /// The pod's iptables rules redirect inbound TCP (`--inbound-capture`): the inbound
    /// listener is open from startup, before the first config, and whatever the config's
    /// `sidecar.inbound.enabled` says; the config still decides what captured inbound
    /// connections meet (`inboundBinds`, `inboundDefault`).
    pub inbound_capture: bool,
}

/// The inbound capture port (DESIGN.md "Contracts"); captured traffic to it is a loop.
pub const INBOUND_CAPTURE_PORT: u16 = 16006;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A bind or admin port could not be opened.
    #[error("{0}")]
    Listen(String),
    /// The config file cannot be watched.
    #[error("cannot watch the config file: {0}")]
    Watch(#[from] notify::Error),
}

/// Counts upstream connections in the metrics.
struct MetricsObserver(Arc<Metrics>);

impl ConnectionObserver for MetricsObserver {
    fn opened(&self, backend: &str) -> Box<dyn Send + Sync> {
        Box::new(self.0.upstream_connection_opened(backend))
    }

    fn connect_failed(&self, backend: &str) {
        self.0.record_upstream_connect_error(backend);
    }
}

/// The shared parts needed to compile configs.
pub fn compile_context(metrics: &Arc<Metrics>) -> CompileContext {
    CompileContext {
        upstreams: Arc::new(UpstreamPool::new(Some(connection_observer(metrics)))),
        issued_ca: Arc::default(),
    }
}

/// Counts upstream connections of a client in `metrics`.
pub fn connection_observer(metrics: &Arc<Metrics>) -> Arc<dyn ConnectionObserver> {
    Arc::new(MetricsObserver(metrics.clone()))
}

/// Runs the proxy until SIGTERM or SIGINT, then drains. Returns once drained.
pub async fn run(opts: Options, logs: LogControl) -> Result<(), StartError> {
    let metrics = Metrics::new();
    let ctx = compile_context(&metrics);
    let config = match &opts.xds {
        // Nothing to serve until the controller sends the first complete config; a sidecar
        // refuses what it captures meanwhile rather than let it through ungoverned.
        Some(_) => config::compile(waiting_for_xds(opts.sidecar.is_some()), &ctx)?,
        None => {
            let config = config::load_file(&opts.config, &ctx)?;
            metrics.record_config_reload("file", true);
            config
        }
    };
    let store = Store::new(config);
    let listeners = Listeners::new(store.clone(), metrics.clone());
    if let Some(e) = listeners.reconcile(&store.load()).await.into_iter().next() {
        return Err(StartError::Listen(e.to_string()));
    }
    listeners.follow();
    let _capture = match &opts.sidecar {
        Some(sidecar) => Some(start_capture(&opts, sidecar, &store, &metrics, &listeners).await?),
        None => None,
    };
    // Open while the config enables inbound capture, following reloads; with
    // `--inbound-capture`, open from here on. Either way before the readiness port: a
    // proxy that reports ready serves what iptables redirects.
    let _inbound = match &opts.sidecar {
        Some(sidecar) => Some(start_inbound(&opts, sidecar, &store, &metrics, &listeners).await?),
        None => None,
    };

    let readiness = Readiness::new();
    let (stop_admin, admin_stopped) = watch::channel(false);
    if let Some(addr) = opts.ready_addr {
        let l = bind_admin(addr, "--ready-addr").await?;
        tokio::spawn(admin::serve_ready(
            l,
            readiness.clone(),
            admin_stopped.clone(),
        ));
    }
    if let Some(addr) = opts.metrics_addr {
        let l = bind_admin(addr, "--metrics-addr").await?;
        tokio::spawn(admin::serve_metrics(
            l,
            metrics.clone(),
            admin_stopped.clone(),
        ));
    }
    if let Some(addr) = opts.admin_addr {
        let l = bind_admin(addr, "--admin-addr").await?;
        let dump_store = store.clone();
        let state = AdminState {
            config_dump: Arc::new(move || crate::admin::dump::config_dump(&dump_store.load())),
            logs,
            readiness: readiness.clone(),
        };
        tokio::spawn(admin::serve_admin(l, state, admin_stopped.clone()));
    }
    let _xds = opts.xds.clone().map(|options| {
        config::xds::XdsClient {
            options,
            store: store.clone(),
            ctx: ctx.clone(),
            metrics: metrics.clone(),
            readiness: readiness.clone(),
        }
        .spawn()
    });
    let _watch = if opts.watch && opts.xds.is_none() {
        Some(config::watch::spawn(
            opts.config.clone(),
            store.clone(),
            ctx,
            metrics.clone(),
        )?)
    } else {
        None
    };
    match &opts.xds {
        // Ready once the first update is applied (`XdsClient`).
        Some(xds) => {
            tracing::info!(controller = %xds.address, "agentmesh-proxy started; waiting for the first config over xDS")
        }
        None => {
            readiness.set_ready();
            tracing::info!(config = %opts.config.display(), "agentmesh-proxy ready");
        }
    }

    shutdown_signal().await;
    tracing::info!(deadline = ?opts.drain_timeout, "draining: no new connections, finishing in-flight requests");
    readiness.set_draining();
    let left = listeners.drain(opts.drain_timeout).await;
    if left > 0 {
        tracing::warn!(
            connections = left,
            "drain deadline passed; closing remaining connections"
        );
    } else {
        tracing::info!("drained");
    }
    let _ = stop_admin.send(true);
    Ok(())
}

/// The config served until the controller's first one arrives: nothing, and in sidecar
/// mode outbound and inbound defaults of DENY, so captured traffic either way is refused
/// (HTTP 403, TCP reset; counted and logged) until the pod's real policy is known. The
/// inbound one matters with `--inbound-capture`, whose listener is open before then.
fn waiting_for_xds(sidecar: bool) -> config::file::Resources {
    use agentmesh_proto::config::v1::{OutboundAction, SidecarSettings};
    config::file::Resources {
        sidecar: sidecar.then(|| SidecarSettings {
            outbound_default: OutboundAction::Deny as i32,
            inbound_default: OutboundAction::Deny as i32,
            ..SidecarSettings::default()
        }),
        ..config::file::Resources::default()
    }
}

/// Starts the sidecar's outbound capture listener.
async fn start_capture(
    opts: &Options,
    sidecar: &SidecarOptions,
    store: &Arc<Store>,
    metrics: &Arc<Metrics>,
    listeners: &Arc<Listeners>,
) -> Result<OutboundCapture, StartError> {
    let own_ports = [opts.admin_addr, opts.metrics_addr, opts.ready_addr]
        .into_iter()
        .flatten()
        .map(|a| a.port())
        .chain([INBOUND_CAPTURE_PORT])
        .collect();
    let capture = CaptureOptions {
        addrs: sidecar.outbound_addrs.clone(),
        own_ports,
        orig_dst: Arc::new(SoOriginalDst),
        observer: Some(connection_observer(metrics)),
    };
    OutboundCapture::start(capture, store.clone(), metrics.clone(), listeners.clone())
        .await
        .map_err(|e| StartError::Listen(e.to_string()))
}

/// Starts following `sidecar.inbound.enabled`: the inbound capture listener is open
/// while the config enables it, or from now on with `--inbound-capture`. Its loop guard knows the outbound capture ports too: an
/// inbound connection to one of them would come back in.
async fn start_inbound(
    opts: &Options,
    sidecar: &SidecarOptions,
    store: &Arc<Store>,
    metrics: &Arc<Metrics>,
    listeners: &Arc<Listeners>,
) -> Result<InboundSwitch, StartError> {
    let own_ports = [opts.admin_addr, opts.metrics_addr, opts.ready_addr]
        .into_iter()
        .flatten()
        .chain(sidecar.outbound_addrs.iter().copied())
        .map(|a| a.port())
        .collect();
    let capture = CaptureOptions {
        addrs: sidecar.inbound_addrs.clone(),
        own_ports,
        orig_dst: Arc::new(SoOriginalDst),
        observer: Some(connection_observer(metrics)),
    };
    let started = if sidecar.inbound_capture {
        tracing::info!(
            "inbound capture on (--inbound-capture): the inbound listener stays open whatever sidecar.inbound.enabled says"
        );
        InboundSwitch::start_forced(capture, store.clone(), metrics.clone(), listeners.clone())
            .await
    } else {
        InboundSwitch::start(capture, store.clone(), metrics.clone(), listeners.clone()).await
    };
    started.map_err(|e| StartError::Listen(e.to_string()))
}

async fn bind_admin(addr: SocketAddr, flag: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| StartError::Listen(format!("{flag} {addr}: cannot listen: {e}")))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the only way out is being killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
