//! Sidecar egress TLS modes, in process: `INTERCEPT` (the sidecar terminates the app's
//! TLS with a leaf minted from the mesh CA, applies policies to the decrypted HTTP and
//! re-encrypts to the real server) and `ORIGINATE` (the app speaks plain HTTP, the
//! sidecar opens TLS and verifies the server).
//!
//! Real parts: an rcgen-made mesh CA, an upstream with its own CA (a rustls front that
//! decrypts and hands the bytes to a recording HTTP upstream), rustls clients that trust
//! only what an app would trust.
#![allow(clippy::unwrap_used, missing_docs)]

mod sidecar_support;
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sidecar_support::{Sidecar, exchange};
use support::upstream::TestUpstream;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

/// A CA made for the test: its PEM file and what signs leaves.
struct TestCa {
    cert_file: PathBuf,
    key_file: PathBuf,
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn new(dir: &Path, name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        let cert_file = dir.join(format!("{name}.crt"));
        let key_file = dir.join(format!("{name}.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        TestCa {
            cert_file,
            key_file,
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server config for `names`, signed by this CA, offering h2 and http/1.1.
    fn server_config(&self, names: &[&str]) -> rustls::ServerConfig {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let leaf = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }

    /// A client config trusting only this CA.
    fn client_config(&self, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server for `names` (certificate from `ca`) that decrypts and hands the bytes to
/// `upstream`: a real HTTPS server whose requests `upstream` records.
async fn tls_front(ca: &TestCa, names: &[&str], upstream: SocketAddr) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(ca.server_config(names)));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

/// The app side of intercepted TLS: connects through the capture to `dst` with `sni`,
/// trusting only `trust`.
async fn app_tls(
    sidecar: &Sidecar,
    dst: SocketAddr,
    sni: &str,
    trust: &TestCa,
    alpn: &[&str],
) -> TlsStream<TcpStream> {
    let tcp = sidecar.connect(dst).await;
    let connector = tokio_rustls::TlsConnector::from(trust.client_config(alpn));
    let name = ServerName::try_from(sni.to_string()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .expect("handshake within 10s")
        .unwrap()
}

/// DNS names of the leaf the app was served.
fn leaf_names(tls: &TlsStream<TcpStream>) -> Vec<String> {
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    webpki::EndEntityCert::try_from(&leaf)
        .unwrap()
        .valid_dns_names()
        .map(str::to_string)
        .collect()
}

/// The parts of one test: a mesh CA, an upstream CA, a recording upstream behind TLS.
struct World {
    _dir: tempfile::TempDir,
    mesh: TestCa,
    upstream_ca: TestCa,
    upstream: TestUpstream,
    front: SocketAddr,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let mesh = TestCa::new(dir.path(), "mesh-ca");
    let upstream_ca = TestCa::new(dir.path(), "upstream-ca");
    let upstream = TestUpstream::start("real-api").await;
    let front = tls_front(&upstream_ca, &["api.test", "other.test"], upstream.addr).await;
    World {
        _dir: dir,
        mesh,
        upstream_ca,
        upstream,
        front,
    }
}

/// A sidecar config: an outbound bind on the front's port serving `api.test` with a
/// header policy and a TLS backend to the front, a mesh CA, `DENY` by default, and `rules`
/// (YAML lines indented by 2).
fn config(w: &World, rules: &str) -> String {
    format!(
        "binds:
- name: egress-tls
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
backends:
- name: api
  host:
    address: \"{front}\"
    tls: {{ caFile: \"{upstream_ca}\", sni: api.test }}
sidecar:
  outboundBinds: [egress-tls]
  outboundDefault: DENY
  meshCa: {{ certFile: \"{mesh_cert}\", keyFile: \"{mesh_key}\" }}
  egress:
{rules}
",
        port = w.front.port(),
        front = w.front,
        upstream_ca = w.upstream_ca.cert_file.display(),
        mesh_cert = w.mesh.cert_file.display(),
        mesh_key = w.mesh.key_file.display(),
    )
}

fn intercept_rule(w: &World) -> String {
    format!(
        "  - {{ name: api, hostnames: [api.test, other.test], tls: INTERCEPT, caFile: \"{}\" }}",
        w.upstream_ca.cert_file.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn intercepted_tls_gets_a_mesh_leaf_and_the_sidecars_policies() {
    let w = world().await;
    let sidecar = Sidecar::start(&config(&w, &intercept_rule(&w))).await;

    // The app trusts only the mesh CA, and is served a leaf for exactly its SNI.
    let tls = app_tls(&sidecar, w.front, "api.test", &w.mesh, &["http/1.1"]).await;
    assert_eq!(leaf_names(&tls), ["api.test"]);
    let resp = exchange(tls, "api.test", "/v1/chat").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("x-upstream: real-api"), "{resp}");
    // The policy acted on the decrypted request, which reached the real server over TLS.
    let seen = w.upstream.received().pop().unwrap();
    assert_eq!(seen.headers["x-sidecar"], "applied");
    assert_eq!(seen.path_and_query, "/v1/chat");

    // A second connection for the same name reuses the minted leaf.
    let tls = app_tls(&sidecar, w.front, "api.test", &w.mesh, &["http/1.1"]).await;
    let resp = exchange(tls, "api.test", "/again").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let leaf = |r| {
        sidecar.metric(
            "agentmesh_mesh_ca_leaf_certificates_total",
            &[("result", r)],
        )
    };
    assert_eq!(leaf("minted"), 1.0);
    assert_eq!(leaf("cached"), 1.0);
    assert_eq!(
        sidecar.metric(
            "agentmesh_outbound_tls_connections_total",
            &[("mode", "intercept")]
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn intercepted_h2_no_bind_serves_is_re_encrypted_to_the_real_server() {
    let w = world().await;
    let sidecar = Sidecar::start(&config(&w, &intercept_rule(&w))).await;
    // other.test: no listener of the bind serves it, so it goes to the original
    // destination over TLS the sidecar opens (verifying the real server), unchanged.
    let tls = app_tls(
        &sidecar,
        w.front,
        "other.test",
        &w.mesh,
        &["h2", "http/1.1"],
    )
    .await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://other.test/models")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream"], "real-api");
    let seen = w.upstream.received().pop().unwrap();
    assert_eq!(seen.path_and_query, "/models");
    assert!(seen.headers.get("x-sidecar").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn originate_sends_plain_http_on_over_verified_tls() {
    let w = world().await;
    let rule = format!(
        "  - {{ name: other, hostnames: [other.test], tls: ORIGINATE, caFile: \"{}\" }}",
        w.upstream_ca.cert_file.display()
    );
    let sidecar = Sidecar::start(&config(&w, &rule)).await;
    // The app calls http://other.test:<port>/ in plain text; the server speaks only TLS.
    let resp = sidecar.http_get(w.front, "other.test", "/plain").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("x-upstream: real-api"), "{resp}");
    let seen = w.upstream.received().pop().unwrap();
    assert_eq!(seen.path_and_query, "/plain");
    assert_eq!(seen.headers["host"], "other.test");
    assert_eq!(
        sidecar.metric("agentmesh_outbound_tls_originated_requests_total", &[]),
        1.0
    );
    // api.test on the same port is served by the outbound bind: its policy applies and
    // its TLS backend reaches the server.
    let resp = sidecar.http_get(w.front, "api.test", "/bound").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(
        w.upstream.received().pop().unwrap().headers["x-sidecar"],
        "applied"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn originate_to_a_server_the_ca_does_not_vouch_for_is_a_clear_503() {
    let w = world().await;
    // The rule trusts the mesh CA, which did not sign the real server's certificate.
    let rule = format!(
        "  - {{ name: other, hostnames: [other.test], tls: ORIGINATE, caFile: \"{}\" }}",
        w.mesh.cert_file.display()
    );
    let sidecar = Sidecar::start(&config(&w, &rule)).await;
    let resp = sidecar.http_get(w.front, "other.test", "/").await;
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    assert!(
        resp.contains(&format!(
            "cannot connect to other.test ({}) over TLS (verifying \"other.test\")",
            w.front
        )),
        "{resp}"
    );
    assert!(resp.contains("certificate"), "{resp}");
    assert!(w.upstream.received().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_config_mistakes_are_refused_naming_the_field() {
    let w = world().await;
    let metrics = agentmesh_proxy::telemetry::Metrics::new();
    let ctx = agentmesh_proxy::app::compile_context(&metrics);
    let compile = |yaml: &str| {
        let parsed = agentmesh_proxy::config::file::parse(yaml, false).unwrap();
        agentmesh_proxy::config::compile(agentmesh_proxy::config::file::flatten(parsed), &ctx)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let no_ca = "sidecar:\n  egress:\n  - { hostnames: [a.test], tls: INTERCEPT }\n";
    let err = compile(no_ca);
    assert!(
        err.contains("egress[0].tls") && err.contains("meshCa"),
        "{err}"
    );
    let deny = "sidecar:\n  egress:\n  - { hostnames: [a.test], action: DENY, tls: ORIGINATE }\n";
    assert!(compile(deny).contains("needs action ALLOW"));
    let bad_key = format!(
        "sidecar:\n  meshCa: {{ certFile: \"{}\", keyFile: \"{}\" }}\n",
        w.mesh.cert_file.display(),
        w.upstream_ca.key_file.display()
    );
    let err = compile(&bad_key);
    assert!(err.contains("meshCa.keyFile"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_intercepted_route_without_backends_is_re_encrypted_to_the_real_server() {
    let w = world().await;
    // The outbound bind's only route has a policy and no backend: decrypted requests get
    // the header, then go on to where the app was going, over TLS verified by `caFile`.
    let yaml = config(&w, &intercept_rule(&w)).replace("      backends: [{ backend: api }]\n", "");
    assert!(!yaml.contains("backend: api }]"), "{yaml}");
    let sidecar = Sidecar::start(&yaml).await;
    let tls = app_tls(&sidecar, w.front, "api.test", &w.mesh, &["http/1.1"]).await;
    let resp = exchange(tls, "api.test", "/v1/chat/completions").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("x-upstream: real-api"), "{resp}");
    let seen = w.upstream.received().pop().unwrap();
    assert_eq!(seen.headers["x-sidecar"], "applied");
    assert_eq!(seen.path_and_query, "/v1/chat/completions");
    assert_eq!(
        sidecar.metric(
            "agentmesh_requests_total",
            &[
                ("route", "egress-tls/api/all"),
                ("backend", "passthrough-tls")
            ]
        ),
        1.0
    );
}

/// Sends one keep-alive `GET path` on `io` and returns the response head and body.
async fn keep_alive_get<IO>(io: &mut IO, path: &str) -> String
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET {path} HTTP/1.1\r\nHost: api.test\r\n\r\n");
    io.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = io.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "closed mid-response: {}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    return text;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a response within 10s")
}

/// Allowed TLS passed through untouched (no rule intercepts, the default allows).
fn passthrough_config() -> String {
    "sidecar:\n  outboundDefault: ALLOW\n".to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_waits_for_a_passed_through_tls_tunnel_until_it_closes() {
    let w = world().await;
    let sidecar = Sidecar::start(&passthrough_config()).await;
    // The app sees the real server's certificate: the TLS is passed through.
    let mut tls = app_tls(&sidecar, w.front, "api.test", &w.upstream_ca, &["http/1.1"]).await;
    let resp = keep_alive_get(&mut tls, "/one").await;
    assert!(resp.contains("x-upstream: real-api"), "{resp}");

    let listeners = sidecar.listeners.clone();
    let drain = tokio::spawn(async move { listeners.drain(Duration::from_secs(600)).await });
    // New captured connections are refused once the drain starts...
    let capture = sidecar.capture.local_addrs()[0];
    let mut refused = false;
    for _ in 0..500 {
        if TcpStream::connect(capture).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the capture listener still accepts while draining");
    // ...while the open tunnel keeps working, and the drain waits for it.
    let resp = keep_alive_get(&mut tls, "/two").await;
    assert!(resp.contains("x-upstream: real-api"), "{resp}");
    assert!(
        !drain.is_finished(),
        "the drain must wait for the open tunnel"
    );
    assert_eq!(w.upstream.count("/two"), 1);
    // The app closes it: the drain ends with nothing left open.
    drop(tls);
    let left = tokio::time::timeout(Duration::from_secs(30), drain)
        .await
        .expect("the drain ends once the tunnel closed")
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn at_the_drain_deadline_a_passed_through_tls_tunnel_is_closed() {
    use tokio::io::AsyncReadExt;
    let w = world().await;
    let sidecar = Sidecar::start(&passthrough_config()).await;
    let mut tls = app_tls(&sidecar, w.front, "api.test", &w.upstream_ca, &["http/1.1"]).await;
    let resp = keep_alive_get(&mut tls, "/one").await;
    assert!(resp.contains("x-upstream: real-api"), "{resp}");
    let left = sidecar.listeners.drain(Duration::from_millis(200)).await;
    assert_eq!(left, 1, "the open tunnel is still open at the deadline");
    // The tunnel is cut: the app's next read ends instead of waiting for the server.
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
        .await
        .expect("the tunnel is closed within 10s of the deadline");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}
