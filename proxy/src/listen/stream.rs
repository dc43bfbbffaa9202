//! TLS passthrough, TLS terminate and TCP listeners: a connection's bytes go to a backend.
//!
//! A TLS passthrough bind reads the client's ClientHello (with the sidecar's bounded
//! reader, [`capture::sniff`]) to learn the SNI, picks the listener and route serving that
//! name, and forwards the hello and everything after it to the route's backend, which
//! terminates TLS itself. A TLS terminate bind completes the handshake with the bind's
//! certificates, picks the route by the SNI the same way, and forwards the decrypted
//! bytes. A TCP bind forwards every connection to its one route's backend. The tunnel is
//! the sidecar's ([`capture::opaque`]) and counts in the drain like its tunnels. Nothing
//! here looks at HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::capture::opaque;
use super::capture::sniff::{self, Detected};
use super::{Listeners, TLS_HANDSHAKE_TIMEOUT, Tunnel};
use crate::config::ir::{Bind, StreamProtocol, StreamRoute};
use crate::telemetry::metrics::{ConnectionErrorReason, ConnectionGuard};

impl Listeners {
    /// Forwards one connection accepted on a TLS passthrough or TCP bind; a connection no
    /// route serves (unknown SNI, not TLS) is reset.
    pub(super) async fn forward_stream(
        &self,
        bind: Arc<Bind>,
        protocol: StreamProtocol,
        mut tcp: TcpStream,
        peer: SocketAddr,
        _counted: ConnectionGuard,
    ) {
        // Counted from the start, so a drain waits for a hello still being read.
        let mut tunnel = self.tunnel();
        if protocol == StreamProtocol::TlsTerminate {
            self.forward_terminated(bind, tcp, peer, tunnel).await;
            return;
        }
        let (route, prefix) = match protocol {
            StreamProtocol::Tcp => (
                bind.listeners
                    .first()
                    .and_then(|l| l.stream_route_for(None))
                    .cloned(),
                bytes::BytesMut::new(),
            ),
            StreamProtocol::TlsPassthrough | StreamProtocol::TlsTerminate => {
                let sni = match sniff::detect(&mut tcp, TLS_HANDSHAKE_TIMEOUT).await {
                    Ok((Detected::Tls { sni }, prefix)) => (sni, prefix),
                    Ok((other, _)) => {
                        tracing::debug!(bind = %bind.key, %peer, detected = ?other, "not a TLS ClientHello on a TLS passthrough bind; resetting");
                        self.metrics.record_connection_error(
                            &bind.key,
                            ConnectionErrorReason::TlsHandshake,
                        );
                        opaque::reset(tcp);
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(bind = %bind.key, %peer, error = %e, "reading the ClientHello failed");
                        self.metrics
                            .record_connection_error(&bind.key, ConnectionErrorReason::Io);
                        return;
                    }
                };
                let (sni, prefix) = sni;
                (route_for_sni(&bind, sni.as_deref()), prefix)
            }
        };
        let Some(route) = route else {
            tracing::debug!(bind = %bind.key, %peer, "no route serves this connection; resetting");
            opaque::reset(tcp);
            return;
        };
        let Some(dst) = destination(&route).await else {
            opaque::reset(tcp);
            return;
        };
        tracing::debug!(route = %route.key, %dst, %peer, "forwarding");
        if let Err(e) = opaque::forward(tcp, &prefix, dst, tunnel.closing()).await {
            tracing::debug!(route = %route.key, %peer, %dst, error = %e, "forwarded connection ended with an error");
        }
    }

    /// Terminates TLS on a TLS terminate bind, picks the route by the handshake's SNI and
    /// forwards the decrypted bytes to its backend until both sides are done (or the
    /// drain deadline passes).
    async fn forward_terminated(
        &self,
        bind: Arc<Bind>,
        tcp: TcpStream,
        peer: SocketAddr,
        mut tunnel: Tunnel,
    ) {
        let Some(tls) = bind.tls.clone() else {
            opaque::reset(tcp);
            return;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let mut client =
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(bind = %bind.key, %peer, error = %e, "TLS handshake failed");
                    self.metrics
                        .record_connection_error(&bind.key, ConnectionErrorReason::TlsHandshake);
                    return;
                }
                Err(_) => {
                    self.metrics
                        .record_connection_error(&bind.key, ConnectionErrorReason::Timeout);
                    return;
                }
            };
        let sni = client
            .get_ref()
            .1
            .server_name()
            .map(str::to_ascii_lowercase);
        let Some(route) = route_for_sni(&bind, sni.as_deref()) else {
            tracing::debug!(bind = %bind.key, %peer, sni = ?sni, "no route serves this SNI; closing");
            let _ = client.shutdown().await;
            return;
        };
        let Some(dst) = destination(&route).await else {
            let _ = client.shutdown().await;
            return;
        };
        let mut upstream = match opaque::connect(dst).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(route = %route.key, %peer, %dst, error = %e, "cannot connect to the backend");
                opaque::reset(client.into_inner().0);
                return;
            }
        };
        tracing::debug!(route = %route.key, %dst, %peer, "forwarding decrypted bytes");
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(e) = copied {
                    tracing::debug!(route = %route.key, %peer, %dst, error = %e, "forwarded connection ended with an error");
                }
            }
            () = tunnel.closing() => opaque::reset(client.into_inner().0),
        }
    }
}

/// The address of a backend of `route`, chosen by weight and resolved.
async fn destination(route: &StreamRoute) -> Option<SocketAddr> {
    let backend = route.choose_backend()?;
    match tokio::net::lookup_host(backend.address.as_ref()).await {
        Ok(mut addrs) => addrs.next(),
        Err(e) => {
            tracing::warn!(route = %route.key, backend = %backend.key, address = %backend.address, error = %e, "cannot resolve backend; resetting");
            None
        }
    }
}

/// The route of a TLS passthrough bind serving `sni`: the listener first (as HTTP picks it
/// by host), then the route within it.
fn route_for_sni(bind: &Bind, sni: Option<&str>) -> Option<Arc<StreamRoute>> {
    bind.listener_for(sni)?.stream_route_for(sni).cloned()
}
