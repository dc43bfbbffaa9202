//! Tests of the upstream client against real local servers: plain and TLS, HTTP/1.1 and
//! HTTP/2, with certificates made by rcgen for each test.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use agentmesh_proto::config::v1::UpstreamTls;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::*;
use crate::http::body;

/// A local HTTP server counting the TCP connections it accepted.
struct TestServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

/// Starts a server speaking HTTP/1.1 and HTTP/2 (prior knowledge or ALPN), over TLS when
/// `tls` is set. Every response says what the server saw in `x-*` headers, and a request
/// with `Upgrade` gets a 101 and an echo tunnel.
async fn start_server(tls: Option<Arc<rustls::ServerConfig>>) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve_connection(tcp, false).await,
                    Some(config) => {
                        let Ok(stream) = TlsAcceptor::from(config).accept(tcp).await else {
                            return;
                        };
                        let client_cert = stream.get_ref().1.peer_certificates().is_some();
                        serve_connection(stream, client_cert).await;
                    }
                }
            });
        }
    });
    TestServer { addr, accepted }
}

/// The length of the body the test server sends for `/big`.
const BIG_BODY: usize = 8 << 20;

async fn serve_connection<I>(io: I, client_cert: bool)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |mut req: Request<Incoming>| async move {
        let seen = |value: Option<&str>| value.unwrap_or("-").to_owned();
        let response = Response::builder()
            .header(
                "x-host",
                seen(
                    req.headers()
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok()),
                ),
            )
            .header(
                "x-authority",
                seen(req.uri().authority().map(Authority::as_str)),
            )
            .header(
                "x-path",
                seen(req.uri().path_and_query().map(PathAndQuery::as_str)),
            )
            .header("x-version", format!("{:?}", req.version()))
            .header("x-client-cert", client_cert.to_string());
        let response = if req.headers().contains_key(header::UPGRADE) {
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                let mut tunnel = TokioIo::new(upgraded);
                let mut buf = [0u8; 4];
                if tunnel.read_exact(&mut buf).await.is_ok() {
                    let _ = tunnel.write_all(&buf).await;
                }
            });
            response
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(header::CONNECTION, "upgrade")
                .header(header::UPGRADE, "echo")
                .body(Full::new(Bytes::new()))
        } else if req.uri().path() == "/big" {
            // More than socket buffers hold: the connection stays busy until it is read.
            response.body(Full::new(Bytes::from(vec![b'x'; BIG_BODY])))
        } else {
            response.body(Full::new(Bytes::from_static(b"hello")))
        };
        Ok::<_, Infallible>(response.expect("response"))
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await;
}

fn backend(addr: SocketAddr, protocol: UpstreamProtocol, tls: Option<UpstreamTls>) -> HostBackend {
    HostBackend {
        address: addr.to_string(),
        protocol: protocol as i32,
        tls,
    }
}

fn get(host: &str, path: &str) -> Request<Body> {
    Request::builder()
        .uri(path)
        .header(header::HOST, host)
        .body(body::empty())
        .expect("request")
}

fn seen(response: &Response<Incoming>, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<missing>")
        .to_owned()
}

async fn body_of(response: Response<Incoming>) -> Bytes {
    response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
}

/// Polls `condition` for up to five seconds.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A CA, a server leaf for `backend.test` and a client leaf, with the PEM files the
/// client config names.
struct Pki {
    dir: PathBuf,
    ca: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
}

impl Pki {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "agentmesh-upstream-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "agentmesh test ca");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
            .expect("ca");
        let leaf = |name: &str| {
            let key = KeyPair::generate().expect("leaf key");
            let cert = CertificateParams::new(vec![name.to_owned()])
                .expect("leaf params")
                .signed_by(&key, &*ca)
                .expect("leaf");
            (cert, key)
        };
        let (server_cert, server_key) = leaf("backend.test");
        let (client_cert, client_key) = leaf("agent.test");

        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca");
        std::fs::write(dir.join("client.pem"), client_cert.pem()).expect("write cert");
        std::fs::write(dir.join("client-key.pem"), client_key.serialize_pem()).expect("write key");
        Self {
            dir,
            ca: ca.der().clone(),
            server_chain: vec![server_cert.der().clone()],
            server_key: server_key.serialize_der(),
        }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// Client TLS trusting the test CA, with the given SNI.
    fn client_tls(&self, sni: &str) -> UpstreamTls {
        UpstreamTls {
            ca_file: self.path("ca.pem"),
            sni: sni.to_owned(),
            ..UpstreamTls::default()
        }
    }

    /// Server TLS for `backend.test` offering `alpn`, requiring a client certificate
    /// from the test CA when `require_client_cert`.
    fn server_config(
        &self,
        alpn: &[&[u8]],
        require_client_cert: bool,
    ) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = if require_client_cert {
            let mut roots = RootCertStore::empty();
            roots.add(self.ca.clone()).expect("ca root");
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::Pkcs8(self.server_key.clone().into());
        let mut config = builder
            .with_single_cert(self.server_chain.clone(), key)
            .expect("server cert");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Counts connections opened, closed (guard dropped) and failed.
#[derive(Default)]
struct CountingObserver {
    opened: AtomicUsize,
    closed: Arc<AtomicUsize>,
    failed: AtomicUsize,
}

struct CloseGuard(Arc<AtomicUsize>);

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl ConnectionObserver for CountingObserver {
    fn opened(&self, backend: &str) -> Box<dyn Send + Sync> {
        assert_eq!(backend, "be");
        self.opened.fetch_add(1, Ordering::SeqCst);
        Box::new(CloseGuard(self.closed.clone()))
    }

    fn connect_failed(&self, backend: &str) {
        assert_eq!(backend, "be");
        self.failed.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn http1_keeps_host_header_and_reuses_the_connection() {
    let server = start_server(None).await;
    let client = UpstreamClient::new(
        "be",
        &backend(server.addr, UpstreamProtocol::Auto, None),
        None,
    )
    .expect("client");

    for _ in 0..2 {
        // Give the connection a moment to return to the pool: the pool races a checkout
        // against a new connect, and a connect already started would be kept as a spare.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let response = client
            .send(get("api.example:8080", "/a?b=1"))
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(seen(&response, "x-version"), "HTTP/1.1");
        assert_eq!(seen(&response, "x-host"), "api.example:8080");
        assert_eq!(seen(&response, "x-path"), "/a?b=1");
        assert_eq!(body_of(response).await, "hello");
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn http2_prior_knowledge_sends_host_as_authority() {
    let server = start_server(None).await;
    let client = UpstreamClient::new(
        "be",
        &backend(server.addr, UpstreamProtocol::Http2, None),
        None,
    )
    .expect("client");

    let (first, second) = tokio::join!(
        client.send(get("api.example", "/one")),
        client.send(get("api.example", "/two"))
    );
    for response in [first.expect("first"), second.expect("second")] {
        assert_eq!(seen(&response, "x-version"), "HTTP/2.0");
        assert_eq!(seen(&response, "x-authority"), "api.example");
        assert_eq!(body_of(response).await, "hello");
    }
    assert_eq!(
        server.accepted.load(Ordering::SeqCst),
        1,
        "streams share one connection"
    );
}

#[tokio::test]
async fn tls_verifies_the_server_against_ca_file_and_sni() {
    let pki = Pki::new();
    let server = start_server(Some(pki.server_config(&[b"http/1.1"], false))).await;
    let spec = backend(
        server.addr,
        UpstreamProtocol::Http1,
        Some(pki.client_tls("backend.test")),
    );
    let client = UpstreamClient::new("be", &spec, None).expect("client");

    let response = client
        .send(get("backend.test", "/"))
        .await
        .expect("response");
    assert_eq!(seen(&response, "x-version"), "HTTP/1.1");
    assert_eq!(seen(&response, "x-client-cert"), "false");
}

#[tokio::test]
async fn tls_trusts_an_inline_ca_pem_like_a_ca_file() {
    let pki = Pki::new();
    let server = start_server(Some(pki.server_config(&[b"http/1.1"], false))).await;
    let inline = UpstreamTls {
        ca_file: String::new(),
        ca_pem: std::fs::read_to_string(pki.path("ca.pem")).expect("ca pem"),
        ..pki.client_tls("backend.test")
    };
    let spec = backend(server.addr, UpstreamProtocol::Http1, Some(inline.clone()));
    let client = UpstreamClient::new("be", &spec, None).expect("client");
    let response = client
        .send(get("backend.test", "/"))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);

    // Both at once, or PEM without a certificate: refused, naming tls.caPem.
    for tls in [
        UpstreamTls {
            ca_file: pki.path("ca.pem"),
            ..inline.clone()
        },
        UpstreamTls {
            ca_pem: "not pem".to_owned(),
            ..inline
        },
    ] {
        let spec = backend(server.addr, UpstreamProtocol::Http1, Some(tls));
        let err = UpstreamClient::new("be", &spec, None).expect_err("refused");
        assert_eq!(err.field(), "tls.caPem", "{err}");
    }
}

#[tokio::test]
async fn tls_with_a_name_the_certificate_lacks_is_a_connect_error() {
    let pki = Pki::new();
    let server = start_server(Some(pki.server_config(&[b"http/1.1"], false))).await;
    let observer = Arc::new(CountingObserver::default());
    let spec = backend(
        server.addr,
        UpstreamProtocol::Auto,
        Some(pki.client_tls("other.test")),
    );
    let client = UpstreamClient::new("be", &spec, Some(observer.clone())).expect("client");

    let err = client
        .send(get("other.test", "/"))
        .await
        .expect_err("wrong name");
    assert_eq!(err.kind(), UpstreamErrorKind::Connect, "{err}");
    assert!(!err.possibly_sent());
    assert_eq!(observer.failed.load(Ordering::SeqCst), 1);

    let insecure = UpstreamTls {
        sni: "other.test".to_owned(),
        insecure_skip_verify: true,
        ..UpstreamTls::default()
    };
    let spec = backend(server.addr, UpstreamProtocol::Auto, Some(insecure));
    let client = UpstreamClient::new("be", &spec, None).expect("client");
    let response = client
        .send(get("other.test", "/"))
        .await
        .expect("skip verify");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn mtls_presents_the_client_certificate() {
    let pki = Pki::new();
    let server = start_server(Some(pki.server_config(&[b"http/1.1"], true))).await;
    let tls = UpstreamTls {
        cert_file: pki.path("client.pem"),
        key_file: pki.path("client-key.pem"),
        ..pki.client_tls("backend.test")
    };
    let client = UpstreamClient::new(
        "be",
        &backend(server.addr, UpstreamProtocol::Auto, Some(tls)),
        None,
    )
    .expect("client");

    let response = client
        .send(get("backend.test", "/"))
        .await
        .expect("response");
    assert_eq!(seen(&response, "x-client-cert"), "true");
}

#[tokio::test]
async fn auto_uses_http2_when_alpn_negotiates_it() {
    let pki = Pki::new();
    let server = start_server(Some(pki.server_config(&[b"h2", b"http/1.1"], false))).await;
    let spec = backend(
        server.addr,
        UpstreamProtocol::Auto,
        Some(pki.client_tls("backend.test")),
    );
    let client = UpstreamClient::new("be", &spec, None).expect("client");

    let response = client
        .send(get("api.example", "/"))
        .await
        .expect("response");
    assert_eq!(seen(&response, "x-version"), "HTTP/2.0");
    assert_eq!(seen(&response, "x-authority"), "api.example");
}

#[tokio::test]
async fn refused_connection_is_a_connect_error_never_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let observer = Arc::new(CountingObserver::default());
    let client = UpstreamClient::new(
        "be",
        &backend(addr, UpstreamProtocol::Auto, None),
        Some(observer.clone()),
    )
    .expect("client");

    let err = client
        .send(get("api.example", "/"))
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), UpstreamErrorKind::Connect, "{err}");
    assert!(!err.possibly_sent());
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    assert_eq!(observer.failed.load(Ordering::SeqCst), 1);
    assert_eq!(observer.opened.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn connection_closed_after_the_request_head_is_a_reset() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let Ok((mut tcp, _)) = listener.accept().await else {
            return;
        };
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        drop(tcp);
    });
    let client = UpstreamClient::new("be", &backend(addr, UpstreamProtocol::Auto, None), None)
        .expect("client");

    let err = client
        .send(get("api.example", "/"))
        .await
        .expect_err("closed");
    assert_eq!(err.kind(), UpstreamErrorKind::Reset, "{err}");
    assert!(err.possibly_sent());
}

#[tokio::test]
async fn observer_guard_is_dropped_when_the_server_closes_the_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let service = service_fn(|_req: Request<Incoming>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"bye"))))
        });
        // Without keep-alive the server closes the connection after one response.
        let _ = hyper::server::conn::http1::Builder::new()
            .keep_alive(false)
            .serve_connection(TokioIo::new(tcp), service)
            .await;
    });
    let observer = Arc::new(CountingObserver::default());
    let client = UpstreamClient::new(
        "be",
        &backend(addr, UpstreamProtocol::Auto, None),
        Some(observer.clone()),
    )
    .expect("client");

    let response = client
        .send(get("api.example", "/"))
        .await
        .expect("response");
    assert_eq!(body_of(response).await, "bye");
    assert_eq!(observer.opened.load(Ordering::SeqCst), 1);
    eventually("the guard to drop", || {
        observer.closed.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn upgraded_connection_tunnels_bytes_and_keeps_its_guard() {
    let server = start_server(None).await;
    let observer = Arc::new(CountingObserver::default());
    let client = UpstreamClient::new(
        "be",
        &backend(server.addr, UpstreamProtocol::Auto, None),
        Some(observer.clone()),
    )
    .expect("client");

    let mut request = get("api.example", "/ws");
    request.headers_mut().insert(
        header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    request
        .headers_mut()
        .insert(header::UPGRADE, http::HeaderValue::from_static("echo"));
    let mut response = client.send(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);

    let upgraded = hyper::upgrade::on(&mut response).await.expect("upgrade");
    let mut tunnel = TokioIo::new(upgraded);
    tunnel.write_all(b"ping").await.expect("write");
    let mut echoed = [0u8; 4];
    tunnel.read_exact(&mut echoed).await.expect("read");
    assert_eq!(&echoed, b"ping");
    assert_eq!(
        observer.closed.load(Ordering::SeqCst),
        0,
        "tunnel holds the guard"
    );

    drop(tunnel);
    eventually("the guard to drop", || {
        observer.closed.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[test]
fn invalid_specs_name_the_field() {
    let spec = |address: &str, tls: Option<UpstreamTls>| HostBackend {
        address: address.to_owned(),
        protocol: 0,
        tls,
    };
    let err = UpstreamClient::new("be", &spec("foo", None), None).expect_err("no port");
    assert_eq!(err.to_string(), r#"address: "foo" is not host:port"#);

    let half = UpstreamTls {
        cert_file: "/x/cert.pem".to_owned(),
        ..UpstreamTls::default()
    };
    let err = UpstreamClient::new("be", &spec("a:443", Some(half)), None).expect_err("half");
    assert_eq!(
        err.to_string(),
        "tls.certFile and tls.keyFile must be set together"
    );

    let missing = UpstreamTls {
        ca_file: "/nonexistent/ca.pem".to_owned(),
        ..UpstreamTls::default()
    };
    let err = UpstreamClient::new("be", &spec("a:443", Some(missing)), None).expect_err("missing");
    assert_eq!(err.field(), "tls.caFile");
    assert!(
        err.to_string()
            .starts_with("tls.caFile: cannot read /nonexistent/ca.pem: "),
        "{err}"
    );

    let mut bad_protocol = spec("a:443", None);
    bad_protocol.protocol = 42;
    let err = UpstreamClient::new("be", &bad_protocol, None).expect_err("protocol");
    assert_eq!(err.to_string(), "protocol: unknown value 42");

    assert!(UpstreamClient::new("be", &spec("[::1]:8443", None), None).is_ok());
}

#[test]
fn pool_reuses_the_client_of_an_unchanged_backend() {
    let pool = UpstreamPool::new(None);
    let spec = HostBackend {
        address: "127.0.0.1:8080".to_owned(),
        ..HostBackend::default()
    };
    let first = pool.client("be", &spec).expect("client");
    let again = pool.client("be", &spec).expect("client");
    assert!(Arc::ptr_eq(&first, &again));

    let changed = HostBackend {
        protocol: UpstreamProtocol::Http2 as i32,
        ..spec.clone()
    };
    let rebuilt = pool.client("be", &changed).expect("client");
    assert!(!Arc::ptr_eq(&first, &rebuilt));

    pool.client("other", &spec).expect("client");
    assert_eq!(pool.len(), 2);
    pool.retain(|name| name != "other");
    assert_eq!(pool.len(), 1);
}

#[tokio::test]
async fn a_connection_busy_with_a_response_body_is_not_shared_and_is_reused_after() {
    let server = start_server(None).await;
    let client = UpstreamClient::new(
        "be",
        &backend(server.addr, UpstreamProtocol::Auto, None),
        None,
    )
    .expect("client");

    // The first response's body is not read yet: its connection cannot take a request.
    let first = client.send(get("a", "/big")).await.expect("first");
    let second = client.send(get("a", "/2")).await.expect("second");
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(body_of(first).await.len(), BIG_BODY);
    assert_eq!(body_of(second).await, "hello");
    assert_eq!(client.pool.parked(), 2);

    // Both are idle again once their bodies are read: no third connection.
    for path in ["/3", "/4", "/5"] {
        eventually("a parked connection to be ready", || {
            client.pool.has_ready()
        })
        .await;
        let response = client.send(get("a", path)).await.expect("response");
        assert_eq!(seen(&response, "x-path"), path);
        assert_eq!(body_of(response).await, "hello");
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_replaced() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"once"))))
                });
                // Answers one request without saying it will close, then closes: what a
                // server's idle timeout does to a pooled connection.
                let mut conn = std::pin::pin!(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                );
                let _ = tokio::time::timeout(Duration::from_millis(200), conn.as_mut()).await;
            });
        }
    });
    let observer = Arc::new(CountingObserver::default());
    let client = UpstreamClient::new(
        "be",
        &backend(addr, UpstreamProtocol::Auto, None),
        Some(observer.clone()),
    )
    .expect("client");

    let response = client.send(get("a", "/")).await.expect("first");
    assert_eq!(body_of(response).await, "once");
    eventually("the server to close the idle connection", || {
        observer.closed.load(Ordering::SeqCst) == 1
    })
    .await;
    let response = client.send(get("a", "/")).await.expect("second");
    assert_eq!(body_of(response).await, "once");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}
