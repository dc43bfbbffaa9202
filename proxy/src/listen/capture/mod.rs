//! Sidecar transparent capture (outbound): the listener that iptables' REDIRECT sends the
//! pod's outbound TCP connections to (`127.0.0.1:16001` and `[::1]:16001`).
//!
//! For each connection: recover the original destination ([`orig_dst`]), refuse it when
//! it is the proxy itself (loop), detect the protocol from the first bytes ([`sniff`]),
//! then
//! - HTTP/1.x and h2c: serve it with [`http::CapturedHttp`] (the ordinary pipeline when an
//!   outbound bind serves the destination, else the egress rules and outbound default);
//! - TLS: judge the SNI by the egress rules and outbound default, then pass the bytes
//!   through untouched ([`opaque`]) or reset;
//! - anything else, and server-speaks-first protocols: judge the destination the same
//!   way, then forward byte for byte or reset.
//!
//! This module knows nothing about routes or policies beyond handing HTTP to the
//! pipeline; it must not look inside TLS.

pub mod client_hello;
pub mod http;
pub mod opaque;
pub mod orig_dst;
pub mod sniff;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use self::http::{CapturedHttp, PassthroughBackends};
pub use self::orig_dst::{LoopGuard, OrigDstSource, SoOriginalDst};
use self::sniff::{Detected, Prefixed};
use super::Listeners;
use crate::config::Store;
use crate::config::sidecar::OutboundAction;
use crate::http::service::ConnContext;
use crate::http::upstream::ConnectionObserver;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::sidecar::CapturedProtocol;

/// The bind label under which captured connections are counted, and the bind key of
/// their connection context until a request picks an outbound bind.
pub const CAPTURE_BIND: &str = "sidecar-outbound";

/// How the outbound capture listener is set up.
pub struct CaptureOptions {
    /// Addresses to listen on (the REDIRECT target), e.g. `127.0.0.1:16001`, `[::1]:16001`.
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
pub struct OutboundCapture {
    local: Vec<SocketAddr>,
    accepting: Vec<tokio::task::JoinHandle<()>>,
}

/// What every captured connection shares.
struct Shared {
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
                        format!("--outbound-addr {addr}: cannot listen: {e}"),
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
                    tracing::info!(addr = %a, "capturing outbound traffic");
                }
                tokio::spawn(shared.clone().accept_loop(l))
            })
            .collect();
        Ok(OutboundCapture { local, accepting })
    }

    /// The addresses actually listened on (useful with port 0 in tests).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }
}

impl Drop for OutboundCapture {
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
            tokio::spawn(self.clone().handle(tcp, peer));
        }
    }

    /// Serves one captured connection, from original destination to the end.
    async fn handle(self: Arc<Self>, mut tcp: TcpStream, peer: SocketAddr) {
        let dst = match self.orig_dst.orig_dst(&tcp, peer) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "captured connection without an original destination; closing");
                opaque::reset(tcp);
                return;
            }
        };
        if self.guard.is_loop(dst) {
            self.metrics.sidecar.loop_refused();
            tracing::warn!(%peer, %dst, "refusing a captured connection to the proxy's own port (it would loop)");
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
        self.metrics.sidecar.connection(protocol);
        tracing::debug!(%peer, %dst, protocol = protocol.as_str(), sni = name.as_deref().unwrap_or(""), "captured connection");
        if matches!(detected, Detected::Http1 | Detected::Http2) {
            self.serve_http(tcp, prefix, peer, dst, detected == Detected::Http2)
                .await;
            return;
        }
        let verdict = self.store.load().sidecar.decide(name.as_deref(), dst);
        match verdict.action {
            OutboundAction::Deny => {
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
            OutboundAction::Allow => {
                if let Err(e) = opaque::forward(tcp, &prefix, dst).await {
                    tracing::debug!(%peer, %dst, error = %e, "forwarded connection ended with an error");
                }
            }
        }
    }

    async fn serve_http(
        &self,
        tcp: TcpStream,
        prefix: bytes::BytesMut,
        peer: SocketAddr,
        dst: SocketAddr,
        h2: bool,
    ) {
        let settings = self.store.load().settings;
        let conn = ConnContext {
            bind_key: CAPTURE_BIND.into(),
            peer,
            tls: false,
            sni: None,
            orig_dst: Some(dst),
        };
        let service = CapturedHttp {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            conn: conn.clone(),
            dst,
            h2,
            passthrough: self.passthrough.clone(),
        };
        let counted = self.metrics.connection_opened(CAPTURE_BIND);
        self.listeners
            .serve(Prefixed::new(prefix, tcp), service, conn, settings, counted)
            .await;
    }
}
