//! The in-process sidecar harness shared by the `sidecar*.rs` tests: the config compiled
//! from YAML, the outbound and inbound capture listeners on 127.0.0.1:0, metrics, and a
//! fake `SO_ORIGINAL_DST`.
//!
//! iptables is replaced by [`FakeOrigDst`]: each client connection binds its local port
//! first and registers the destination it "meant" to reach under that port, so the
//! capture listener sees exactly what `SO_ORIGINAL_DST` would report after a REDIRECT.
#![allow(dead_code, clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentmesh_proxy::app;
use agentmesh_proxy::config::{self, Store, file};
use agentmesh_proxy::listen::Listeners;
use agentmesh_proxy::listen::capture::{
    CaptureOptions, InboundSwitch, OrigDstSource, OutboundCapture,
};
use agentmesh_proxy::telemetry::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Original destinations by the client's local port, registered before connecting.
#[derive(Default)]
pub struct FakeOrigDst(pub Mutex<HashMap<u16, SocketAddr>>);

impl OrigDstSource for FakeOrigDst {
    fn orig_dst(&self, _tcp: &TcpStream, peer: SocketAddr) -> io::Result<SocketAddr> {
        self.0
            .lock()
            .unwrap()
            .get(&peer.port())
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no original destination"))
    }
}

/// An in-process sidecar: config, capture listeners, metrics.
pub struct Sidecar {
    pub capture: OutboundCapture,
    /// Open while the config enables inbound capture (follows [`Sidecar::reload`]).
    pub inbound: InboundSwitch,
    pub dsts: Arc<FakeOrigDst>,
    pub metrics: Arc<Metrics>,
    pub store: Arc<Store>,
    pub listeners: Arc<Listeners>,
}

impl Sidecar {
    /// Compiles `yaml` and starts the outbound capture, and the inbound one when the
    /// config enables it.
    pub async fn start(yaml: &str) -> Sidecar {
        Self::start_inbound(yaml, false).await
    }

    /// As [`Sidecar::start`]; with `forced`, the inbound listener is open whatever the
    /// config says (`--inbound-capture`).
    pub async fn start_inbound(yaml: &str, forced: bool) -> Sidecar {
        let metrics = Metrics::new();
        let config = compile(yaml, &metrics);
        let store = Store::new(config);
        let listeners = Listeners::new(store.clone(), metrics.clone());
        assert!(listeners.reconcile(&store.load()).await.is_empty());
        let dsts = Arc::new(FakeOrigDst::default());
        let opts = || CaptureOptions {
            addrs: vec!["127.0.0.1:0".parse().unwrap()],
            own_ports: vec![],
            orig_dst: dsts.clone(),
            observer: None,
        };
        let capture =
            OutboundCapture::start(opts(), store.clone(), metrics.clone(), listeners.clone())
                .await
                .unwrap();
        let (store2, metrics2, listeners2) = (store.clone(), metrics.clone(), listeners.clone());
        let inbound = if forced {
            InboundSwitch::start_forced(opts(), store2, metrics2, listeners2).await
        } else {
            InboundSwitch::start(opts(), store2, metrics2, listeners2).await
        }
        .unwrap();
        Sidecar {
            capture,
            inbound,
            dsts,
            metrics,
            store,
            listeners,
        }
    }

    /// Installs the config compiled from `yaml`, as a file reload does.
    pub fn reload(&self, yaml: &str) {
        self.store.replace(compile(yaml, &self.metrics));
    }

    /// The inbound listener's address, waiting (at most 10 s) for it to be open, or to
    /// be open on another address than `not` (a listener reopened on port 0).
    pub async fn inbound_addr(&self, not: Option<SocketAddr>) -> SocketAddr {
        for _ in 0..500 {
            if let Some(a) = self.inbound.local_addrs().first()
                && Some(*a) != not
            {
                return *a;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the inbound capture listener did not open within 10s");
    }

    /// Waits (at most 10 s) until the inbound listener is closed.
    pub async fn inbound_closed(&self) {
        for _ in 0..500 {
            if self.inbound.local_addrs().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the inbound capture listener did not close within 10s");
    }

    /// Connects to the capture listener as an app connecting to `dst` would be.
    pub async fn connect(&self, dst: SocketAddr) -> TcpStream {
        self.try_connect(dst).await.unwrap()
    }

    /// As `connect`; a refused connection may be reset before `connect` returns.
    pub async fn try_connect(&self, dst: SocketAddr) -> io::Result<TcpStream> {
        self.connect_to(self.capture.local_addrs()[0], dst).await
    }

    /// Connects to the inbound capture listener as a remote client connecting to the
    /// pod's `dst` would be.
    pub async fn connect_inbound(&self, dst: SocketAddr) -> TcpStream {
        self.try_connect_inbound(dst).await.unwrap()
    }

    /// As `connect_inbound`; a refused connection may be reset before it returns.
    pub async fn try_connect_inbound(&self, dst: SocketAddr) -> io::Result<TcpStream> {
        let listener = self.inbound_addr(None).await;
        self.connect_to(listener, dst).await
    }

    pub async fn connect_to(&self, listener: SocketAddr, dst: SocketAddr) -> io::Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        socket.bind("127.0.0.1:0".parse().unwrap())?;
        let port = socket.local_addr()?.port();
        self.dsts.0.lock().unwrap().insert(port, dst);
        socket.connect(listener).await
    }

    /// Sends one HTTP/1.1 request (with `Connection: close`) and returns the response.
    pub async fn http_get(&self, dst: SocketAddr, host: &str, path: &str) -> String {
        let tcp = self.connect(dst).await;
        exchange(tcp, host, path).await
    }

    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        crate::support::metric_value(&self.metrics.encode(), name, labels)
    }
}

/// The config compiled from `yaml`, with the proxy's real compile context.
fn compile(yaml: &str, metrics: &Arc<Metrics>) -> config::Config {
    let ctx = app::compile_context(metrics);
    let parsed = file::parse(yaml, false).unwrap();
    config::compile(file::flatten(parsed), &ctx).unwrap()
}

/// Sends `GET path` with `Host: host` and `Connection: close` on `io`, returns the whole
/// response.
pub async fn exchange<IO>(mut io: IO, host: &str, path: &str) -> String
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    io.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    // A TLS peer that closes without close_notify ends the read with an error after the
    // whole response; what was read is what counts.
    let _ = tokio::time::timeout(Duration::from_secs(10), io.read_to_end(&mut out))
        .await
        .expect("response within 10s");
    String::from_utf8_lossy(&out).into_owned()
}

/// A TCP echo server on loopback (an app's non-HTTP port): echoes what it reads until
/// the client half-closes, then closes its side.
pub async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}
