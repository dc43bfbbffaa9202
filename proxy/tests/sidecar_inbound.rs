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

use sidecar_support::{Sidecar, echo_server, exchange};
use support::upstream::TestUpstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The pod's address as the remote client saw it.
fn pod(port: u16) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, 9], port))
}

/// The response to `GET path` (Host `agent.ns.svc`) sent by a remote client to the
/// pod's `port`, redirected to the inbound capture listener open now.
async fn get_inbound(sidecar: &Sidecar, port: u16, path: &str) -> String {
    let tcp = sidecar.connect_inbound(pod(port)).await;
    exchange(tcp, "agent.ns.svc", path).await
}

/// As [`get_inbound`], redirected to the inbound capture listener at `listener`.
async fn get_inbound_via(sidecar: &Sidecar, listener: SocketAddr, port: u16, path: &str) -> String {
    let tcp = sidecar.connect_to(listener, pod(port)).await.unwrap();
    exchange(tcp, "agent.ns.svc", path).await
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
    let resp = get_inbound(&sidecar, app.addr.port(), "/tasks").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = app.received().pop().unwrap();
    assert_eq!(seen.headers["x-inbound"], "applied");
    assert_eq!(seen.path_and_query, "/tasks");

    let resp = get_inbound(&sidecar, app.addr.port(), "/admin").await;
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
    let resp = get_inbound(&sidecar, other.addr.port(), "/health").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("x-upstream: other-port"), "{resp}");
    let seen = other.received().pop().unwrap();
    assert!(seen.headers.get("x-inbound").is_none());
    assert_eq!(seen.headers["host"], "agent.ns.svc");
}

#[tokio::test(flavor = "multi_thread")]
async fn inbound_opaque_tcp_reaches_the_app_byte_for_byte() {
    let echo = echo_server().await;
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
    let resp = get_inbound(&sidecar, app.addr.port(), "/tasks").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("x-upstream: app"), "{resp}");
    let seen = app.received().pop().unwrap();
    assert_eq!(seen.headers["x-inbound"], "applied");
    assert_eq!(seen.path_and_query, "/tasks");
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
    let resp = get_inbound(&sidecar, other.addr.port(), "/health").await;
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
    let resp = get_inbound(&sidecar, app.addr.port(), "/tasks").await;
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
    let resp = get_inbound_via(&sidecar, first, app.addr.port(), "/on").await;
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
    let resp = get_inbound_via(&sidecar, again, app2.addr.port(), "/moved").await;
    assert!(resp.contains("x-upstream: app2"), "{resp}");
    let port_header = format!("port-{}", app2.addr.port());
    assert_eq!(
        app2.received().pop().unwrap().headers["x-inbound"],
        port_header
    );
    let resp = get_inbound_via(&sidecar, again, app.addr.port(), "/old").await;
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

/// Forced on (`--inbound-capture`), the inbound listener serves although the config
/// leaves inbound capture off, with the config's inbound binds and their policies, and
/// follows the config's changes of those binds; turning inbound capture off in the
/// config closes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn forced_inbound_capture_serves_with_the_configs_inbound_binds() {
    let app = TestUpstream::start("app").await;
    let app2 = TestUpstream::start("app2").await;
    let sidecar = Sidecar::start_inbound(&switch_config(app.addr.port(), false), true).await;
    let listener = sidecar.inbound_addr(None).await;
    let resp = get_inbound_via(&sidecar, listener, app.addr.port(), "/forced").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let port_header = format!("port-{}", app.addr.port());
    assert_eq!(
        app.received().pop().unwrap().headers["x-inbound"],
        port_header
    );
    // A config change moving the bind: applied, and the listener never closed.
    sidecar.reload(&switch_config(app2.addr.port(), false));
    let port_header = format!("port-{}", app2.addr.port());
    let mut seen = None;
    for _ in 0..250 {
        let resp = get_inbound_via(&sidecar, listener, app2.addr.port(), "/moved").await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        seen = app2
            .received()
            .pop()
            .and_then(|r| r.headers.get("x-inbound").cloned())
            .and_then(|v| v.to_str().ok().map(str::to_string));
        if seen.as_deref() == Some(port_header.as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.as_deref(), Some(port_header.as_str()));
    assert_eq!(sidecar.inbound.local_addrs().first(), Some(&listener));
}

/// `--inbound-capture` (the injector's flag for a pod whose rules redirect inbound TCP):
/// the inbound port of the running binary is open from the start although the config
/// leaves inbound capture off, and no reload closes it.
#[test]
fn with_inbound_capture_the_port_is_open_whatever_the_config_says() {
    let inbound = format!("127.0.0.1:{}", support::free_port());
    let outbound = format!("127.0.0.1:{}", support::free_port());
    let app_port = support::free_port();
    let proxy = support::Proxy::start_with(
        &switch_config(app_port, false),
        &[
            "--mode",
            "sidecar",
            "--inbound-capture",
            "--inbound-addr",
            &inbound,
            "--outbound-addr",
            &outbound,
        ],
    );
    let open = || std::net::TcpStream::connect(&inbound).is_ok();
    assert!(open(), "open at start; log:\n{}", proxy.logs());
    // On, then off again, each reload applied: still open (a close would have been
    // logged and taken effect by the time the next reload is done).
    let reloads = |n: usize| {
        assert!(
            support::eventually(Duration::from_secs(10), || {
                proxy.logs().matches("config reloaded").count() >= n
            }),
            "reload {n} not applied; log:\n{}",
            proxy.logs()
        );
    };
    proxy.write_config(&switch_config(app_port, true));
    reloads(1);
    proxy.write_config(&switch_config(app_port, false));
    reloads(2);
    proxy.write_config(&switch_config(app_port + 1, false));
    reloads(3);
    assert!(open(), "no config closes it; log:\n{}", proxy.logs());
    assert!(
        !proxy.logs().contains("inbound capture turned off"),
        "{}",
        proxy.logs()
    );
}

/// Before the controller's first config (none ever comes here), the inbound port is
/// already open while readiness says not ready: a pod whose rules redirect inbound TCP
/// never finds it closed once the proxy runs. Nothing is let through meanwhile (here,
/// without iptables, the connection has no redirected destination at all; with one, the
/// inbound default of the waiting config, DENY, refuses it).
#[test]
fn with_inbound_capture_and_xds_the_port_is_open_before_the_first_config() {
    let inbound: std::net::SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let ready: std::net::SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let free = |_| format!("127.0.0.1:{}", support::free_port());
    let (outbound, admin, metrics, controller) = (free(0), free(1), free(2), free(3));
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agentmesh-proxy"))
        .args(["--mode", "sidecar", "--inbound-capture"])
        .args(["--xds", &format!("http://{controller}")])
        .args(["--inbound-addr", &inbound.to_string()])
        .args(["--outbound-addr", &outbound])
        .args(["--admin-addr", &admin, "--metrics-addr", &metrics])
        .args(["--ready-addr", &ready.to_string()])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let logs = || std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    let serving = support::eventually(Duration::from_secs(10), || {
        support::client::blocking_get(ready, "/healthz/ready").is_some()
    });
    let status = support::client::blocking_get(ready, "/healthz/ready");
    // Open, and no answer from an app.
    let got = std::net::TcpStream::connect(inbound).map(|mut tcp| {
        use std::io::{Read, Write};
        let _ = tcp.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n");
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
        let mut got = Vec::new();
        let _ = tcp.read_to_end(&mut got);
        got
    });
    let alive = child.try_wait().ok().flatten().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(serving, "readiness never answered; log:\n{}", logs());
    assert_ne!(status.map(|s| s.0), Some(200), "{}", logs());
    assert!(alive, "{}", logs());
    let got = got.unwrap_or_else(|e| panic!("{inbound} is not open: {e}\n{}", logs()));
    assert!(
        !String::from_utf8_lossy(&got).contains(" 200 "),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn inbound_capture_is_refused_outside_sidecar_mode() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentmesh-proxy"))
        .args(["--config", "/nonexistent.yaml", "--inbound-capture"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--inbound-capture is for --mode sidecar"),
        "{err}"
    );
}
