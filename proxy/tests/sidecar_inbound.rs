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
    let own = sidecar.inbound_addr(None).await;
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

/// A TCP echo server on loopback (the app's non-HTTP port); echoes until the client
/// half-closes, then closes.
async fn echo_server() -> SocketAddr {
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
    echo
}

/// Writes `msg` and reads the same number of bytes back.
async fn echo_round(tcp: &mut tokio::net::TcpStream, msg: &[u8]) -> Vec<u8> {
    tcp.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut back))
        .await
        .expect("echo within 10s")
        .unwrap();
    back
}

/// Whether the peer closed or reset `tcp` (instead of answering).
async fn refused(mut tcp: tokio::net::TcpStream) -> bool {
    let _ = tcp.write_all(b"\x00\x01hello?").await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("an answer or a close within 10s");
    matches!(read, Err(_) | Ok(0))
}

/// `config(app)` with `inboundDefault: DENY`, and a second inbound bind for `db`'s port
/// (a non-HTTP port the app serves, let through because a bind lists it).
fn deny_config(app: SocketAddr, db: SocketAddr) -> String {
    let with_db = format!(
        "binds:
- name: inbound-db
  address: 0.0.0.0
  port: {}
  listeners: [{{ name: db }}]
",
        db.port()
    );
    config(app).replacen("binds:\n", &with_db, 1).replace(
        "  inboundBinds: [inbound-app]\n",
        "  inboundBinds: [inbound-app, inbound-db]\n  inboundDefault: DENY\n",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn inbound_default_deny_refuses_http_no_inbound_bind_serves_with_403() {
    let app = TestUpstream::start("app").await;
    let other = TestUpstream::start("other-port").await;
    let db = echo_server().await;
    let sidecar = Sidecar::start(&deny_config(app.addr, db)).await;
    // A port no inbound bind has.
    let tcp = sidecar.connect_inbound(pod(other.addr.port())).await;
    let resp = exchange(tcp, "agent.ns.svc", "/health").await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(
        resp.contains(&format!(
            "inbound traffic to agent.ns.svc (port {}) is denied",
            other.addr.port()
        )),
        "{resp}"
    );
    assert!(other.received().is_empty());
    // The inbound bind's port still reaches the app through its routes.
    let tcp = sidecar.connect_inbound(pod(app.addr.port())).await;
    let resp = exchange(tcp, "agent.ns.svc", "/tasks").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(
        app.received().pop().unwrap().headers["x-inbound"],
        "applied"
    );
    assert_eq!(
        sidecar.metric("agentmesh_inbound_denied_total", &[("protocol", "http1")]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn inbound_default_deny_resets_tcp_to_ports_no_inbound_bind_lists() {
    let app = TestUpstream::start("app").await;
    let db = echo_server().await;
    let unlisted = echo_server().await;
    let sidecar = Sidecar::start(&deny_config(app.addr, db)).await;
    let tcp = sidecar.connect_inbound(pod(unlisted.port())).await;
    assert!(refused(tcp).await, "an unlisted port must be reset");
    // A port an inbound bind lists gets through byte for byte.
    let mut tcp = sidecar.connect_inbound(pod(db.port())).await;
    assert_eq!(echo_round(&mut tcp, b"\x00\x01db").await, b"\x00\x01db");
    assert_eq!(
        sidecar.metric("agentmesh_inbound_denied_total", &[("protocol", "opaque")]),
        1.0
    );
}

#[test]
fn an_unknown_inbound_default_is_rejected_naming_the_field() {
    let yaml = "sidecar:\n  inboundDefault: MAYBE\n";
    let err = agentmesh_proxy::config::file::parse(yaml, false).unwrap_err();
    assert!(err.to_string().contains("inboundDefault"), "{err}");
}

/// A sidecar config with inbound capture `on` or off, whose inbound bind is on `port`.
fn switch_config(port: u16, on: bool) -> String {
    format!(
        "binds:
- name: inbound-app
  address: 0.0.0.0
  port: {port}
  listeners:
  - name: app
    routes:
    - name: all
      policies:
        requestHeaders: {{ set: [{{ name: x-inbound, value: port-{port} }}] }}
sidecar:
  inbound: {{ enabled: {on} }}
  inboundBinds: [inbound-app]
"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn inbound_capture_follows_reloads_keeping_open_connections_and_outbound() {
    let app = TestUpstream::start("app").await;
    let app2 = TestUpstream::start("app2").await;
    let outside = TestUpstream::start("outside").await;
    let echo = echo_server().await;
    let sidecar = Sidecar::start(&switch_config(app.addr.port(), false)).await;
    assert!(sidecar.inbound.local_addrs().is_empty(), "off at start");

    // Turned on by a reload: the listener opens and serves with the bind's policies.
    sidecar.reload(&switch_config(app.addr.port(), true));
    let first = sidecar.inbound_addr(None).await;
    let tcp = sidecar
        .connect_to(first, pod(app.addr.port()))
        .await
        .unwrap();
    let resp = exchange(tcp, "agent.ns.svc", "/on").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let port_header = format!("port-{}", app.addr.port());
    assert_eq!(
        app.received().pop().unwrap().headers["x-inbound"],
        port_header
    );
    // A long-lived inbound connection, open across the next reload.
    let mut held = sidecar.connect_to(first, pod(echo.port())).await.unwrap();
    assert_eq!(echo_round(&mut held, b"before").await, b"before");

    // Turned off: new connections are refused, the open one keeps working, and outbound
    // capture is untouched.
    sidecar.reload(&switch_config(app.addr.port(), false));
    sidecar.inbound_closed().await;
    assert!(
        tokio::net::TcpStream::connect(first).await.is_err(),
        "the inbound port must be closed"
    );
    assert_eq!(echo_round(&mut held, b"after").await, b"after");
    let resp = sidecar.http_get(outside.addr, "outside.test", "/out").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("x-upstream: outside"), "{resp}");

    // On again with the inbound bind moved to another app port: the new port is served
    // by the bind, the old one goes to the app unchanged.
    sidecar.reload(&switch_config(app2.addr.port(), true));
    let again = sidecar.inbound_addr(None).await;
    let tcp = sidecar
        .connect_to(again, pod(app2.addr.port()))
        .await
        .unwrap();
    let resp = exchange(tcp, "agent.ns.svc", "/moved").await;
    assert!(resp.contains("x-upstream: app2"), "{resp}");
    let port_header = format!("port-{}", app2.addr.port());
    assert_eq!(
        app2.received().pop().unwrap().headers["x-inbound"],
        port_header
    );
    let tcp = sidecar
        .connect_to(again, pod(app.addr.port()))
        .await
        .unwrap();
    let resp = exchange(tcp, "agent.ns.svc", "/old").await;
    assert!(resp.contains("x-upstream: app\r\n"), "{resp}");
    assert!(
        app.received()
            .pop()
            .unwrap()
            .headers
            .get("x-inbound")
            .is_none()
    );
    assert_eq!(echo_round(&mut held, b"still").await, b"still");
}

#[test]
fn a_config_file_reload_opens_and_closes_the_inbound_port_of_the_running_binary() {
    let inbound = format!("127.0.0.1:{}", support::free_port());
    let outbound = format!("127.0.0.1:{}", support::free_port());
    let app_port = support::free_port();
    let proxy = support::Proxy::start_with(
        &switch_config(app_port, false),
        &[
            "--mode",
            "sidecar",
            "--inbound-addr",
            &inbound,
            "--outbound-addr",
            &outbound,
        ],
    );
    let open = || std::net::TcpStream::connect(&inbound).is_ok();
    let bound = Duration::from_secs(10);
    assert!(!open(), "inbound capture is off at start");
    proxy.write_config(&switch_config(app_port, true));
    assert!(
        support::eventually(bound, open),
        "a reload turning inbound capture on must open {inbound}; log:\n{}",
        proxy.logs()
    );
    proxy.write_config(&switch_config(app_port, false));
    assert!(
        support::eventually(bound, || !open()),
        "a reload turning it off must close {inbound}; log:\n{}",
        proxy.logs()
    );
    // Outbound capture was never disturbed.
    assert!(std::net::TcpStream::connect(&outbound).is_ok());
    assert!(
        proxy
            .logs()
            .contains("inbound capture turned off by a config change"),
        "{}",
        proxy.logs()
    );
}
