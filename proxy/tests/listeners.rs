//! Listeners from a client's point of view: HTTP/1.1 and h2c on one plain port, TLS
//! termination with certificates chosen by SNI and ALPN-negotiated HTTP versions, several
//! binds in one process, and a clear startup error for a broken certificate path.
//!
//! Clients are real ones we did not write where it matters (curl for h2c, TLS and ALPN),
//! plus hyper and a rustls client that reports which certificate the proxy served.
#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::Full;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use support::client;
use support::upstream::TestUpstream;
use support::{Proxy, free_port};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn backend_yaml(up: &TestUpstream) -> String {
    format!(
        "- {{ name: {}, host: {{ address: \"{}\" }} }}\n",
        up.name, up.addr
    )
}

/// What curl printed: the status line, headers and body on stdout, the `-v` trace on stderr.
struct CurlRun {
    status_line: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    trace: String,
}

impl CurlRun {
    /// The HTTP version of the response, as curl's status line spells it (`HTTP/2`).
    fn version(&self) -> &str {
        self.status_line
            .split_whitespace()
            .next()
            .unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Runs curl verbosely (`-sS -i -v`, 10 s limit); panics with its trace when it fails.
fn curl_verbose(args: &[&str]) -> CurlRun {
    let out = Command::new("curl")
        .args(["-sS", "-i", "-v", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl missing: run scripts/install-test-deps.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let trace = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "curl {args:?} failed:\n{trace}");
    let (head, body) = stdout.split_once("\r\n\r\n").unwrap_or((&stdout, ""));
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    CurlRun {
        status_line,
        status,
        headers,
        body: body.to_string(),
        trace,
    }
}

/// A private CA and leaf certificates it signed, as PEM files in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "agentmesh test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues a leaf for `names`; returns (certificate file, key file).
    fn leaf(&self, file_stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0].clone());
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let cert_file = self.dir.path().join(format!("{file_stem}.crt"));
        let key_file = self.dir.path().join(format!("{file_stem}.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }
}

fn cert_yaml((cert, key): &(PathBuf, PathBuf)) -> String {
    format!(
        "{{ certFile: \"{}\", keyFile: \"{}\" }}",
        cert.display(),
        key.display()
    )
}

/// Accepts any server certificate (signatures are still checked), so a test can look at
/// what was served even when it would not verify for the name asked.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What a TLS handshake with the proxy showed.
#[derive(Debug)]
struct Handshake {
    /// DNS names of the leaf certificate served.
    names: Vec<String>,
    /// The ALPN protocol chosen.
    alpn: Option<String>,
}

/// Handshakes with `addr`, sending `sni` (none when `None`) and offering `alpn`.
async fn handshake(addr: SocketAddr, sni: Option<&str>, alpn: &[&str]) -> Handshake {
    let provider = Arc::new(ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    // An IP address as the server name means no SNI extension.
    let name = match sni {
        Some(s) => ServerName::try_from(s.to_string()).unwrap(),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake timed out")
    .unwrap();
    let conn = tls.get_ref().1;
    let leaf = conn.peer_certificates().unwrap()[0].clone();
    let names = webpki::EndEntityCert::try_from(&leaf)
        .unwrap()
        .valid_dns_names()
        .map(str::to_string)
        .collect();
    Handshake {
        names,
        alpn: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).to_string()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http1_and_h2c_prior_knowledge_are_served_on_one_plain_listener() {
    let plain = TestUpstream::start("plain").await;
    let named = TestUpstream::start("named").await;
    let port = free_port();
    let yaml = format!(
        "binds:
- name: main
  address: 127.0.0.1
  port: {port}
  listeners:
  - name: named
    hostnames: [h2.test]
    routes:
    - {{ name: all, backends: [{{ backend: named }}] }}
  - name: rest
    routes:
    - {{ name: all, backends: [{{ backend: plain }}] }}
backends:
{}{}",
        backend_yaml(&plain),
        backend_yaml(&named)
    );
    // One serving thread, so every client connection shares one upstream pool (each
    // thread has its own: tests/workers.rs).
    let proxy = Proxy::start_with(&yaml, &["--worker-threads", "1"]);
    let logs = || proxy.logs();

    // HTTP/1.1 (hyper).
    let req = |path: &str| {
        Request::post(format!("http://127.0.0.1:{port}{path}"))
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap()
    };
    let got = client::send(&client::http1(), req("/one?v=1")).await;
    assert_eq!(got.status, 200, "{}", logs());
    assert_eq!(got.version, Version::HTTP_11);
    assert_eq!(got.header("x-upstream"), Some("plain"));
    let echo = got.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/one");
    assert_eq!(echo["query"]["v"], "1");
    assert_eq!(echo["body"], "hello");

    // HTTP/2 with prior knowledge (hyper), several streams on one connection.
    let h2 = client::h2c();
    for i in 0..3 {
        let got = client::send(&h2, req(&format!("/two/{i}"))).await;
        assert_eq!(got.status, 200, "{}", logs());
        assert_eq!(got.version, Version::HTTP_2);
        assert_eq!(got.header("x-upstream"), Some("plain"));
        let echo = got.json();
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["path"], format!("/two/{i}"));
        assert_eq!(echo["body"], "hello");
        // HTTP/2 carries the host as `:authority`; the upstream still gets a Host header.
        assert_eq!(echo["headers"]["host"], format!("127.0.0.1:{port}"));
    }
    assert_eq!(plain.connections.load(Ordering::SeqCst), 1);

    // HTTP/2 with prior knowledge (curl); the listener is chosen by `:authority`.
    let resolve = format!("h2.test:{port}:127.0.0.1");
    let run = curl_verbose(&[
        "--http2-prior-knowledge",
        "--resolve",
        &resolve,
        &format!("http://h2.test:{port}/three"),
    ]);
    assert_eq!(
        (run.version(), run.status),
        ("HTTP/2", 200),
        "{}",
        run.trace
    );
    assert_eq!(run.header("x-upstream"), Some("named"));
    assert_eq!(run.json()["path"], "/three");
    assert_eq!(run.json()["headers"]["host"], format!("h2.test:{port}"));

    // And curl over HTTP/1.1 to the same port.
    let (status, headers, body) = client::curl(&[&format!("http://127.0.0.1:{port}/four")]);
    assert_eq!(status, 200);
    assert!(headers.contains(&("x-upstream".into(), "plain".into())));
    assert!(body.contains("\"/four\""), "{body}");
}

/// Starts a proxy with one HTTPS bind whose listeners are given as YAML.
fn https_proxy(port: u16, listeners: &str, ups: &[&TestUpstream]) -> Proxy {
    let backends: String = ups.iter().map(|u| backend_yaml(u)).collect();
    Proxy::start(&format!(
        "binds:
- name: tls
  address: 127.0.0.1
  port: {port}
  listeners:
{listeners}
backends:
{backends}"
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_termination_serves_the_certificate_for_the_sni_and_negotiates_alpn() {
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.test"]);
    let b = pki.leaf("b", &["*.b.test"]);
    let up = TestUpstream::start("secure").await;
    let port = free_port();
    let listeners = format!(
        "  - name: https
    protocol: HTTPS
    tls:
      certificates:
      - {}
      - {}
    routes:
    - {{ name: all, backends: [{{ backend: secure }}] }}",
        cert_yaml(&a),
        cert_yaml(&b)
    );
    let proxy = https_proxy(port, &listeners, &[&up]);
    let ca = pki.ca_file();
    let ca = ca.to_str().unwrap();

    // A real client that verifies the certificate against the CA, for each name.
    for (host, path) in [("a.test", "/a"), ("x.b.test", "/b")] {
        let resolve = format!("{host}:{port}:127.0.0.1");
        let url = format!("https://{host}:{port}{path}?q=1");
        let run = curl_verbose(&["--cacert", ca, "--resolve", &resolve, &url]);
        assert_eq!(run.status, 200, "{}\n{}", run.trace, proxy.logs());
        assert_eq!(run.header("x-upstream"), Some("secure"));
        let echo = run.json();
        assert_eq!(echo["path"], path);
        assert_eq!(echo["query"]["q"], "1");
        assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
        assert_eq!(echo["headers"]["host"], format!("{host}:{port}"));
    }

    // Which certificate was served, by SNI.
    let served = |sni| handshake(addr(port), sni, &["h2", "http/1.1"]);
    assert_eq!(served(Some("a.test")).await.names, ["a.test"]);
    assert_eq!(served(Some("A.TEST")).await.names, ["a.test"]);
    assert_eq!(served(Some("x.b.test")).await.names, ["*.b.test"]);
    assert_eq!(served(Some("y.b.test")).await.names, ["*.b.test"]);
    // No SNI, or a name no certificate has: the first certificate is the default.
    assert_eq!(served(None).await.names, ["a.test"]);
    assert_eq!(served(Some("b.test")).await.names, ["a.test"]);
    assert_eq!(served(Some("other.test")).await.names, ["a.test"]);

    // ALPN: h2 when the client offers it, HTTP/1.1 otherwise.
    assert_eq!(
        handshake(addr(port), Some("a.test"), &["h2", "http/1.1"])
            .await
            .alpn
            .as_deref(),
        Some("h2")
    );
    assert_eq!(
        handshake(addr(port), Some("a.test"), &["http/1.1"])
            .await
            .alpn
            .as_deref(),
        Some("http/1.1")
    );
    let resolve = format!("a.test:{port}:127.0.0.1");
    let url = format!("https://a.test:{port}/alpn");
    let h2 = curl_verbose(&["--http2", "--cacert", ca, "--resolve", &resolve, &url]);
    assert_eq!((h2.version(), h2.status), ("HTTP/2", 200), "{}", h2.trace);
    assert_eq!(h2.json()["path"], "/alpn");
    let h1 = curl_verbose(&["--http1.1", "--cacert", ca, "--resolve", &resolve, &url]);
    assert_eq!((h1.version(), h1.status), ("HTTP/1.1", 200), "{}", h1.trace);
    assert_eq!(h1.json()["path"], "/alpn");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_listeners_on_one_bind_each_serve_their_certificate_and_routes() {
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.test"]);
    let b = pki.leaf("b", &["*.b.test"]);
    let up_a = TestUpstream::start("up-a").await;
    let up_b = TestUpstream::start("up-b").await;
    let port = free_port();
    let listeners = format!(
        "  - name: a
    hostnames: [a.test]
    protocol: HTTPS
    tls: {{ certificates: [{}] }}
    routes:
    - {{ name: all, backends: [{{ backend: up-a }}] }}
  - name: b
    hostnames: ['*.b.test']
    protocol: HTTPS
    tls: {{ certificates: [{}] }}
    routes:
    - {{ name: all, backends: [{{ backend: up-b }}] }}",
        cert_yaml(&a),
        cert_yaml(&b)
    );
    let proxy = https_proxy(port, &listeners, &[&up_a, &up_b]);
    let ca = pki.ca_file();
    let ca = ca.to_str().unwrap();
    for (host, want, http) in [
        ("a.test", "up-a", "--http2"),
        ("x.b.test", "up-b", "--http2"),
        ("a.test", "up-a", "--http1.1"),
        ("x.b.test", "up-b", "--http1.1"),
    ] {
        let resolve = format!("{host}:{port}:127.0.0.1");
        let url = format!("https://{host}:{port}/");
        let run = curl_verbose(&[http, "--cacert", ca, "--resolve", &resolve, &url]);
        assert_eq!(run.status, 200, "{}\n{}", run.trace, proxy.logs());
        assert_eq!(run.header("x-upstream"), Some(want), "{host}");
    }
    let served = |sni| handshake(addr(port), Some(sni), &["h2"]);
    assert_eq!(served("a.test").await.names, ["a.test"]);
    assert_eq!(served("z.b.test").await.names, ["*.b.test"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn several_binds_in_one_process_each_serve_their_own_routes() {
    let one = TestUpstream::start("one").await;
    let two = TestUpstream::start("two").await;
    let (p1, p2) = (free_port(), free_port());
    let yaml = format!(
        "binds:
- name: first
  address: 127.0.0.1
  port: {p1}
  listeners:
  - name: http
    routes:
    - {{ name: one, matches: [{{ path: {{ prefix: /one }} }}], backends: [{{ backend: one }}] }}
- name: second
  address: 127.0.0.1
  port: {p2}
  listeners:
  - name: http
    routes:
    - {{ name: two, matches: [{{ path: {{ prefix: /two }} }}], backends: [{{ backend: two }}] }}
backends:
{}{}",
        backend_yaml(&one),
        backend_yaml(&two)
    );
    let proxy = Proxy::start(&yaml);
    let got = client::get(addr(p1), "example.com", "/one/x").await;
    assert_eq!(got.status, 200, "{}", proxy.logs());
    assert_eq!(got.header("x-upstream"), Some("one"));
    let got = client::get(addr(p2), "example.com", "/two/x").await;
    assert_eq!(got.status, 200, "{}", proxy.logs());
    assert_eq!(got.header("x-upstream"), Some("two"));
    // Each bind has only its own routes.
    assert_eq!(
        client::get(addr(p1), "example.com", "/two").await.status,
        404
    );
    assert_eq!(
        client::get(addr(p2), "example.com", "/one").await.status,
        404
    );
    assert_eq!(
        proxy.metric(
            "agentmesh_requests_total",
            &[("route", "first/http/one"), ("status_class", "2xx")]
        ),
        1.0
    );
    assert_eq!(
        proxy.metric(
            "agentmesh_requests_total",
            &[("route", "second/http/two"), ("status_class", "2xx")]
        ),
        1.0
    );
}

/// The config of one HTTPS bind whose certificate file is `cert_file`.
fn config_with_cert(port: u16, cert_file: &Path, key_file: &Path) -> String {
    format!(
        "binds:
- name: main
  address: 127.0.0.1
  port: {port}
  listeners:
  - name: https
    protocol: HTTPS
    tls:
      certificates:
      - {}
    routes:
    - {{ name: all, backends: [{{ backend: up }}] }}
backends:
- {{ name: up, host: {{ address: \"127.0.0.1:{}\" }} }}
",
        cert_yaml(&(cert_file.to_path_buf(), key_file.to_path_buf())),
        free_port()
    )
}

#[test]
fn invalid_certificate_path_fails_startup_naming_the_listener_and_field() {
    let pki = Pki::new();
    let (_, key) = pki.leaf("a", &["a.test"]);
    let missing = pki.dir.path().join("missing.crt");
    let port = free_port();
    let yaml = config_with_cert(port, &missing, &key);

    let mut proxy = Proxy::spawn(&yaml, &[]);
    let status = proxy
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("proxy kept running; log:\n{}", proxy.logs()));
    assert!(!status.success(), "exit status {status}");
    let logs = proxy.logs();
    for part in [
        "listener \"main/https\"",
        "tls.certificates[0].certFile",
        missing.to_str().unwrap(),
    ] {
        assert!(logs.contains(part), "{part:?} not in:\n{logs}");
    }
    // Nothing listens on the bind.
    assert!(std::net::TcpStream::connect(addr(port)).is_err());

    // `validate` reports the same problem.
    let stderr = validate_fails(&proxy.config_path);
    assert!(
        stderr.contains("listener \"main/https\" field tls.certificates[0].certFile"),
        "{stderr}"
    );
}

/// Runs `agentmesh-proxy validate FILE`, expects it to fail, and returns its stderr.
fn validate_fails(config: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_agentmesh-proxy"))
        .arg("validate")
        .arg(config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "validate passed: {stderr}");
    stderr
}

#[test]
fn broken_certificate_material_is_rejected_naming_the_field() {
    let pki = Pki::new();
    let (cert_a, key_a) = pki.leaf("a", &["a.test"]);
    let (_, key_b) = pki.leaf("b", &["b.test"]);
    let not_pem = pki.dir.path().join("not-pem.crt");
    std::fs::write(&not_pem, "hello").unwrap();
    let config = pki.dir.path().join("config.yaml");
    let field = "listener \"main/https\" field tls.certificates[0]";
    let cases = [
        (
            config_with_cert(1, &cert_a, &key_b),
            ".keyFile: does not match",
        ),
        (config_with_cert(1, &not_pem, &key_a), ".certFile"),
        (config_with_cert(1, &cert_a, &not_pem), ".keyFile"),
        (
            config_with_cert(1, &cert_a, &key_a).replace(
                "keyFile: ",
                "hostnames: ['*', 'ok.test', 'bad host'], keyFile: ",
            ),
            ".hostnames[0]",
        ),
    ];
    for (yaml, want) in cases {
        std::fs::write(&config, &yaml).unwrap();
        let stderr = validate_fails(&config);
        assert!(
            stderr.contains(&format!("{field}{want}")),
            "{want}: {stderr}"
        );
    }
    // Every bad hostname is reported, not just the first.
    assert!(
        validate_fails(&config).contains(&format!("{field}.hostnames[2]")),
        "{}",
        validate_fails(&config)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_hostnames_replace_the_names_in_the_certificate() {
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.test"]);
    let (b_cert, b_key) = pki.leaf("b", &["*.b.test"]);
    let up = TestUpstream::start("secure").await;
    let port = free_port();
    let listeners = format!(
        "  - name: https
    protocol: HTTPS
    tls:
      certificates:
      - {}
      - {{ certFile: \"{}\", keyFile: \"{}\", hostnames: [Override.test] }}
    routes:
    - {{ name: all, backends: [{{ backend: secure }}] }}",
        cert_yaml(&a),
        b_cert.display(),
        b_key.display()
    );
    let _proxy = https_proxy(port, &listeners, &[&up]);
    let served = |sni| handshake(addr(port), Some(sni), &["h2"]);
    assert_eq!(served("override.test").await.names, ["*.b.test"]);
    // The names inside the certificate no longer select it: the default is served.
    assert_eq!(served("x.b.test").await.names, ["a.test"]);
    assert_eq!(served("a.test").await.names, ["a.test"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_upgrade_request_is_served_over_http1_and_not_passed_to_the_backend() {
    let up = TestUpstream::start("plain").await;
    let port = free_port();
    let yaml = format!(
        "binds:
- name: main
  address: 127.0.0.1
  port: {port}
  listeners:
  - name: http
    routes:
    - {{ name: all, backends: [{{ backend: plain }}] }}
backends:
{}",
        backend_yaml(&up)
    );
    let proxy = Proxy::start(&yaml);
    // `curl --http2` on a plain URL asks for `Upgrade: h2c`. The proxy answers over
    // HTTP/1.1 and must not forward the upgrade: a backend that took it would give the
    // client an HTTP/2 connection that bypasses routing and policies (h2c smuggling).
    let run = curl_verbose(&["--http2", &format!("http://127.0.0.1:{port}/up")]);
    assert_eq!(
        (run.version(), run.status),
        ("HTTP/1.1", 200),
        "{}\n{}",
        run.trace,
        proxy.logs()
    );
    let echo = run.json();
    assert_eq!(echo["path"], "/up");
    let headers = echo["headers"].as_object().unwrap();
    for name in ["upgrade", "http2-settings", "connection"] {
        assert!(!headers.contains_key(name), "{name} forwarded: {headers:?}");
    }
}
