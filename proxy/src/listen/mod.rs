//! Accepting connections: binds, TLS termination, HTTP/1.1 and HTTP/2 serving, drain.
//!
//! `Listeners` keeps one accept loop per configured bind and follows config changes
//! (binds added or removed). Each accepted connection becomes a [`ConnContext`] and is
//! served by [`serve_connection`], which any other source of connections (the sidecar's
//! transparent capture) can call too. Nothing here looks inside requests.

pub mod capture;
mod drain_watch;
mod head_timer;
mod stream;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use self::drain_watch::serve_until_drained;
use self::head_timer::HeadReadTimer;
use crate::config::Store;
use crate::config::ir::{Bind, Config, Settings};
use crate::http::service::{ConnContext, HttpService};
use crate::tcp::SendStream;
use crate::telemetry::metrics::{ConnectionErrorReason, ConnectionGuard, Metrics};

/// How long a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to finish a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bind that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("bind {key:?}: cannot listen on {addr}: {source}")]
pub struct BindError {
    /// Bind key.
    pub key: String,
    /// Address.
    pub addr: SocketAddr,
    /// OS error.
    pub source: std::io::Error,
}

/// Counts live connections and tells them to drain, then (at the deadline) to close.
#[derive(Debug)]
struct Drain {
    signal: watch::Sender<bool>,
    /// Turns true when the drain deadline passes: tunnels still open close then.
    closing: watch::Sender<bool>,
    active: AtomicUsize,
    idle: Notify,
}

/// A byte tunnel (opaque TCP, passed-through TLS, anything the proxy forwards without
/// reading) counted as a live connection while it exists: a drain waits for it to end
/// on its own, and when the drain deadline passes, [`Tunnel::closing`] resolves so the
/// tunnel can close both sides.
pub struct Tunnel {
    _live: Live,
    closing: watch::Receiver<bool>,
}

impl Tunnel {
    /// Resolves when the drain deadline has passed and the tunnel must close.
    pub async fn closing(&mut self) {
        // The sender lives as long as the drain state this tunnel holds.
        let _ = self.closing.wait_for(|c| *c).await;
    }
}

/// Decrements the live-connection count when a connection ends.
struct Live(Arc<Drain>);

impl Drop for Live {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A client socket carrying the guards that count it as open. hyper hands the socket to
/// the upgrade when a connection switches protocols, so the guards drop when the socket
/// does, not when HTTP serving ends.
struct Tracked<IO> {
    io: IO,
    _live: Live,
    _counted: ConnectionGuard,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

struct BindTask {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    /// The accept loop; it owns the listening socket, which is closed when it returns.
    accepting: tokio::task::JoinHandle<()>,
}

impl BindTask {
    /// Stops accepting and waits (bounded) until the listening socket is closed, so its
    /// address can be bound again at once.
    async fn close(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(CLOSE_TIMEOUT, self.accepting)
            .await
            .is_err()
        {
            tracing::warn!(addr = %self.addr, "accept loop did not stop in time");
        }
    }
}

/// How long closing a bind waits for its accept loop to let go of the socket.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The accept loops of every bind of the running config.
pub struct Listeners {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    drain: Arc<Drain>,
    binds: Mutex<HashMap<String, BindTask>>,
    bound: Mutex<HashMap<String, SocketAddr>>,
}

impl Listeners {
    /// Creates the listener set; nothing is bound yet.
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Listeners {
            store,
            metrics,
            drain: Arc::new(Drain {
                signal: watch::channel(false).0,
                closing: watch::channel(false).0,
                active: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
            binds: Mutex::default(),
            bound: Mutex::default(),
        })
    }

    /// Opens every bind of `config` that is not open yet and closes binds that are gone
    /// (or moved). Closed sockets are released before new ones are opened, so a bind that
    /// is renamed, or whose address moves to another bind, keeps its port. Returns the
    /// binds that could not be opened (the others are serving).
    pub async fn reconcile(self: &Arc<Self>, config: &Config) -> Vec<BindError> {
        let closing: Vec<(String, BindTask)> = {
            let mut binds = self.binds.lock().unwrap_or_else(PoisonError::into_inner);
            let gone: Vec<String> = binds
                .iter()
                .filter(|(key, task)| {
                    config.bind(key).is_none_or(|b| b.addr != task.addr)
                        || config.sidecar.is_capture_bind(key)
                })
                .map(|(key, _)| key.clone())
                .collect();
            gone.into_iter()
                .filter_map(|key| binds.remove(&key).map(|task| (key, task)))
                .collect()
        };
        for (key, task) in closing {
            tracing::info!(bind = %key, addr = %task.addr, "closing bind");
            self.bound
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
            task.close().await;
        }
        let mut errors = Vec::new();
        let mut binds = self.binds.lock().unwrap_or_else(PoisonError::into_inner);
        for bind in &config.binds {
            // Outbound and inbound binds serve captured traffic (`capture`), not sockets.
            if binds.contains_key(&bind.key) || config.sidecar.is_capture_bind(&bind.key) {
                continue;
            }
            match listen(bind) {
                Ok(listener) => {
                    let local = listener.local_addr().unwrap_or(bind.addr);
                    tracing::info!(bind = %bind.key, addr = %local, "listening");
                    let (stop, stopped) = watch::channel(false);
                    let accepting = tokio::spawn(self.clone().accept_loop(
                        bind.key.clone(),
                        listener,
                        stopped,
                    ));
                    binds.insert(
                        bind.key.clone(),
                        BindTask {
                            addr: bind.addr,
                            stop,
                            accepting,
                        },
                    );
                    self.bound
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(bind.key.clone(), local);
                }
                Err(source) => errors.push(BindError {
                    key: bind.key.clone(),
                    addr: bind.addr,
                    source,
                }),
            }
        }
        errors
    }

    /// Follows config changes from the store, opening and closing binds.
    pub fn follow(self: &Arc<Self>) {
        let mut changes = self.store.subscribe();
        let this = self.clone();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let config = changes.borrow_and_update().clone();
                for e in this.reconcile(&config).await {
                    tracing::error!(error = %e, "bind could not be opened");
                }
            }
        });
    }

    /// The address each bind is actually listening on (useful with port 0 in tests).
    pub fn local_addr(&self, bind_key: &str) -> Option<SocketAddr> {
        self.bound
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(bind_key)
            .copied()
    }

    /// Turns true when the proxy starts draining; other accept loops (sidecar capture)
    /// stop accepting then.
    pub fn draining(&self) -> watch::Receiver<bool> {
        self.drain.signal.subscribe()
    }

    fn http_service(&self, ctx: &ConnContext) -> HttpService {
        HttpService::new(self.store.clone(), self.metrics.clone(), ctx.clone())
    }

    /// Counts a byte tunnel as a live connection until the returned guard drops (see
    /// [`Tunnel`]).
    pub fn tunnel(&self) -> Tunnel {
        self.drain.active.fetch_add(1, Ordering::AcqRel);
        Tunnel {
            _live: Live(self.drain.clone()),
            closing: self.drain.closing.subscribe(),
        }
    }

    /// Stops accepting on every bind, asks live connections to finish their in-flight
    /// requests and close, and waits up to `deadline`. Upgraded connections (WebSocket
    /// tunnels) and byte tunnels ([`Tunnel`]: the sidecar's opaque TCP and passed-through
    /// TLS) cannot be asked to close, so they are waited for until they end or the
    /// deadline passes; at the deadline byte tunnels are told to close. Returns the
    /// number of connections still open when the deadline passed.
    pub async fn drain(&self, deadline: Duration) -> usize {
        let binds: Vec<BindTask> = self
            .binds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, task)| task)
            .collect();
        // Refuse new connections before anything else.
        for task in binds {
            task.close().await;
        }
        self.drain.signal.send_replace(true);
        let wait = async {
            loop {
                let idle = self.drain.idle.notified();
                if self.drain.active.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(deadline, wait).await;
        let left = self.drain.active.load(Ordering::Acquire);
        if left > 0 {
            self.drain.closing.send_replace(true);
        }
        left
    }

    async fn accept_loop(
        self: Arc<Self>,
        key: String,
        listener: TcpListener,
        mut stopped: watch::Receiver<bool>,
    ) {
        let key: Arc<str> = key.into();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stopped.changed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(bind = %key, error = %e, "accept failed");
                    self.metrics
                        .record_connection_error(&key, ConnectionErrorReason::Io);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let this = self.clone();
            let key = key.clone();
            crate::workers::spawn_connection(tcp, move |tcp| this.handle_tcp(key, tcp, peer));
        }
    }

    async fn handle_tcp(self: Arc<Self>, key: Arc<str>, tcp: TcpStream, peer: SocketAddr) {
        let config = self.store.load();
        let Some(bind) = config.bind(&key).cloned() else {
            return;
        };
        let counted = self.metrics.connection_opened(&key);
        let settings = config.settings;
        drop(config);
        if let Some(protocol) = bind.stream {
            self.forward_stream(bind, protocol, tcp, peer, counted)
                .await;
            return;
        }
        match &bind.tls {
            None => {
                let ctx = ConnContext {
                    bind_key: key,
                    peer,
                    tls: false,
                    sni: None,
                    orig_dst: None,
                };
                let service = self.http_service(&ctx);
                self.serve(SendStream(tcp), service, ctx, settings, counted)
                    .await;
            }
            Some(tls) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
                let stream = match tokio::time::timeout(
                    TLS_HANDSHAKE_TIMEOUT,
                    acceptor.accept(SendStream(tcp)),
                )
                .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(bind = %key, %peer, error = %e, "TLS handshake failed");
                        self.metrics
                            .record_connection_error(&key, ConnectionErrorReason::TlsHandshake);
                        return;
                    }
                    Err(_) => {
                        self.metrics
                            .record_connection_error(&key, ConnectionErrorReason::Timeout);
                        return;
                    }
                };
                let sni = stream
                    .get_ref()
                    .1
                    .server_name()
                    .map(str::to_ascii_lowercase);
                let ctx = ConnContext {
                    bind_key: key,
                    peer,
                    tls: true,
                    sni,
                    orig_dst: None,
                };
                let service = self.http_service(&ctx);
                self.serve(stream, service, ctx, settings, counted).await;
            }
        }
    }

    /// Serves one accepted connection. The connection stays counted (active gauge, drain)
    /// for as long as its socket lives: past the end of HTTP serving when the connection
    /// was upgraded (WebSocket), until the tunnel closes.
    /// Other sources of connections (sidecar capture) call this with their own service.
    pub async fn serve<IO, S>(
        &self,
        io: IO,
        service: S,
        ctx: ConnContext,
        settings: Settings,
        counted: ConnectionGuard,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: ConnService,
    {
        self.drain.active.fetch_add(1, Ordering::AcqRel);
        let io = Tracked {
            io,
            _live: Live(self.drain.clone()),
            _counted: counted,
        };
        serve_connection(
            io,
            service,
            &ctx,
            settings,
            &self.metrics,
            self.drain.signal.subscribe(),
        )
        .await;
    }
}

/// A per-connection HTTP service that [`serve_connection`] can serve: [`HttpService`],
/// or the sidecar's captured-traffic service wrapping it.
pub trait ConnService:
    hyper::service::Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<crate::http::body::Body>,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> ConnService for S where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<crate::http::body::Body>,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// Opens a listening socket for a bind.
fn listen(bind: &Bind) -> std::io::Result<TcpListener> {
    let socket = bound_socket(bind.addr)?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Checks that a bind's address can be listened on (binding a socket with the same
/// options as a real bind, then closing it), so a config change that adds a bind on a
/// port someone else holds is rejected before it is applied.
pub fn probe_bind(addr: std::net::SocketAddr) -> std::io::Result<()> {
    bound_socket(addr).map(drop)
}

fn bound_socket(addr: std::net::SocketAddr) -> std::io::Result<socket2::Socket> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // `::` takes IPv4 too where the system allows it.
        let _ = socket.set_only_v6(false);
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Serves HTTP/1.1 and HTTP/2 (h2c prior knowledge or ALPN) on one connection until it
/// closes, or until `drain` turns true, after which in-flight requests finish and the
/// connection closes.
pub async fn serve_connection<IO, S>(
    io: IO,
    service: S,
    ctx: &ConnContext,
    settings: Settings,
    metrics: &Metrics,
    drain: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ConnService,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The connection's own timer: the head read timeout restarts with every request.
        .timer(HeadReadTimer::default())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(settings.max_request_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_request_header_bytes).unwrap_or(u32::MAX));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = if *drain.borrow() {
        conn.as_mut().graceful_shutdown();
        conn.await
    } else {
        serve_until_drained(conn, drain, |conn| conn.graceful_shutdown()).await
    };
    if let Err(e) = result {
        let reason = classify_connection_error(&*e);
        if let Some(reason) = reason {
            tracing::debug!(bind = %ctx.bind_key, peer = %ctx.peer, error = %e, reason = reason.as_str(), "connection error");
            metrics.record_connection_error(&ctx.bind_key, reason);
        }
    }
}

/// Maps a connection error to a metric reason; `None` for ordinary client disconnects.
fn classify_connection_error(
    e: &(dyn std::error::Error + 'static),
) -> Option<ConnectionErrorReason> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_parse_too_large() {
                return Some(ConnectionErrorReason::HeadersTooLarge);
            }
            if h.is_parse() || h.is_parse_status() {
                return Some(ConnectionErrorReason::MalformedHttp);
            }
            if h.is_timeout() {
                return Some(ConnectionErrorReason::Timeout);
            }
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return None;
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => None,
                _ => Some(ConnectionErrorReason::Io),
            };
        }
        cur = err.source();
    }
    // h2 protocol errors from a misbehaving client land here.
    Some(ConnectionErrorReason::MalformedHttp)
}
