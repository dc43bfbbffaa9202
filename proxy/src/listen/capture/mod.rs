//! Sidecar transparent capture: the listeners that iptables' REDIRECT sends the pod's
//! outbound TCP connections to (`127.0.0.1:16001` and `[::1]:16001`) and, with inbound
//! capture on, the connections to the pod's own ports (`16006`).
//!
//! For each outbound connection: recover the original destination ([`orig_dst`]), refuse
//! it when it is the proxy itself (loop), detect the protocol from the first bytes
//! ([`sniff`]), then
//! - HTTP/1.x and h2c: serve it with [`http::CapturedHttp`] (the ordinary pipeline when an
//!   outbound bind serves the destination, else the egress rules and outbound default;
//!   TLS originated when the rule says so);
//! - TLS: judge the SNI by the egress rules and outbound default, then pass the bytes
//!   through untouched ([`opaque`]), reset, or, under `INTERCEPT`, terminate it with a
//!   leaf from the mesh CA ([`mesh_ca`]) and serve the HTTP inside as above;
//! - anything else, and server-speaks-first protocols: judge the destination the same
//!   way, then forward byte for byte or reset.
//!
//! Inbound connections get the same loop guard and sniffing, then go to the app on
//! loopback at their original port: HTTP through the inbound binds, anything else byte
//! for byte; what no inbound bind serves follows the inbound default (allow, or a 403 /
//! TCP reset).
//!
//! This module knows nothing about routes or policies beyond handing HTTP to the
//! pipeline; it looks inside TLS only when a rule intercepts it.

pub mod client_hello;
pub mod http;
pub mod mesh_ca;
pub mod opaque;
pub mod orig_dst;
pub mod sniff;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use self::http::{CapturedHttp, PassthroughBackends, Side, Target};
pub use self::orig_dst::{LoopGuard, OrigDstSource, SoOriginalDst};
use self::sniff::{Detected, Prefixed};
use super::Listeners;
use crate::config::Store;
use crate::config::sidecar::{CaBundle, EgressTls, OutboundAction};
use crate::http::service::ConnContext;
use crate::http::upstream::ConnectionObserver;
use crate::telemetry::metrics::{ConnectionErrorReason, Metrics};
use crate::telemetry::sidecar::{CapturedProtocol, TlsMode};

/// The bind label under which captured outbound connections are counted, and the bind
/// key of their connection context until a request picks an outbound bind.
pub const CAPTURE_BIND: &str = "sidecar-outbound";
/// The same for captured inbound connections.
pub const INBOUND_CAPTURE_BIND: &str = "sidecar-inbound";
/// How long the app may take to finish a TLS handshake with an intercepting proxy.
const INTERCEPT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a capture listener is set up.
#[derive(Clone)]
pub struct CaptureOptions {
    /// Addresses to listen on (the REDIRECT target), e.g. `127.0.0.1:16001`, `[::1]:16001`
    /// for outbound, `0.0.0.0:16006`, `[::]:16006` for inbound.
    pub addrs: Vec<SocketAddr>,
    /// The proxy's other ports (inbound capture, admin, metrics, readiness); a captured
    /// connection to one of them on a local address is a loop. The capture ports
    /// themselves are added.
    pub own_ports: Vec<u16>,
    /// Where original destinations come from ([`SoOriginalDst`] outside tests).
    pub orig_dst: Arc<dyn OrigDstSource>,
    /// Told about connections opened to original destinations by HTTP passthrough.
    pub observer: Option<Arc<dyn ConnectionObserver>>,
}

/// A running outbound capture listener.
pub struct OutboundCapture(Running);

/// A running inbound capture listener.
pub struct InboundCapture(Running);

/// The inbound capture listener, open while the running config enables inbound capture
/// (`sidecar.inbound.enabled`): opened and closed as reloads turn it on and off, without
/// touching outbound capture or the binds. Closing it refuses new connections only;
/// connections already accepted run to their end. Dropping it stops following and
/// closes the listener.
///
/// Started with [`InboundSwitch::start_forced`] (the pod's iptables rules redirect
/// inbound TCP, `--inbound-capture`), it is open from the start and stays open whatever
/// the config says: closing it would refuse every connection to the pod.
pub struct InboundSwitch {
    current: Arc<Mutex<Option<InboundCapture>>>,
    following: tokio::task::JoinHandle<()>,
}

/// The sockets and accept loops of a capture listener; dropping it stops accepting.
struct Running {
    local: Vec<SocketAddr>,
    accepting: Vec<tokio::task::JoinHandle<()>>,
}

/// Which way captured connections go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// From the pod's app to the world.
    Outbound,
    /// From the world to the pod's app.
    Inbound,
}

/// What every captured connection shares.
struct Shared {
    direction: Direction,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    listeners: Arc<Listeners>,
    orig_dst: Arc<dyn OrigDstSource>,
    guard: LoopGuard,
    passthrough: Arc<PassthroughBackends>,
}

impl OutboundCapture {
    /// Binds the capture addresses and starts accepting. An IPv6 address that cannot be
    /// bound because the system has no IPv6 is skipped with a warning; any other failure
    /// is an error. Accepting stops when `listeners` starts draining.
    pub async fn start(
        opts: CaptureOptions,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        listeners: Arc<Listeners>,
    ) -> io::Result<OutboundCapture> {
        Running::start(Direction::Outbound, opts, store, metrics, listeners)
            .await
            .map(OutboundCapture)
    }

    /// The addresses actually listened on (useful with port 0 in tests).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.0.local
    }
}

impl InboundCapture {
    /// As [`OutboundCapture::start`], for the inbound capture port: connections go to the
    /// app on loopback at their original port.
    pub async fn start(
        opts: CaptureOptions,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        listeners: Arc<Listeners>,
    ) -> io::Result<InboundCapture> {
        Running::start(Direction::Inbound, opts, store, metrics, listeners)
            .await
            .map(InboundCapture)
    }

    /// The addresses actually listened on (useful with port 0 in tests).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.0.local
    }
}

impl InboundSwitch {
    /// Opens the inbound listener now if the running config enables it (an error here is
    /// a startup error), then follows config changes until the proxy drains. A listener
    /// that cannot be opened on a later change is logged and tried again on the next one.
    pub async fn start(
        opts: CaptureOptions,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        listeners: Arc<Listeners>,
    ) -> io::Result<InboundSwitch> {
        Self::start_with(false, opts, store, metrics, listeners).await
    }

    /// Opens the inbound listener now, whatever the running config says (an error here
    /// is a startup error), and keeps it open until the proxy drains: a config with
    /// `sidecar.inbound.enabled` false does not close it. For a pod whose iptables rules
    /// already redirect inbound TCP to it; the config still decides what the captured
    /// connections meet (`inboundBinds`, `inboundDefault`).
    pub async fn start_forced(
        opts: CaptureOptions,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        listeners: Arc<Listeners>,
    ) -> io::Result<InboundSwitch> {
        Self::start_with(true, opts, store, metrics, listeners).await
    }

    async fn start_with(
        forced: bool,
        opts: CaptureOptions,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        listeners: Arc<Listeners>,
    ) -> io::Result<InboundSwitch> {
        let mut changes = store.subscribe();
        let initial = if forced || store.load().sidecar.inbound_enabled {
            Some(
                InboundCapture::start(
                    opts.clone(),
                    store.clone(),
                    metrics.clone(),
                    listeners.clone(),
                )
                .await?,
            )
        } else {
            None
        };
        let current = Arc::new(Mutex::new(initial));
        let state = current.clone();
        let mut draining = listeners.draining();
        let following = tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    _ = draining.wait_for(|d| *d) => return,
                }
                // Marks the change seen even when forced, or `changed()` returns at once.
                let configured = changes.borrow_and_update().sidecar.inbound_enabled;
                let enabled = forced || configured;
                let running = lock(&state).is_some();
                match (enabled, running) {
                    (true, false) => {
                        let started = InboundCapture::start(
                            opts.clone(),
                            store.clone(),
                            metrics.clone(),
                            listeners.clone(),
                        )
                        .await;
                        match started {
                            Ok(capture) => *lock(&state) = Some(capture),
                            Err(e) => tracing::error!(
                                error = %e,
                                "inbound capture turned on by a config change, but its listener cannot be opened; will try again on the next change"
                            ),
                        }
                    }
                    (false, true) => {
                        let stopping = lock(&state).take();
                        if let Some(capture) = stopping {
                            capture.0.stop().await;
                            tracing::info!(
                                "inbound capture turned off by a config change: listener closed, open connections continue"
                            );
                        }
                    }
                    _ => {}
                }
            }
        });
        Ok(InboundSwitch { current, following })
    }

    /// The addresses the inbound listener is listening on; empty while it is off.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        lock(&self.current)
            .as_ref()
            .map(|c| c.local_addrs().to_vec())
            .unwrap_or_default()
    }
}

impl Drop for InboundSwitch {
    fn drop(&mut self) {
        self.following.abort();
        lock(&self.current).take();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Running {
    /// Stops accepting and waits until the listening sockets are closed, so the same
    /// addresses can be listened on again at once.
    async fn stop(mut self) {
        let tasks = std::mem::take(&mut self.accepting);
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    async fn start(
        direction: Direction,
        opts: CaptureOptions,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        listeners: Arc<Listeners>,
    ) -> io::Result<Running> {
        let (flag, what) = match direction {
            Direction::Outbound => ("--outbound-addr", "outbound"),
            Direction::Inbound => ("--inbound-addr", "inbound"),
        };
        let mut sockets = Vec::new();
        for addr in &opts.addrs {
            match listen(*addr) {
                Ok(l) => sockets.push(l),
                Err(e)
                    if addr.is_ipv6()
                        && matches!(
                            e.kind(),
                            io::ErrorKind::AddrNotAvailable | io::ErrorKind::Unsupported
                        ) =>
                {
                    tracing::warn!(%addr, error = %e, "no IPv6 here: not capturing on this address");
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("{flag} {addr}: cannot listen: {e}"),
                    ));
                }
            }
        }
        let local: Vec<SocketAddr> = sockets.iter().filter_map(|l| l.local_addr().ok()).collect();
        let guard = LoopGuard::new(
            opts.own_ports
                .iter()
                .copied()
                .chain(local.iter().map(SocketAddr::port)),
        );
        let shared = Arc::new(Shared {
            direction,
            store,
            metrics,
            listeners,
            orig_dst: opts.orig_dst,
            guard,
            passthrough: Arc::new(PassthroughBackends::new(opts.observer)),
        });
        let accepting = sockets
            .into_iter()
            .map(|l| {
                if let Ok(a) = l.local_addr() {
                    tracing::info!(addr = %a, direction = what, "capturing traffic");
                }
                tokio::spawn(shared.clone().accept_loop(l))
            })
            .collect();
        Ok(Running { local, accepting })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.accepting {
            task.abort();
        }
    }
}

/// Opens a capture socket. IPv6 sockets take IPv6 only.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

impl Shared {
    async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        let mut draining = self.listeners.draining();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = draining.wait_for(|d| *d) => return,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "capture accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let this = self.clone();
            crate::workers::spawn_connection(tcp, move |tcp| this.handle(tcp, peer));
        }
    }

    /// Serves one captured connection, from original destination to the end.
    async fn handle(self: Arc<Self>, mut tcp: TcpStream, peer: SocketAddr) {
        // Counted from the start, so a drain waits for a connection still being sniffed;
        // HTTP is counted by the server instead.
        let mut tunnel = self.listeners.tunnel();
        let inbound = self.direction == Direction::Inbound;
        let dst = match self.orig_dst.orig_dst(&tcp, peer) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(%peer, inbound, error = %e, "captured connection without an original destination; closing");
                opaque::reset(tcp);
                return;
            }
        };
        if self.guard.is_loop(dst) {
            if inbound {
                self.metrics.sidecar.inbound_loop_refused();
            } else {
                self.metrics.sidecar.loop_refused();
            }
            tracing::warn!(%peer, %dst, inbound, "refusing a captured connection to the proxy's own port (it would loop)");
            opaque::reset(tcp);
            return;
        }
        let detect_timeout = self.store.load().sidecar.protocol_detect_timeout;
        let (detected, prefix) = match sniff::detect(&mut tcp, detect_timeout).await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(%peer, %dst, error = %e, "captured connection failed before its protocol was known");
                return;
            }
        };
        let (protocol, name) = match &detected {
            Detected::Http1 => (CapturedProtocol::Http1, None),
            Detected::Http2 => (CapturedProtocol::Http2, None),
            Detected::Tls { sni } => (CapturedProtocol::Tls, sni.clone()),
            Detected::Opaque => (CapturedProtocol::Opaque, None),
            Detected::ServerFirst => (CapturedProtocol::ServerFirst, None),
        };
        if inbound {
            self.metrics.sidecar.inbound_connection(protocol);
        } else {
            self.metrics.sidecar.connection(protocol);
        }
        tracing::debug!(%peer, %dst, inbound, protocol = protocol.as_str(), sni = name.as_deref().unwrap_or(""), "captured connection");
        if matches!(detected, Detected::Http1 | Detected::Http2) {
            drop(tunnel);
            let h2 = detected == Detected::Http2;
            let side = if inbound {
                Side::Inbound
            } else {
                Side::Outbound
            };
            self.serve_http(Prefixed::new(prefix, tcp), peer, dst, h2, side, None)
                .await;
            return;
        }
        if inbound {
            let config = self.store.load();
            if !config.sidecar.inbound_port_allowed(&config, dst) {
                drop(config);
                self.metrics.sidecar.inbound_denied(protocol);
                tracing::warn!(
                    %peer,
                    %dst,
                    protocol = protocol.as_str(),
                    "inbound connection denied: no inbound bind has its port (inbound default DENY)"
                );
                opaque::reset(tcp);
                return;
            }
            drop(config);
            // TLS and anything else go to the app untouched.
            let app = Target::inbound(dst, false).addr;
            if let Err(e) = opaque::forward(tcp, &prefix, app, tunnel.closing()).await {
                tracing::debug!(%peer, %dst, %app, error = %e, "inbound connection ended with an error");
            }
            return;
        }
        let verdict = self.store.load().sidecar.decide(name.as_deref(), dst);
        match (verdict.action, verdict.tls) {
            (OutboundAction::Deny, _) => {
                self.metrics.sidecar.denied(protocol);
                tracing::warn!(
                    %peer,
                    %dst,
                    sni = name.as_deref().unwrap_or(""),
                    protocol = protocol.as_str(),
                    rule = verdict.rule.as_deref().unwrap_or("outbound default"),
                    "outbound connection denied"
                );
                opaque::reset(tcp);
            }
            (OutboundAction::Allow, EgressTls::Intercept { ca })
                if protocol == CapturedProtocol::Tls =>
            {
                drop(tunnel);
                self.intercept(tcp, prefix, peer, dst, name, ca).await;
            }
            (OutboundAction::Allow, _) => {
                if protocol == CapturedProtocol::Tls {
                    self.metrics.sidecar.tls(TlsMode::Passthrough);
                }
                if let Err(e) = opaque::forward(tcp, &prefix, dst, tunnel.closing()).await {
                    tracing::debug!(%peer, %dst, error = %e, "forwarded connection ended with an error");
                }
            }
        }
    }

    /// Terminates the app's TLS with a mesh CA leaf for `sni` (or the destination address
    /// when the client sent none), then serves the HTTP inside, re-encrypting to `dst`.
    async fn intercept(
        &self,
        tcp: TcpStream,
        prefix: bytes::BytesMut,
        peer: SocketAddr,
        dst: SocketAddr,
        sni: Option<String>,
        server_ca: Option<CaBundle>,
    ) {
        let Some(ca) = self.store.load().sidecar.mesh_ca.clone() else {
            // The compiler refuses INTERCEPT without a mesh CA; a reset is the safe answer.
            tracing::warn!(%peer, %dst, "TLS interception without a mesh CA; resetting");
            opaque::reset(tcp);
            return;
        };
        let server_name = sni.unwrap_or_else(|| dst.ip().to_canonical().to_string());
        let config = match ca.server_config(&server_name, &self.metrics.sidecar) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%peer, %dst, sni = %server_name, error = %e, "cannot intercept TLS; resetting");
                opaque::reset(tcp);
                return;
            }
        };
        self.metrics.sidecar.tls(TlsMode::Intercept);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let accept = acceptor.accept(Prefixed::new(prefix, tcp));
        let stream = match tokio::time::timeout(INTERCEPT_HANDSHAKE_TIMEOUT, accept).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                // Most often: the app does not trust the mesh CA.
                tracing::warn!(%peer, %dst, sni = %server_name, error = %e, "intercepted TLS handshake failed (does the app trust the mesh CA?)");
                self.metrics
                    .record_connection_error(CAPTURE_BIND, ConnectionErrorReason::TlsHandshake);
                return;
            }
            Err(_) => {
                self.metrics
                    .record_connection_error(CAPTURE_BIND, ConnectionErrorReason::Timeout);
                return;
            }
        };
        tracing::debug!(%peer, %dst, sni = %server_name, "intercepted TLS");
        let side = Side::Intercepted {
            server_name: server_name.clone(),
            ca: server_ca,
        };
        self.serve_http(stream, peer, dst, false, side, Some(server_name))
            .await;
    }

    async fn serve_http<IO>(
        &self,
        io: IO,
        peer: SocketAddr,
        dst: SocketAddr,
        h2: bool,
        side: Side,
        sni: Option<String>,
    ) where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let settings = self.store.load().settings;
        let bind = match self.direction {
            Direction::Outbound => CAPTURE_BIND,
            Direction::Inbound => INBOUND_CAPTURE_BIND,
        };
        let conn = ConnContext {
            bind_key: bind.into(),
            peer,
            tls: sni.is_some(),
            sni,
            orig_dst: Some(dst),
        };
        let service = CapturedHttp {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            conn: conn.clone(),
            dst,
            h2,
            passthrough: self.passthrough.clone(),
            side,
        };
        let counted = self.metrics.connection_opened(bind);
        self.listeners
            .serve(io, service, conn, settings, counted)
            .await;
    }
}
