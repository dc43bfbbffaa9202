//! Sidecar inbound capture, in process: connections redirected from the pod's own ports
//! reach the app on loopback (never the pod address, which would loop), HTTP through the
//! inbound binds' routes and policies, anything else byte for byte.
//!
//! The "pod address" is 198.18.0.9, which nothing listens on: a test passes only if the
//! sidecar really forwards to 127.0.0.1 at the original port.
#![allow(clippy::unwrap_used, missing_docs)]

mod sidecar_support;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use sidecar_support::{Sidecar, exchange};
use support::upstream::TestUpstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The pod's address as the remote client saw it.
fn pod(port: u16) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, 9], port))
}

/// Inbound capture on, with an inbound bind for the app's port whose route injects a
/// header and refuses `/admin`.
fn config(app: SocketAddr) -> String {
    format!(
        "binds:
- name: inbound-app
  address: 0.0.0.0
  port: {port}
  listeners:
  - name: app
    routes:
    - name: admin
      matches: [{{ path: {{ exact: /admin }} }}]
      policies:
        directResponse: {{ status: 403, body: not from outside }}
    - name: all
      backends: [{{ backend: app }}]
      policies:
        requestHeaders: {{ set: [{{ name: x-inbound, value: applied }}] }}
backends:
- {{ name: app, host: {{ address: \"{app}\" }} }}
sidecar:
  inbound: {{ enabled: true }}
  inboundBinds: [inbound-app]
",
        port = app.port()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn inbound_http_gets_the_inbound_binds_policies_then_reaches_the_app() {
    let app = TestUpstream::start("app").await;
    let sidecar = Sidecar::start(&config(app.addr)).await;
    let tcp = sidecar.connect_inbound(pod(app.addr.port())).await;
    let resp = exchange(tcp, "agent.ns.svc", "/tasks").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = app.received().pop().unwrap();
    assert_eq!(seen.headers["x-inbound"], "applied");
    assert_eq!(seen.path_and_query, "/tasks");

    let tcp = sidecar.connect_inbound(pod(app.addr.port())).await;
    let resp = exchange(tcp, "agent.ns.svc", "/admin").await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert_eq!(app.count("/admin"), 0);
    assert_eq!(
        sidecar.metric(
            "agentmesh_inbound_connections_total",
            &[("protocol", "http1")]
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn inbound_http_no_bind_serves_goes_to_the_app_on_loopback_unchanged() {
    let app = TestUpstream::start("app").await;
    let other = TestUpstream::start("other-port").await;
    let sidecar = Sidecar::start(&config(app.addr)).await;
    let tcp = sidecar.connect_inbound(pod(other.addr.port())).await;
    let resp = exchange(tcp, "agent.ns.svc", "/health").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("x-upstream: other-port"), "{resp}");
    let seen = other.received().pop().unwrap();
    assert!(seen.headers.get("x-inbound").is_none());
    assert_eq!(seen.headers["host"], "agent.ns.svc");
}

#[tokio::test(flavor = "multi_thread")]
async fn inbound_opaque_tcp_reaches_the_app_byte_for_byte() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    let app = TestUpstream::start("app").await;
    let sidecar = Sidecar::start(&config(app.addr)).await;
    let mut tcp = sidecar.connect_inbound(pod(echo.port())).await;
    tcp.write_all(b"\x00\x01binary protocol").await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, b"\x00\x01binary protocol");
    assert_eq!(
        sidecar.metric(
            "agentmesh_inbound_connections_total",
            &[("protocol", "opaque")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inbound_connection_to_the_capture_port_itself_is_refused_as_a_loop() {
    let app = TestUpstream::start("app").await;
    let sidecar = Sidecar::start(&config(app.addr)).await;
    let own = sidecar.inbound.as_ref().unwrap().local_addrs()[0];
    if let Ok(mut tcp) = sidecar.try_connect_inbound(own).await {
        let _ = tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(read, Err(_) | Ok(0)), "{read:?}");
    }
    // The refusal is counted once the proxy has seen the connection.
    let refused = || sidecar.metric("agentmesh_inbound_loop_refused_total", &[]);
    for _ in 0..250 {
        if refused() == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(refused(), 1.0);
    assert!(app.received().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn inbound_binds_are_not_opened_as_sockets() {
    let port = support::free_port();
    let app: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _sidecar = Sidecar::start(&config(app)).await;
    assert!(std::net::TcpListener::bind(("0.0.0.0", port)).is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inbound_route_without_backends_reaches_the_app_on_loopback_with_its_policies() {
    let app = TestUpstream::start("app").await;
    let yaml = format!(
        "binds:
- name: inbound-app
  address: 0.0.0.0
  port: {port}
  listeners:
  - name: app
    routes:
    - name: all
      policies:
        requestHeaders: {{ set: [{{ name: x-inbound, value: applied }}] }}
sidecar:
  inbound: {{ enabled: true }}
  inboundBinds: [inbound-app]
",
        port = app.addr.port()
    );
    let sidecar = Sidecar::start(&yaml).await;
    // Sent to the pod address, where nothing listens: only the app on loopback answers.
    let tcp = sidecar.connect_inbound(pod(app.addr.port())).await;
    let resp = exchange(tcp, "agent.ns.svc", "/tasks").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("x-upstream: app"), "{resp}");
    let seen = app.received().pop().unwrap();
    assert_eq!(seen.headers["x-inbound"], "applied");
    assert_eq!(seen.path_and_query, "/tasks");
}
