//! Each server on 127.0.0.1:0, asked over real TCP with raw HTTP/1.1, as `curl` or a
//! kubelet probe would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::*;
use crate::telemetry::{LogControl, Metrics, RequestLabels};

/// What a client sees of one response.
#[derive(Debug)]
struct Seen {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running server, stopped when `stop` is called.
struct Running {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("server returns promptly after shutdown")
            .expect("server task does not panic");
    }
}

async fn start<F, Fut>(serve: F) -> Running
where
    F: FnOnce(TcpListener, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (shutdown, rx) = watch::channel(false);
    let task = tokio::spawn(serve(listener, rx));
    Running {
        addr,
        shutdown,
        task,
    }
}

/// Sends `raw` bytes and reads until the server closes the connection. A server may
/// hang up on a bad request before reading all of it, so write and read errors only
/// cut the response short.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(raw).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "server answers or hangs up within 5s");
    String::from_utf8_lossy(&out).into_owned()
}

async fn request(addr: SocketAddr, method: &str, target: &str) -> Seen {
    let raw = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    let response = exchange(addr, raw.as_bytes()).await;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("response has a head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Seen {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn admin_state(readiness: Readiness) -> AdminState {
    AdminState {
        config_dump: Arc::new(
            || serde_json::json!({"binds": [{"port": 8080, "listeners": ["public"]}]}),
        ),
        logs: LogControl::detached("info").expect("valid filter"),
        readiness,
    }
}

#[tokio::test]
async fn ready_endpoint_follows_readiness_through_startup_and_drain() {
    let readiness = Readiness::new();
    let probe_state = readiness.clone();
    let server = start(|l, rx| serve_ready(l, probe_state, rx)).await;

    let seen = request(server.addr, "GET", "/healthz/ready").await;
    assert_eq!(seen.status, 503);
    assert_eq!(
        seen.body,
        "not ready: waiting for the first configuration\n"
    );

    readiness.set_ready();
    let seen = request(server.addr, "GET", "/healthz/ready").await;
    assert_eq!((seen.status, seen.body.as_str()), (200, "ready\n"));
    assert_eq!(
        seen.header("content-type"),
        Some("text/plain; charset=utf-8")
    );

    readiness.set_draining();
    let seen = request(server.addr, "GET", "/healthz/ready").await;
    assert_eq!(
        (seen.status, seen.body.as_str()),
        (503, "not ready: draining\n")
    );
    server.stop().await;
}

#[tokio::test]
async fn ready_server_rejects_other_paths_and_methods() {
    let server = start(|l, rx| serve_ready(l, Readiness::new(), rx)).await;
    assert_eq!(request(server.addr, "GET", "/metrics").await.status, 404);
    let seen = request(server.addr, "POST", "/healthz/ready").await;
    assert_eq!(seen.status, 405);
    assert_eq!(seen.header("allow"), Some("GET, HEAD"));
    server.stop().await;
}

#[tokio::test]
async fn metrics_endpoint_serves_recorded_requests_as_prometheus_text() {
    let metrics = Metrics::new();
    metrics.record_request(
        &RequestLabels {
            listener: "public".into(),
            route: "chat".into(),
            backend: "openai".into(),
            method: http::Method::POST,
            status: 502,
        },
        Duration::from_millis(3),
    );
    let shared = metrics.clone();
    let server = start(|l, rx| serve_metrics(l, shared, rx)).await;

    let seen = request(server.addr, "GET", "/metrics").await;
    assert_eq!(seen.status, 200);
    assert_eq!(
        seen.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        seen.body.contains(
            r#"agentmesh_requests_total{listener="public",route="chat",backend="openai",method="POST",status_class="5xx"} 1"#
        ),
        "{}",
        seen.body
    );
    assert!(seen.body.contains("agentmesh_build_info{version="));
    assert_eq!(request(server.addr, "GET", "/").await.status, 404);
    assert_eq!(request(server.addr, "DELETE", "/metrics").await.status, 405);
    server.stop().await;
}

#[tokio::test]
async fn config_dump_is_pretty_json_from_the_callers_closure() {
    let server = start(|l, rx| serve_admin(l, admin_state(Readiness::new()), rx)).await;
    let seen = request(server.addr, "GET", "/config_dump").await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert!(
        seen.body.contains("\n  \"binds\": ["),
        "pretty: {}",
        seen.body
    );
    let parsed: serde_json::Value = serde_json::from_str(&seen.body).expect("valid JSON");
    assert_eq!(parsed["binds"][0]["port"], 8080);
    server.stop().await;
}

#[tokio::test]
async fn logging_filter_can_be_read_and_changed_by_level_or_directives() {
    let state = admin_state(Readiness::new());
    let logs = state.logs.clone();
    let server = start(|l, rx| serve_admin(l, state, rx)).await;

    let seen = request(server.addr, "GET", "/logging").await;
    assert_eq!((seen.status, seen.body.as_str()), (200, "info\n"));

    let seen = request(server.addr, "POST", "/logging?level=DEBUG").await;
    assert_eq!(
        (seen.status, seen.body.as_str()),
        (200, "log filter set to debug\n")
    );
    assert_eq!(logs.current(), "debug");

    let target = "/logging?filter=warn%2Cagentmesh_proxy%3A%3Ahttp%3Dtrace";
    let seen = request(server.addr, "POST", target).await;
    assert_eq!(seen.status, 200, "{}", seen.body);
    assert_eq!(logs.current(), "warn,agentmesh_proxy::http=trace");
    let seen = request(server.addr, "GET", "/logging").await;
    assert_eq!(seen.body, "warn,agentmesh_proxy::http=trace\n");
    server.stop().await;
}

#[tokio::test]
async fn invalid_logging_requests_get_400_and_leave_the_filter_alone() {
    let state = admin_state(Readiness::new());
    let logs = state.logs.clone();
    let server = start(|l, rx| serve_admin(l, state, rx)).await;

    let cases = [
        ("/logging?level=loud", "invalid level \"loud\""),
        (
            "/logging?filter=agentmesh%3Dloud",
            "invalid log filter \"agentmesh=loud\"",
        ),
        ("/logging?filter=%zz", "not valid URL-encoded"),
        ("/logging", "missing ?level=<level> or ?filter=<filter>"),
        ("/logging?level=info&filter=info", "not both"),
        (
            "/logging?verbosity=9",
            "unknown query parameter \"verbosity\"",
        ),
    ];
    for (target, message) in cases {
        let seen = request(server.addr, "POST", target).await;
        assert_eq!(seen.status, 400, "{target}");
        assert!(seen.body.contains(message), "{target}: {}", seen.body);
    }
    assert_eq!(logs.current(), "info");
    server.stop().await;
}

#[tokio::test]
async fn admin_index_lists_endpoints_and_unknown_requests_are_refused() {
    let server = start(|l, rx| serve_admin(l, admin_state(Readiness::new()), rx)).await;
    let seen = request(server.addr, "GET", "/").await;
    assert_eq!(seen.status, 200);
    for endpoint in ["/config_dump", "/logging", "?level=", "?filter=", "/drain"] {
        assert!(seen.body.contains(endpoint), "{endpoint}: {}", seen.body);
    }
    assert!(
        seen.body
            .contains("not ready: waiting for the first configuration")
    );

    assert_eq!(request(server.addr, "GET", "/stats").await.status, 404);
    let seen = request(server.addr, "PUT", "/logging?level=info").await;
    assert_eq!(seen.status, 405);
    assert_eq!(seen.header("allow"), Some("GET, HEAD, POST"));
    assert_eq!(
        request(server.addr, "POST", "/config_dump").await.status,
        405
    );
    assert_eq!(request(server.addr, "GET", "/drain").await.status, 405);
    server.stop().await;
}

#[tokio::test]
async fn drain_through_the_admin_api_makes_readiness_fail() {
    let readiness = Readiness::new();
    readiness.set_ready();
    let state = admin_state(readiness.clone());
    let server = start(|l, rx| serve_admin(l, state, rx)).await;
    let seen = request(server.addr, "POST", "/drain").await;
    assert_eq!(seen.status, 200);
    assert!(!readiness.is_ready());
    assert_eq!(readiness.not_ready_reason(), Some("draining"));
    server.stop().await;
}

#[tokio::test]
async fn malformed_requests_do_not_take_the_server_down() {
    let readiness = Readiness::new();
    readiness.set_ready();
    let server = start(|l, rx| serve_ready(l, readiness, rx)).await;

    let garbage = exchange(server.addr, b"\x16\x03\x01 not http at all\r\n\r\n").await;
    assert!(
        garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"),
        "{garbage:?}"
    );
    let huge = format!(
        "GET /healthz/ready HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let too_big = exchange(server.addr, huge.as_bytes()).await;
    assert!(
        too_big.is_empty() || too_big.starts_with("HTTP/1.1 431"),
        "{}",
        too_big.get(..80).unwrap_or(&too_big)
    );

    let seen = request(server.addr, "GET", "/healthz/ready").await;
    assert_eq!((seen.status, seen.body.as_str()), (200, "ready\n"));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_returns() {
    let server = start(|l, rx| serve_ready(l, Readiness::new(), rx)).await;
    let addr = server.addr;
    assert_eq!(request(addr, "GET", "/healthz/ready").await.status, 503);
    server.stop().await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener is closed after shutdown"
    );
}

#[tokio::test]
async fn dropped_shutdown_sender_stops_the_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(serve_ready(listener, Readiness::new(), rx));
    drop(tx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("returns once nobody can signal shutdown")
        .expect("no panic");
}
