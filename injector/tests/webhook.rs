//! The webhook over real HTTPS: an AdmissionReview posted to `/inject` comes back with a
//! patch, `/healthz` answers, a rotated certificate is served without a restart, and the
//! metrics count what happened.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agentmesh_injector::tls::TlsSource;
use agentmesh_injector::{Injector, Settings, metrics, webhook};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

/// Writes a fresh self-signed certificate for `localhost` and returns its DER.
fn write_cert(dir: &Path) -> CertificateDer<'static> {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    std::fs::write(dir.join("tls.key"), generated.signing_key.serialize_pem()).expect("key");
    std::fs::write(dir.join("tls.crt"), generated.cert.pem()).expect("cert");
    generated.cert.der().clone()
}

struct Answer {
    status: u16,
    body: Vec<u8>,
    server_cert: CertificateDer<'static>,
}

/// One HTTPS request trusting `trusted`.
async fn request(
    addr: std::net::SocketAddr,
    trusted: &CertificateDer<'static>,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Answer {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake");
    let server_cert = tls.get_ref().1.peer_certificates().expect("peer")[0].clone();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http");
    tokio::spawn(connection);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let response = sender.send_request(req).await.expect("response");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Answer {
        status,
        body,
        server_cert: server_cert.into_owned(),
    }
}

fn review(uid: &str, annotations: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "agents",
            "operation": "CREATE",
            "userInfo": {},
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "agent", "annotations": annotations},
                "spec": {"containers": [{"name": "agent", "image": "agent:1"}]}
            }
        }
    }))
    .expect("json")
}

#[tokio::test]
async fn webhook_serves_reviews_health_and_rotated_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = write_cert(dir.path());
    let injector = Arc::new(Injector::new(Settings::for_controller_namespace(
        "agentmesh-system",
    )));
    let mut registry = Registry::default();
    injector.metrics().register(&mut registry);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(webhook::serve(
        listener,
        TlsSource::dir(dir.path()),
        injector.clone(),
    ));

    let health = request(addr, &first, "GET", "/healthz", vec![]).await;
    assert_eq!((health.status, health.body.as_slice()), (200, &b"ok\n"[..]));

    let answer = request(addr, &first, "POST", "/inject", review("u-1", json!({}))).await;
    assert_eq!(answer.status, 200);
    let answer: Value = serde_json::from_slice(&answer.body).expect("json");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], "u-1");
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    assert!(answer["response"]["patch"].is_string());

    let denied = request(
        addr,
        &first,
        "POST",
        "/inject",
        review("u-2", json!({"agentmesh.dev/iptables-mode": "ebpf"})),
    )
    .await;
    let denied: Value = serde_json::from_slice(&denied.body).expect("json");
    assert_eq!(denied["response"]["allowed"], false);
    let message = denied["response"]["status"]["message"]
        .as_str()
        .unwrap_or("");
    assert!(message.contains("agentmesh.dev/iptables-mode"), "{message}");
    assert_eq!(denied["response"]["status"]["code"], 400);

    let garbage = request(addr, &first, "POST", "/inject", b"{not json".to_vec()).await;
    assert_eq!(garbage.status, 400);
    let wrong = request(addr, &first, "GET", "/inject", vec![]).await;
    assert_eq!(wrong.status, 405);

    // Rotation: new files, same paths; the next handshakes get the new certificate.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = write_cert(dir.path());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after = request(addr, &second, "GET", "/healthz", vec![]).await;
    assert_eq!(after.status, 200);
    assert_eq!(after.server_cert, second);
    assert_ne!(after.server_cert, first);

    let text = metrics::encode(&registry);
    assert!(
        text.contains("agentmesh_injector_injected_total 1"),
        "{text}"
    );
    assert!(
        text.contains("agentmesh_injector_denied_total{reason=\"invalid_annotation\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("agentmesh_injector_denied_total{reason=\"malformed_request\"} 1"),
        "{text}"
    );
    server.abort();
}

#[tokio::test]
async fn a_missing_certificate_fails_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let injector = Arc::new(Injector::new(Settings::for_controller_namespace("m")));
    let err = webhook::serve(listener, TlsSource::dir(dir.path()), injector)
        .await
        .expect_err("no certificate");
    assert!(err.to_string().contains("tls.crt"), "{err}");
}

#[tokio::test]
async fn metrics_endpoint_serves_the_counters() {
    let injector = Injector::new(Settings::for_controller_namespace("agentmesh-system"));
    let mut registry = Registry::default();
    injector.metrics().register(&mut registry);
    // One skipped pod: a pod that opts out.
    let body = review("u-3", json!({}));
    let mut value: Value = serde_json::from_slice(&body).expect("json");
    value["request"]["object"]["metadata"]["labels"] = json!({"agentmesh.dev/inject": "disabled"});
    injector
        .review_json(&serde_json::to_vec(&value).expect("json"))
        .expect("answer");

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(metrics::serve(listener, Arc::new(registry)));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("http");
    tokio::spawn(connection);
    let req = http::Request::builder()
        .uri("/metrics")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = sender.send_request(req).await.expect("response");
    assert_eq!(response.status(), 200);
    let text = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("agentmesh_injector_skipped_total{reason=\"opted_out\"} 1"),
        "{text}"
    );
    server.abort();
}
