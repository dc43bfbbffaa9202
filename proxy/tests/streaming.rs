//! Streaming, upgrades and upstream protocols, seen from a client of the real binary:
//! server-sent events arrive event by event, request bodies stream both ways, WebSocket
//! upgrades tunnel, backends are reached over h2c, TLS (CA, SNI, mTLS, ALPN) and pooled
//! keep-alive connections.
#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use support::upstream::TestUpstream;
use support::{Proxy, client, free_port, simple_config};

/// Upper bound for any single step a test waits on.
const STEP: Duration = Duration::from_secs(10);

/// A route named `name` sending everything to backend `backend`.
fn route_all(name: &str, backend: &str) -> String {
    format!("    - name: {name}\n      backends:\n      - backend: {backend}")
}

/// A plain `host` backend.
fn host_backend(name: &str, addr: SocketAddr) -> String {
    format!("- name: {name}\n  host: {{ address: \"{addr}\" }}")
}

/// Starts a proxy with one route to one plain backend; returns it and its address.
fn proxy_to(up: &TestUpstream) -> (Proxy, SocketAddr) {
    let port = free_port();
    let proxy = Proxy::start(&simple_config(
        port,
        &route_all("all", &up.name),
        &host_backend(&up.name, up.addr),
    ));
    (proxy, format!("127.0.0.1:{port}").parse().unwrap())
}

/// An HTTP/1.1 connection to `addr` driven in the background, for requests whose body
/// type the shared clients do not support (streaming bodies).
async fn h1_connection<B>(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// The next data frame of `body` (skipping trailers), or `None` at the end; bounded.
async fn next_data(body: &mut Incoming) -> Option<Bytes> {
    loop {
        let frame = tokio::time::timeout(STEP, body.frame())
            .await
            .expect("no frame within the step limit")?
            .unwrap();
        if let Ok(data) = frame.into_data() {
            return Some(data);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_events_arrive_one_by_one_without_buffering() {
    let up = TestUpstream::start("sse").await;
    let (proxy, addr) = proxy_to(&up);
    let mut sender = h1_connection::<Empty<Bytes>>(addr).await;
    let req = Request::get("/sse?n=5&interval_ms=300")
        .header("host", "example.com")
        .body(Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(STEP, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let head_at = Instant::now();
    assert_eq!(resp.status(), 200, "{}", proxy.logs());
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let mut body = resp.into_body();
    let mut text = String::new();
    // When each event was first complete in what the client had read.
    let mut arrivals: Vec<Duration> = Vec::new();
    while let Some(data) = next_data(&mut body).await {
        text.push_str(std::str::from_utf8(&data).unwrap());
        while arrivals.len() < 5 && text.contains(&format!("data: event {}\n\n", arrivals.len())) {
            arrivals.push(head_at.elapsed());
        }
    }
    assert_eq!(arrivals.len(), 5, "events seen: {text:?}");
    // The upstream sends event 0 at once and event 4 1200 ms later: a buffering proxy
    // would deliver them together at the end.
    assert!(
        arrivals[0] < Duration::from_millis(250),
        "first event after {:?}",
        arrivals[0]
    );
    assert!(
        arrivals[4] > Duration::from_millis(900),
        "last event after {:?}",
        arrivals[4]
    );
    for pair in arrivals.windows(2) {
        assert!(
            pair[1] - pair[0] > Duration::from_millis(150),
            "events bunched together: {arrivals:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_streams_to_an_h2c_client_too() {
    let up = TestUpstream::start("sse").await;
    let (proxy, addr) = proxy_to(&up);
    let req = Request::get(format!("http://{addr}/sse?n=3&interval_ms=400"))
        .header("host", "example.com")
        .body(Full::<Bytes>::default())
        .unwrap();
    let resp = tokio::time::timeout(STEP, client::h2c().request(req))
        .await
        .unwrap()
        .unwrap();
    let head_at = Instant::now();
    assert_eq!(resp.status(), 200, "{}", proxy.logs());
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let mut body = resp.into_body();
    let first = next_data(&mut body).await.unwrap();
    assert!(
        head_at.elapsed() < Duration::from_millis(250),
        "first event after {:?}",
        head_at.elapsed()
    );
    assert!(
        std::str::from_utf8(&first)
            .unwrap()
            .contains("data: event 0")
    );
    let mut rest = String::new();
    while let Some(data) = next_data(&mut body).await {
        rest.push_str(std::str::from_utf8(&data).unwrap());
    }
    assert!(rest.contains("data: event 2"), "{rest:?}");
    assert!(head_at.elapsed() > Duration::from_millis(700));
}

#[tokio::test(flavor = "multi_thread")]
async fn request_body_streams_up_while_the_echo_streams_back() {
    let up = TestUpstream::start("echo").await;
    let (proxy, addr) = proxy_to(&up);
    assert_streaming_echo(&proxy, addr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn request_body_streams_both_ways_through_an_http2_backend() {
    let up = TestUpstream::start("echo").await;
    let port = free_port();
    let backends = format!(
        "- name: echo\n  host: {{ address: \"{}\", protocol: HTTP2 }}",
        up.addr
    );
    let proxy = Proxy::start(&simple_config(port, &route_all("all", "echo"), &backends));
    assert_streaming_echo(&proxy, format!("127.0.0.1:{port}").parse().unwrap()).await;
    assert_eq!(up.received()[0].version, http::Version::HTTP_2);
}

/// Uploads four chunks 100 ms apart to `/stream-echo` and checks each comes back before
/// the next is sent.
async fn assert_streaming_echo(proxy: &Proxy, addr: SocketAddr) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    let body = StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let mut sender = h1_connection(addr).await;
    let req = Request::post("/stream-echo")
        .header("host", "example.com")
        .body(body)
        .unwrap();
    tx.send(Ok(Frame::data(Bytes::from("chunk-0;"))))
        .await
        .unwrap();
    // The response head must come back while the upload is still open.
    let resp = tokio::time::timeout(STEP, sender.send_request(req))
        .await
        .expect("no response head while the request body is still open")
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", proxy.logs());
    let mut body = resp.into_body();
    let mut echoed = String::new();
    for i in 0..4 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send(Ok(Frame::data(Bytes::from(format!("chunk-{i};")))))
                .await
                .unwrap();
        }
        // Chunk i comes back before chunk i+1 is even sent.
        let want = format!("chunk-{i};");
        while !echoed.ends_with(&want) {
            let data = next_data(&mut body)
                .await
                .unwrap_or_else(|| panic!("body ended before {want}; got {echoed:?}"));
            echoed.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    drop(tx);
    while let Some(data) = next_data(&mut body).await {
        echoed.push_str(std::str::from_utf8(&data).unwrap());
    }
    assert_eq!(echoed, "chunk-0;chunk-1;chunk-2;chunk-3;");
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrade_echoes_text_and_binary_and_counts_the_101() {
    let up = TestUpstream::start("ws").await;
    let (proxy, addr) = proxy_to(&up);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut ws, resp) = tokio::time::timeout(
        STEP,
        tokio_tungstenite::client_async("ws://example.com/ws", tcp),
    )
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("handshake failed: {e}\n{}", proxy.logs()));
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers().get("x-upstream").unwrap(), "ws");

    ws.send(Message::text("hello through the mesh"))
        .await
        .unwrap();
    let got = tokio::time::timeout(STEP, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, Message::text("hello through the mesh"));

    let bytes: Vec<u8> = (0..=255).collect();
    ws.send(Message::binary(bytes.clone())).await.unwrap();
    let got = tokio::time::timeout(STEP, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, Message::binary(bytes));
    ws.close(None).await.unwrap();
    drop(ws);
    // The tunnel's upstream connection is released once both sides have closed.
    assert!(
        support::eventually(STEP, || proxy.metric(
            "agentmesh_upstream_connections_active",
            &[("backend", "ws")]
        ) == 0.0
            && proxy.metric(
                "agentmesh_downstream_connections_active",
                &[("bind", "main")]
            ) == 0.0),
        "{}",
        proxy.metrics_text()
    );

    assert!(
        support::eventually(STEP, || proxy.metric(
            "agentmesh_requests_total",
            &[("route", "main/http/all"), ("status_class", "1xx")]
        ) == 1.0),
        "{}",
        proxy.metrics_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_backend_is_reached_with_prior_knowledge_from_an_http1_client() {
    let up = TestUpstream::start("h2").await;
    let port = free_port();
    let backends = format!(
        "- name: h2\n  host: {{ address: \"{}\", protocol: HTTP2 }}",
        up.addr
    );
    // One serving thread: each keeps its own upstream connections (tests/workers.rs), so
    // "one HTTP/2 connection" holds per thread.
    let proxy = Proxy::start_with(
        &simple_config(port, &route_all("all", "h2"), &backends),
        &["--worker-threads", "1"],
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let got = client::get(addr, "example.com", "/anything").await;
    assert_eq!(got.status, 200, "{}", proxy.logs());
    assert_eq!(got.version, http::Version::HTTP_11);
    let echo = got.json();
    assert_eq!(echo["version"], "HTTP/2.0");
    assert_eq!(echo["path"], "/anything");
    assert_eq!(up.received()[0].version, http::Version::HTTP_2);

    // Concurrent requests are multiplexed on the one HTTP/2 connection.
    let slow: Vec<_> = (0..8)
        .map(|_| tokio::spawn(client::get(addr, "example.com", "/delay/200")))
        .collect();
    for request in slow {
        assert_eq!(request.await.unwrap().status, 200);
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sequential_requests_reuse_one_upstream_connection() {
    let up = TestUpstream::start("pooled").await;
    let (proxy, addr) = proxy_to(&up);
    let http = client::http1();
    for i in 0..20 {
        let req = Request::get(format!("http://{addr}/n/{i}"))
            .header("host", "example.com")
            .body(Full::default())
            .unwrap();
        let got = client::send(&http, req).await;
        assert_eq!(got.status, 200, "{}", proxy.logs());
    }
    let connections = up.connections.load(Ordering::SeqCst);
    assert!(
        connections <= 2,
        "20 sequential requests opened {connections} upstream connections"
    );
    assert_eq!(
        proxy.metric(
            "agentmesh_upstream_connections_total",
            &[("backend", "pooled")]
        ),
        connections as f64
    );
}

/// A CA, a server leaf for `up.test` and a client leaf, as PEM files in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca("agentmesh test ca");
        let other_ca = new_ca("some other ca");
        let leaf = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![name.to_owned()])
                .unwrap()
                .signed_by(&key, &*ca)
                .unwrap();
            (cert, key)
        };
        let (server_cert, server_key) = leaf("up.test");
        let (client_cert, client_key) = leaf("agent.test");
        let write = |file: &str, pem: String| std::fs::write(dir.path().join(file), pem).unwrap();
        write("ca.pem", ca.pem());
        write("other-ca.pem", other_ca.pem());
        write("client.pem", client_cert.pem());
        write("client-key.pem", client_key.serialize_pem());
        Pki {
            ca: ca.der().clone(),
            server_chain: vec![server_cert.der().clone()],
            server_key: server_key.serialize_der(),
            dir,
        }
    }

    fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    /// Server TLS for `up.test` offering `alpn`; requires a client certificate from the
    /// test CA when `mtls`.
    fn server_config(&self, alpn: &[&[u8]], mtls: bool) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if mtls {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca.clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::Pkcs8(self.server_key.clone().into());
        let mut config = builder
            .with_single_cert(self.server_chain.clone(), key)
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A TLS upstream answering every request with JSON: the HTTP version it saw, the SNI and
/// whether the client presented a certificate.
async fn start_tls_upstream(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (_, session) = tls.get_ref();
                let sni = session.server_name().unwrap_or("").to_owned();
                let client_cert = session.peer_certificates().is_some();
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let doc = serde_json::json!({
                        "version": format!("{:?}", req.version()),
                        "sni": sni,
                        "clientCert": client_cert,
                        "path": req.uri().path(),
                    });
                    async move {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(doc.to_string()))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_to_the_backend_verifies_ca_and_sni_presents_client_cert_and_negotiates_h2() {
    let pki = Pki::new();
    let plain = start_tls_upstream(pki.server_config(&[b"http/1.1"], false)).await;
    let mtls = start_tls_upstream(pki.server_config(&[b"http/1.1"], true)).await;
    let alpn = start_tls_upstream(pki.server_config(&[b"h2", b"http/1.1"], false)).await;
    let (ca, other_ca) = (pki.path("ca.pem"), pki.path("other-ca.pem"));
    let (cert, key) = (pki.path("client.pem"), pki.path("client-key.pem"));
    let routes = ["ok", "wrongca", "wrongname", "mtls", "alpn"]
        .map(|r| {
            format!(
                "    - name: {r}\n      matches: [{{ path: {{ prefix: /{r} }} }}]\n      backends:\n      - backend: {r}"
            )
        })
        .join("\n");
    let backends = format!(
        "- name: ok\n  host: {{ address: \"{plain}\", tls: {{ caFile: \"{ca}\", sni: up.test }} }}\n\
         - name: wrongca\n  host: {{ address: \"{plain}\", tls: {{ caFile: \"{other_ca}\", sni: up.test }} }}\n\
         - name: wrongname\n  host: {{ address: \"{plain}\", tls: {{ caFile: \"{ca}\", sni: other.test }} }}\n\
         - name: mtls\n  host: {{ address: \"{mtls}\", tls: {{ caFile: \"{ca}\", sni: up.test, certFile: \"{cert}\", keyFile: \"{key}\" }} }}\n\
         - name: alpn\n  host: {{ address: \"{alpn}\", protocol: AUTO, tls: {{ caFile: \"{ca}\", sni: up.test }} }}"
    );
    let port = free_port();
    let proxy = Proxy::start(&simple_config(port, &routes, &backends));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let got = client::get(addr, "example.com", "/ok").await;
    assert_eq!(got.status, 200, "{}\n{}", got.body, proxy.logs());
    assert_eq!(got.json()["sni"], "up.test");
    assert_eq!(got.json()["version"], "HTTP/1.1");

    let got = client::get(addr, "example.com", "/wrongca").await;
    assert_eq!(got.status, 503, "{}", got.body);
    assert!(
        proxy.metric(
            "agentmesh_upstream_connect_errors_total",
            &[("backend", "wrongca")]
        ) >= 1.0
    );

    let got = client::get(addr, "example.com", "/wrongname").await;
    assert_eq!(got.status, 503, "{}", got.body);

    let got = client::get(addr, "example.com", "/mtls").await;
    assert_eq!(got.status, 200, "{}\n{}", got.body, proxy.logs());
    assert_eq!(got.json()["clientCert"], true);

    let got = client::get(addr, "example.com", "/alpn").await;
    assert_eq!(got.status, 200, "{}\n{}", got.body, proxy.logs());
    assert_eq!(got.json()["version"], "HTTP/2.0");
}
