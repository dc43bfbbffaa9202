//! TLS passthrough and TCP listeners from a client's point of view, with the real proxy
//! binary started from a config file.
//!
//! TLS passthrough: two real TLS servers (`openssl s_server`), each with its own
//! certificate, sit behind one proxy port; curl, resolving both names to the proxy and
//! verifying the certificate against the test CA for the name it asked, reaches each one,
//! which proves the proxy routed by SNI without opening the TLS (the proxy holds no
//! certificate at all). A name no route serves is refused. TCP: bytes go to a plain echo
//! peer and come back unchanged, half-close included, and an open tunnel keeps working
//! through a drain, which waits for it. Config mistakes that only make sense for HTTP are
//! refused by `validate`, naming the resource and field. TLS terminate: the proxy presents
//! the listener's certificate (curl verifies it) and a plain-HTTP peer behind it reads the
//! decrypted request.
#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use support::{Proxy, eventually, free_port};

/// A private CA and leaves it signed, as PEM files in a temp dir.
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

    /// Issues a leaf for `name`; returns (certificate file, key file).
    fn leaf(&self, name: &str) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let cert_file = self.dir.path().join(format!("{name}.crt"));
        let key_file = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }
}

/// A real TLS server (`openssl s_server -www`) presenting one certificate; killed on drop.
struct TlsServer {
    child: Child,
    addr: SocketAddr,
}

impl TlsServer {
    fn start((cert, key): &(PathBuf, PathBuf)) -> TlsServer {
        let port = free_port();
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl missing: run scripts/install-test-deps.sh");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            eventually(Duration::from_secs(10), || TcpStream::connect(addr).is_ok()),
            "openssl s_server did not listen on {addr}"
        );
        TlsServer { child, addr }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain TCP echo peer on loopback: echoes each connection until the client half-closes.
fn echo_peer() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut copy = conn.try_clone().unwrap();
                let _ = std::io::copy(&mut conn, &mut copy);
                let _ = copy.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

/// curl over HTTPS to `name` at the proxy port, verifying the certificate against `ca` for
/// `name`. Returns (success, curl's stderr).
fn curl_tls(proxy_port: u16, name: &str, ca: &Path) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "-v", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{name}:{proxy_port}:127.0.0.1"))
        .arg(format!("https://{name}:{proxy_port}/"))
        .output()
        .expect("curl missing: run scripts/install-test-deps.sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The subject the server presented, as openssl s_client prints it (spaces removed).
fn served_subject(proxy_port: u16, sni: &str) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{proxy_port}"))
        .args(["-servername", sni])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find(|l| l.starts_with("subject="))
        .map(|l| l.replace(' ', ""))
        .unwrap_or_else(|| format!("(no certificate) {}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn tls_passthrough_routes_by_sni_to_servers_that_present_their_own_certificates() {
    let pki = Pki::new();
    let alpha = TlsServer::start(&pki.leaf("alpha.example.com"));
    let beta = TlsServer::start(&pki.leaf("beta.example.com"));
    let port = free_port();
    let proxy = Proxy::start(&format!(
        "binds:
- name: tls
  address: 127.0.0.1
  port: {port}
  listeners:
  - name: passthrough
    protocol: TLS_PASSTHROUGH
    hostnames: ['*.example.com']
    routes:
    - {{ name: alpha, hostnames: [alpha.example.com], backends: [{{ backend: alpha }}] }}
    - {{ name: beta, hostnames: ['*.example.com'], backends: [{{ backend: beta }}] }}
backends:
- {{ name: alpha, host: {{ address: \"{}\" }} }}
- {{ name: beta, host: {{ address: \"{}\" }} }}
",
        alpha.addr, beta.addr
    ));

    // Each name reaches the server holding its certificate: curl verifies it for the name.
    let (ok, trace) = curl_tls(port, "alpha.example.com", &pki.ca_file());
    assert!(ok, "alpha: {trace}\nproxy log:\n{}", proxy.logs());
    assert!(trace.contains("CN=alpha.example.com"), "{trace}");
    assert_eq!(
        served_subject(port, "alpha.example.com"),
        "subject=CN=alpha.example.com"
    );
    // The wildcard route takes the other names.
    assert_eq!(
        served_subject(port, "beta.example.com"),
        "subject=CN=beta.example.com"
    );
    let (ok, trace) = curl_tls(port, "beta.example.com", &pki.ca_file());
    assert!(ok, "beta: {trace}");

    // A name no listener serves is refused: no certificate is ever presented.
    let (ok, trace) = curl_tls(port, "gamma.other.org", &pki.ca_file());
    assert!(!ok, "{trace}");
    assert!(
        served_subject(port, "gamma.other.org").starts_with("(no certificate)"),
        "unknown SNI got a certificate"
    );
    // Not TLS at all: refused too, and the proxy keeps serving.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(buf.is_empty(), "plain HTTP got an answer: {buf:?}");
    assert!(curl_tls(port, "alpha.example.com", &pki.ca_file()).0);
}

/// A plain-text HTTP/1.1 peer on loopback: answers each request with its own request
/// line, so a client sees that the request arrived decrypted.
fn plain_http_peer() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let line = text.lines().next().unwrap_or_default().to_string();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{line}",
                    line.len()
                );
                let _ = conn.write_all(answer.as_bytes());
            });
        }
    });
    addr
}

#[test]
fn tls_terminate_serves_the_listener_certificate_and_forwards_decrypted_bytes() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("plain.example.com");
    let plain = plain_http_peer();
    let port = free_port();
    let proxy = Proxy::start(&format!(
        "binds:
- name: tls
  address: 127.0.0.1
  port: {port}
  listeners:
  - name: terminate
    protocol: TLS_TERMINATE
    hostnames: ['*.example.com']
    tls: {{ certificates: [{{ certFile: \"{}\", keyFile: \"{}\" }}] }}
    routes:
    - {{ name: plain, hostnames: [plain.example.com], backends: [{{ backend: plain }}] }}
backends:
- {{ name: plain, host: {{ address: \"{plain}\" }} }}
",
        cert.display(),
        key.display()
    ));
    // curl verifies the proxy's certificate for the name; the peer behind it speaks plain
    // HTTP and answers with the request line it read, so the bytes arrived decrypted.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(pki.ca_file())
        .arg("--resolve")
        .arg(format!("plain.example.com:{port}:127.0.0.1"))
        .arg(format!("https://plain.example.com:{port}/through"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\nproxy log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.logs()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "GET /through HTTP/1.1"
    );
    assert_eq!(
        served_subject(port, "plain.example.com"),
        "subject=CN=plain.example.com"
    );
    // A name no route serves: the handshake may complete, but nothing is forwarded.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-k", "--resolve"])
        .arg(format!("other.example.com:{port}:127.0.0.1"))
        .arg(format!("https://other.example.com:{port}/"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unrouted name got an answer");
}

#[test]
fn tcp_listener_forwards_bytes_to_an_echo_peer() {
    let echo = echo_peer();
    let port = free_port();
    let _proxy = Proxy::start(&format!(
        "binds:
- name: tcp
  address: 127.0.0.1
  port: {port}
  listeners:
  - name: echo
    protocol: TCP
    routes:
    - {{ name: echo, backends: [{{ backend: echo }}] }}
backends:
- {{ name: echo, host: {{ address: \"{echo}\" }} }}
"
    ));
    // Not HTTP, and larger than one read: every byte comes back, in order.
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = conn.try_clone().unwrap();
    let sent = payload.clone();
    let sender = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    conn.read_to_end(&mut back).unwrap();
    sender.join().unwrap();
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "echoed bytes differ");
}

fn validate(yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_agentmesh-proxy"))
        .arg("validate")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn http_only_fields_on_tcp_and_passthrough_routes_are_refused_by_name() {
    let (ok, out) = validate(
        "binds:
- name: tcp
  port: 9000
  listeners:
  - name: l
    protocol: TCP
    routes:
    - name: r
      matches: [{ path: { prefix: /api } }]
      backends: [{ backend: tls }]
      policies: { timeouts: { request: 1s } }
- name: pass
  port: 9001
  listeners:
  - name: l
    protocol: TLS_PASSTHROUGH
    tls: { certificates: [{ certFile: a.crt, keyFile: a.key }] }
    routes:
    - { name: r, hostnames: [a.example.com], backends: [{ backend: ok }] }
- name: mixed
  port: 9002
  listeners:
  - { name: web }
  - { name: raw, protocol: TCP, routes: [{ name: r, backends: [{ backend: ok }] }] }
backends:
- { name: ok, host: { address: \"127.0.0.1:1\" } }
- { name: tls, host: { address: \"127.0.0.1:2\", tls: { sni: x } } }
",
    );
    assert!(!ok, "{out}");
    for expected in [
        r#"route "tcp/l/r" field matches: is HTTP-only"#,
        r#"route "tcp/l/r" field policies: policies apply to HTTP routes"#,
        r#"route "tcp/l/r" field backends[0].backend: backend "tls" sets `tls` or `protocol`"#,
        r#"listener "pass/l" field tls: is only allowed when protocol is HTTPS"#,
        r#"bind "mixed" field listeners: listeners of one bind must all have the same kind of protocol"#,
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[test]
fn open_tcp_tunnel_is_waited_for_by_the_drain_and_keeps_working() {
    let echo = echo_peer();
    let port = free_port();
    let mut proxy = Proxy::start_with(
        &format!(
            "binds:
- name: tcp
  address: 127.0.0.1
  port: {port}
  listeners:
  - name: echo
    protocol: TCP
    routes:
    - {{ name: echo, backends: [{{ backend: echo }}] }}
backends:
- {{ name: echo, host: {{ address: \"{echo}\" }} }}
"
        ),
        &["--drain-timeout", "30s"],
    );
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let round_trip = |conn: &mut TcpStream, msg: &[u8]| {
        conn.write_all(msg).unwrap();
        let mut buf = vec![0; msg.len()];
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(buf, msg);
    };
    // The tunnel is open (a round trip went through) before the drain starts.
    round_trip(&mut conn, b"before");

    proxy.sigterm();
    assert!(
        eventually(Duration::from_secs(10), || support::client::blocking_get(
            proxy.ready,
            "/healthz/ready"
        )
        .is_some_and(|(s, _)| s == 503)),
        "readiness did not report draining"
    );
    // New connections are refused, the open tunnel keeps working and is waited for.
    assert!(
        eventually(Duration::from_secs(10), || TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_err()),
        "new connections still accepted while draining"
    );
    round_trip(&mut conn, b"during the drain");
    assert!(proxy.try_exited().is_none(), "exited with a tunnel open");

    // The client finishes: the echo peer finishes too, and the proxy exits.
    conn.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    drop(conn);
    let status = proxy
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("still running after the tunnel closed:\n{}", proxy.logs()));
    assert!(status.success(), "{}", proxy.logs());
    assert!(proxy.logs().contains("drained"), "{}", proxy.logs());
}
