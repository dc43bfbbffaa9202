//! Sidecar mode: the outbound capture path, in process, with real sockets and real
//! upstreams on 127.0.0.1.
//!
//! iptables is replaced by a test `OrigDstSource` (see `sidecar_support`). The
//! real-iptables proof (the binary in a network namespace) is in `sidecar_netns.rs`; TLS
//! originate and intercept are in `sidecar_tls.rs`, inbound capture in
//! `sidecar_inbound.rs`.
#![allow(clippy::unwrap_used, missing_docs)]

mod sidecar_support;
mod support;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sidecar_support::{Sidecar, echo_server};
use support::upstream::TestUpstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A config whose outbound bind `0.0.0.0:{port}` serves `api.test` with a header policy
/// sending to `backend`, plus the given sidecar settings (YAML lines indented by 2).
fn config(port: u16, backend: SocketAddr, sidecar: &str) -> String {
    format!(
        "binds:
- name: egress
  address: 0.0.0.0
  port: {port}
  listeners:
  - name: api
    hostnames: [api.test]
    routes:
    - name: all
      backends: [{{ backend: api }}]
      policies:
        requestHeaders: {{ set: [{{ name: x-sidecar, value: applied }}] }}
    - name: direct
      matches: [{{ path: {{ exact: /direct }} }}]
      policies:
        directResponse: {{ status: 200, body: from the sidecar }}
backends:
- {{ name: api, host: {{ address: \"{backend}\" }} }}
sidecar:
  outboundBinds: [egress]
{sidecar}
"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn captured_http_to_an_outbound_bind_gets_the_sidecars_route_policies() {
    let api = TestUpstream::start("api").await;
    let sidecar = Sidecar::start(&config(8080, api.addr, "  outboundDefault: DENY")).await;
    // The app meant 198.18.0.2:8080; the outbound bind 0.0.0.0:8080 serves that port.
    let dst: SocketAddr = "198.18.0.2:8080".parse().unwrap();
    let resp = sidecar.http_get(dst, "api.test:8080", "/v1/x").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = api
        .requests
        .lock()
        .unwrap()
        .pop()
        .expect("upstream got the request");
    assert_eq!(seen.headers["x-sidecar"], "applied");
    assert_eq!(seen.path_and_query, "/v1/x");

    let resp = sidecar.http_get(dst, "api.test", "/direct").await;
    assert!(resp.ends_with("from the sidecar"), "{resp}");
    assert_eq!(
        sidecar.metric(
            "agentmesh_outbound_connections_total",
            &[("protocol", "http1")]
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unmatched_http_goes_to_its_original_destination_unchanged_under_allow() {
    let api = TestUpstream::start("api").await;
    let elsewhere = TestUpstream::start("elsewhere").await;
    let sidecar = Sidecar::start(&config(8080, api.addr, "  outboundDefault: ALLOW")).await;
    // Another port than the outbound bind's: passthrough to where the app was going.
    let resp = sidecar
        .http_get(elsewhere.addr, "other.test", "/hello?q=1")
        .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("x-upstream: elsewhere"), "{resp}");
    let seen = elsewhere.requests.lock().unwrap().pop().unwrap();
    assert_eq!(seen.path_and_query, "/hello?q=1");
    assert_eq!(seen.headers["host"], "other.test");
    assert!(seen.headers.get("x-sidecar").is_none());
    assert!(api.requests.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn unmatched_http_under_deny_gets_403_naming_the_destination() {
    let api = TestUpstream::start("api").await;
    let elsewhere = TestUpstream::start("elsewhere").await;
    let sidecar = Sidecar::start(&config(8080, api.addr, "  outboundDefault: DENY")).await;
    // Same port as the outbound bind, but a host none of its listeners serves.
    let dst: SocketAddr = format!("127.0.0.1:{}", elsewhere.addr.port())
        .parse()
        .unwrap();
    let resp = sidecar.http_get(dst, "unlisted.test", "/").await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(
        resp.contains(&format!("unlisted.test ({dst}) is denied")),
        "{resp}"
    );
    assert!(elsewhere.requests.lock().unwrap().is_empty());
    assert_eq!(
        sidecar.metric("agentmesh_outbound_denied_total", &[("protocol", "http1")]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_egress_rule_allows_a_host_the_default_denies() {
    let api = TestUpstream::start("api").await;
    let partner = TestUpstream::start("partner").await;
    let rules = "  outboundDefault: DENY\n  egress:\n  - { name: partner, hostnames: [\"*.partner.test\"], action: ALLOW }";
    let sidecar = Sidecar::start(&config(8080, api.addr, rules)).await;
    let ok = sidecar
        .http_get(partner.addr, "api.partner.test", "/")
        .await;
    assert!(ok.contains("x-upstream: partner"), "{ok}");
    let denied = sidecar.http_get(partner.addr, "partner.test", "/").await;
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_passthrough_keeps_http2_to_the_original_destination() {
    let api = TestUpstream::start("api").await;
    let elsewhere = TestUpstream::start("elsewhere").await;
    let sidecar = Sidecar::start(&config(8080, api.addr, "")).await;
    let tcp = sidecar.connect(elsewhere.addr).await;
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("http://grpc.test/svc")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = elsewhere.requests.lock().unwrap().pop().unwrap();
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(
        sidecar.metric(
            "agentmesh_outbound_connections_total",
            &[("protocol", "http2")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn opaque_tcp_is_forwarded_byte_for_byte_with_half_close() {
    let echo = echo_server().await;
    let sidecar = Sidecar::start(&config(8080, echo, "")).await;
    let mut tcp = sidecar.connect(echo).await;
    let payload: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    tcp.write_all(&payload).await.unwrap();
    // Half-close: the echo server sees EOF, sends the rest back, then closes.
    tcp.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, payload);
    assert_eq!(
        sidecar.metric(
            "agentmesh_outbound_connections_total",
            &[("protocol", "opaque")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_speaks_first_protocol_is_forwarded_after_the_detect_timeout() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtp = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = l.accept().await.unwrap();
        tcp.write_all(b"220 smtp.test ready\r\n").await.unwrap();
        let mut line = [0u8; 6];
        tcp.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"QUIT\r\n");
        tcp.write_all(b"221 bye\r\n").await.unwrap();
    });
    let sidecar = Sidecar::start(&config(8080, smtp, "  protocolDetectTimeout: 0.05s")).await;
    let mut tcp = sidecar.connect(smtp).await;
    let mut greeting = [0u8; 21];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut greeting))
        .await
        .expect("the server's greeting arrives")
        .unwrap();
    assert_eq!(&greeting, b"220 smtp.test ready\r\n");
    tcp.write_all(b"QUIT\r\n").await.unwrap();
    let mut rest = String::new();
    tcp.read_to_string(&mut rest).await.unwrap();
    assert_eq!(rest, "221 bye\r\n");
    assert_eq!(
        sidecar.metric(
            "agentmesh_outbound_connections_total",
            &[("protocol", "server_first")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn opaque_tcp_under_deny_is_reset() {
    let echo = echo_server().await;
    let sidecar = Sidecar::start(&config(8080, echo, "  outboundDefault: DENY")).await;
    let mut tcp = sidecar.connect(echo).await;
    tcp.write_all(&[0, 1, 2, 3]).await.unwrap();
    let mut buf = [0u8; 4];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .unwrap();
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionReset)
    );
    assert_eq!(
        sidecar.metric("agentmesh_outbound_denied_total", &[("protocol", "opaque")]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_that_is_the_capture_port_itself_is_refused_as_a_loop() {
    let echo = echo_server().await;
    let sidecar = Sidecar::start(&config(8080, echo, "")).await;
    let own = sidecar.capture.local_addrs()[0];
    if let Ok(mut tcp) = sidecar.try_connect(own).await {
        let _ = tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(read, Err(_) | Ok(0)), "{read:?}");
    }
    // The refusal is counted once the proxy has seen the connection.
    for _ in 0..250 {
        if sidecar.metric("agentmesh_outbound_loop_refused_total", &[]) == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        sidecar.metric("agentmesh_outbound_loop_refused_total", &[]),
        1.0
    );
}

/// A TLS server for `names` (self-signed) that echoes one line back.
async fn tls_echo_server(
    names: &[&str],
) -> (SocketAddr, rustls::pki_types::CertificateDer<'static>) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::generate_simple_self_signed(names).unwrap();
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![der.clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 64];
                if let Ok(n) = tls.read(&mut buf).await {
                    let _ = tls.write_all(&buf[..n]).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    (addr, der)
}

/// A TLS handshake through the capture path with `sni`, then one echoed message.
async fn tls_exchange(
    sidecar: &Sidecar,
    dst: SocketAddr,
    root: &rustls::pki_types::CertificateDer<'static>,
    sni: &str,
) -> io::Result<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = sidecar.connect(dst).await;
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let mut tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .map_err(|_| io::Error::other("handshake timed out"))??;
    tls.write_all(b"hello over tls").await?;
    let mut back = Vec::new();
    tls.read_to_end(&mut back).await?;
    Ok(back)
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_is_passed_through_or_reset_by_its_sni() {
    let (server, root) = tls_echo_server(&["allowed.test", "blocked.test"]).await;
    let rules = "  outboundDefault: DENY\n  egress:\n  - { name: allowed, hostnames: [allowed.test], action: ALLOW }";
    let sidecar = Sidecar::start(&config(8080, server, rules)).await;
    // The proxy does not terminate TLS: the app verifies the real server's certificate.
    let back = tls_exchange(&sidecar, server, &root, "allowed.test")
        .await
        .unwrap();
    assert_eq!(back, b"hello over tls");
    let refused = tls_exchange(&sidecar, server, &root, "blocked.test").await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(
        sidecar.metric(
            "agentmesh_outbound_connections_total",
            &[("protocol", "tls")]
        ),
        2.0
    );
    assert_eq!(
        sidecar.metric("agentmesh_outbound_denied_total", &[("protocol", "tls")]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_binds_are_not_opened_as_sockets() {
    let api = TestUpstream::start("api").await;
    let port = support::free_port();
    let _sidecar = Sidecar::start(&config(port, api.addr, "")).await;
    // The outbound bind's port stays free: it only names captured traffic.
    assert!(std::net::TcpListener::bind(("0.0.0.0", port)).is_ok());
}

/// An outbound bind for `api.test` on `port` whose only route has policies and no
/// backends; `extra` adds sidecar settings (YAML lines indented by 2).
fn original_destination_config(port: u16, extra: &str) -> String {
    format!(
        "binds:
- name: egress
  address: 0.0.0.0
  port: {port}
  listeners:
  - name: api
    hostnames: [api.test]
    routes:
    - name: inject
      policies:
        requestHeaders: {{ set: [{{ name: x-sidecar, value: applied }}] }}
        responseHeaders: {{ set: [{{ name: x-sidecar-response, value: applied }}] }}
        timeouts: {{ request: 5s }}
sidecar:
  outboundBinds: [egress]
  outboundDefault: DENY
{extra}
"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_without_backends_applies_its_policies_then_goes_to_the_original_destination() {
    let api = TestUpstream::start("api").await;
    let sidecar = Sidecar::start(&original_destination_config(api.addr.port(), "")).await;
    // The app meant the api itself; the route names no backend, so that is where it goes,
    // even under `outboundDefault: DENY` (the bind governs this traffic).
    let resp = sidecar.http_get(api.addr, "api.test", "/v1/x?q=1").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("x-upstream: api"), "{resp}");
    assert!(resp.contains("x-sidecar-response: applied"), "{resp}");
    let seen = api.received().pop().expect("the api got the request");
    assert_eq!(seen.headers["x-sidecar"], "applied");
    assert_eq!(seen.headers["host"], "api.test");
    assert_eq!(seen.path_and_query, "/v1/x?q=1");
    assert_eq!(
        sidecar.metric(
            "agentmesh_requests_total",
            &[
                ("route", "egress/api/inject"),
                ("backend", "passthrough"),
                ("status_class", "2xx")
            ]
        ),
        1.0
    );
    // The bind serves the port, not one address: another destination on the same port
    // (nothing listens there) is not sent to the api.
    let elsewhere = SocketAddr::from(([127, 0, 0, 2], api.addr.port()));
    let resp = sidecar.http_get(elsewhere, "api.test", "/v1/y").await;
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    assert_eq!(api.count("/v1/y"), 0);
}

#[test]
fn only_routes_of_capture_binds_may_leave_out_backends() {
    let metrics = agentmesh_proxy::telemetry::Metrics::new();
    let ctx = agentmesh_proxy::app::compile_context(&metrics);
    let compile = |yaml: &str| {
        let parsed = agentmesh_proxy::config::file::parse(yaml, false).unwrap();
        agentmesh_proxy::config::compile(agentmesh_proxy::config::file::flatten(parsed), &ctx)
            .map(|_| ())
    };
    let captured = original_destination_config(8080, "");
    compile(&captured).unwrap();
    // The same bind opened as a socket: a route there still needs a backend.
    let standalone = captured.replace("  outboundBinds: [egress]\n", "");
    let err = compile(&standalone).unwrap_err().to_string();
    assert!(
        err.contains("route \"egress/api/inject\"")
            && err.contains("backends")
            && err.contains("a route needs a backend"),
        "{err}"
    );
}
