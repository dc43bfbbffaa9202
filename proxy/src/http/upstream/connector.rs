//! The transport under the connection pool: always dials the backend's configured
//! address, whatever URI the request carries, and originates TLS when the backend asks
//! for it.
//!
//! It owns the transport (resolve, TCP with `TCP_NODELAY`, connect timeout, TLS with ALPN)
//! and nothing above it: HTTP framing, pooling and keep-alive belong to `pool`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::tls::TlsOrigination;
use crate::tcp::SendStream;

/// TCP keep-alive probes on idle upstream connections, so a silently dead peer is found.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Told about every upstream connection, so metrics can count them without this module
/// depending on telemetry.
pub trait ConnectionObserver: Send + Sync {
    /// A connection to `backend` is established (TCP and TLS done). The returned guard is
    /// kept with the connection and dropped exactly when the connection is closed, so an
    /// "active connections" gauge can decrement in its `Drop`.
    fn opened(&self, backend: &str) -> Box<dyn Send + Sync>;
    /// A connection attempt to `backend` failed (resolution, TCP, TLS or timeout).
    fn connect_failed(&self, backend: &str);
}

/// Why a connection could not be established. Every variant means the request was never
/// sent.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    /// The address did not resolve.
    #[error("cannot resolve {address}")]
    Resolve {
        address: String,
        #[source]
        source: io::Error,
    },
    /// The address resolved to nothing.
    #[error("{address} resolved to no address")]
    NoAddress { address: String },
    /// Every resolved address refused or was unreachable.
    #[error("tcp connect to {addr}")]
    Tcp {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed (untrusted certificate, wrong name, no common ALPN...).
    #[error("tls handshake")]
    Tls(#[source] io::Error),
    /// The whole attempt (resolution, TCP and TLS) took longer than the connect timeout.
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
}

/// The transport settings of one backend, shared by every connection attempt.
pub(super) struct Transport {
    /// Backend name, for the observer and logs.
    pub(super) backend: String,
    /// `host:port` to dial.
    pub(super) address: String,
    /// TLS to originate, if any.
    pub(super) tls: Option<TlsOrigination>,
    /// Bound on resolution + TCP + TLS.
    pub(super) connect_timeout: Duration,
    /// Told about opened and failed connections.
    pub(super) observer: Option<Arc<dyn ConnectionObserver>>,
}

impl Transport {
    /// Opens one connection: resolution, TCP and TLS, within the connect timeout. The
    /// observer hears of the outcome.
    pub(super) async fn connect(&self) -> Result<UpstreamConnection, ConnectError> {
        let attempt = tokio::time::timeout(self.connect_timeout, self.establish()).await;
        match attempt.unwrap_or(Err(ConnectError::Timeout(self.connect_timeout))) {
            Ok((stream, negotiated_h2)) => {
                tracing::debug!(backend = %self.backend, address = %self.address, negotiated_h2, "upstream connection opened");
                Ok(UpstreamConnection {
                    stream,
                    negotiated_h2,
                    _guard: self.observer.as_ref().map(|o| o.opened(&self.backend)),
                })
            }
            Err(err) => {
                tracing::debug!(backend = %self.backend, address = %self.address, error = %err, "upstream connect failed");
                if let Some(observer) = &self.observer {
                    observer.connect_failed(&self.backend);
                }
                Err(err)
            }
        }
    }

    /// Resolves, connects over TCP (trying each address in turn) and runs the TLS
    /// handshake. Returns the stream and whether ALPN chose `h2`.
    async fn establish(&self) -> Result<(Stream, bool), ConnectError> {
        let addrs = tokio::net::lookup_host(self.address.as_str())
            .await
            .map_err(|source| ConnectError::Resolve {
                address: self.address.clone(),
                source,
            })?;
        let mut last_error = None;
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(source) => last_error = Some(ConnectError::Tcp { addr, source }),
            }
        }
        let tcp = match (tcp, last_error) {
            (Some(tcp), _) => tcp,
            (None, Some(err)) => return Err(err),
            (None, None) => {
                return Err(ConnectError::NoAddress {
                    address: self.address.clone(),
                });
            }
        };
        configure_socket(&tcp);
        let Some(tls) = &self.tls else {
            return Ok((Stream::Plain(SendStream(tcp)), false));
        };
        let session = TlsConnector::from(tls.config.clone())
            .connect(tls.server_name.clone(), SendStream(tcp))
            .await
            .map_err(ConnectError::Tls)?;
        let negotiated_h2 = session.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
        Ok((Stream::Tls(Box::new(session)), negotiated_h2))
    }
}

/// `TCP_NODELAY` (requests and small frames go out at once) and keep-alive probes. A
/// failure only costs latency or dead-peer detection, so it is logged, not fatal.
fn configure_socket(tcp: &TcpStream) {
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::debug!(error = %err, "cannot set TCP_NODELAY on upstream socket");
    }
    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
    if let Err(err) = socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %err, "cannot set TCP keep-alive on upstream socket");
    }
}

/// The byte stream of an upstream connection: plain TCP or TLS over TCP.
enum Stream {
    /// Vectored writes as `sendmsg` (hyper writes every request that way).
    Plain(SendStream),
    Tls(Box<TlsStream<SendStream>>),
}

/// One established upstream connection, as a pooled connection's task holds it.
///
/// It carries the observer's guard, so the guard is dropped when hyper drops the
/// connection (closed by either side, evicted from the pool, or the end of an upgraded
/// tunnel).
pub(super) struct UpstreamConnection {
    stream: Stream,
    negotiated_h2: bool,
    _guard: Option<Box<dyn Send + Sync>>,
}

impl UpstreamConnection {
    /// Whether TLS ALPN chose HTTP/2.
    pub(super) fn negotiated_h2(&self) -> bool {
        self.negotiated_h2
    }
}

impl AsyncRead for UpstreamConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
