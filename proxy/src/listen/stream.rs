//! TLS passthrough and TCP listeners: a connection's bytes go unopened to a backend.
//!
//! A TLS passthrough bind reads the client's ClientHello (with the sidecar's bounded
//! reader, [`capture::sniff`]) to learn the SNI, picks the listener and route serving that
//! name, and forwards the hello and everything after it to the route's backend, which
//! terminates TLS itself. A TCP bind forwards every connection to its one route's backend.
//! The tunnel is the sidecar's ([`capture::opaque`]) and counts in the drain like its
//! tunnels. Nothing here opens TLS or looks at HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::capture::opaque;
use super::capture::sniff::{self, Detected};
use super::{Listeners, TLS_HANDSHAKE_TIMEOUT};
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
        let (route, prefix) = match protocol {
            StreamProtocol::Tcp => (
                bind.listeners
                    .first()
                    .and_then(|l| l.stream_route_for(None))
                    .cloned(),
                bytes::BytesMut::new(),
            ),
            StreamProtocol::TlsPassthrough => {
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
        let Some(backend) = route.choose_backend() else {
            opaque::reset(tcp);
            return;
        };
        let dst = match tokio::net::lookup_host(backend.address.as_ref()).await {
            Ok(mut addrs) => addrs.next(),
            Err(e) => {
                tracing::warn!(route = %route.key, backend = %backend.key, address = %backend.address, error = %e, "cannot resolve backend; resetting");
                None
            }
        };
        let Some(dst) = dst else {
            opaque::reset(tcp);
            return;
        };
        tracing::debug!(route = %route.key, backend = %backend.key, %dst, %peer, "forwarding");
        if let Err(e) = opaque::forward(tcp, &prefix, dst, tunnel.closing()).await {
            tracing::debug!(route = %route.key, %peer, %dst, error = %e, "forwarded connection ended with an error");
        }
    }
}

/// The route of a TLS passthrough bind serving `sni`: the listener first (as HTTP picks it
/// by host), then the route within it.
fn route_for_sni(bind: &Bind, sni: Option<&str>) -> Option<Arc<StreamRoute>> {
    bind.listener_for(sni)?.stream_route_for(sni).cloned()
}
