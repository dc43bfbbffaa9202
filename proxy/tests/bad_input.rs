//! Bad input from clients and misbehaving backends: each gets the right status and the
//! right metric reason, and afterwards the proxy still serves another client normally.
#![allow(clippy::unwrap_used, missing_docs)]

mod peers;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::client::{self, raw_exchange};
use support::upstream::{self, TestUpstream};
use support::{Proxy, eventually, simple_config};

const SETTINGS: &str = "settings:\n  maxRequestBodyBytes: 1024\n  maxRequestHeaderBytes: 16384\n";

/// Where the routes of the test proxy send their traffic.
struct Backends {
    good: SocketAddr,
    /// A live backend behind a 0.2 s per-try timeout.
    slow: SocketAddr,
    dead: SocketAddr,
    reset_before: SocketAddr,
    reset_mid_body: SocketAddr,
}

/// A proxy whose routes each lead to one kind of trouble, plus `/good` that works:
/// `/good`, `/slow`, `/dead`, `/reset`, `/midbody` (prefixes).
fn start(b: &Backends) -> (Proxy, SocketAddr) {
    let route = |name: &str, to: &str, policies: &str| {
        let mut r = format!(
            "    - name: {name}\n      matches: [{{ path: {{ prefix: /{name} }} }}]\n      backends: [{{ backend: {to} }}]\n"
        );
        if !policies.is_empty() {
            r += &format!("      policies: {policies}\n");
        }
        r
    };
    let routes = [
        route("good", "good", ""),
        route(
            "slow",
            "slowpoke",
            "{ timeouts: { backendRequest: 0.2s }, urlRewrite: { path: { full: /delay/2000 } } }",
        ),
        route("dead", "dead", ""),
        route("reset", "reset", ""),
        route("midbody", "midbody", ""),
    ]
    .concat();
    let backend = |name: &str, addr: SocketAddr| {
        format!("- name: {name}\n  host: {{ address: \"{addr}\" }}\n")
    };
    let backends = [
        backend("good", b.good),
        backend("slowpoke", b.slow),
        backend("dead", b.dead),
        backend("reset", b.reset_before),
        backend("midbody", b.reset_mid_body),
    ]
    .concat();
    let (proxy, port) =
        peers::start_proxy(|port| simple_config(port, routes.trim_end(), &backends) + SETTINGS);
    (proxy, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A running proxy with its upstreams.
struct Setup {
    proxy: Proxy,
    addr: SocketAddr,
    good: TestUpstream,
    _dead: socket2::Socket,
}

async fn setup() -> Setup {
    let good = TestUpstream::start("good").await;
    let (dead_socket, dead) = peers::dead_addr();
    let backends = Backends {
        good: good.addr,
        slow: good.addr,
        dead,
        reset_before: upstream::reset_before_response().await,
        reset_mid_body: upstream::reset_mid_body().await,
    };
    let (proxy, addr) = start(&backends);
    Setup {
        proxy,
        addr,
        good,
        _dead: dead_socket,
    }
}

impl Setup {
    /// A normal request from a new client still works.
    async fn assert_still_serving(&self) {
        let got = client::get(self.addr, "example.com", "/good/after").await;
        assert_eq!(got.status, 200, "{}", self.proxy.logs());
        assert_eq!(got.json()["path"], "/good/after");
    }

    fn request_errors(&self, reason: &str) -> f64 {
        self.proxy
            .metric("agentmesh_request_errors_total", &[("reason", reason)])
    }

    fn connection_errors(&self, reason: &str) -> f64 {
        self.proxy.metric(
            "agentmesh_downstream_connection_errors_total",
            &[("bind", "main"), ("reason", reason)],
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_request_line_gets_400_and_is_counted() {
    let s = setup().await;
    let addr = s.addr;
    let answer = tokio::task::spawn_blocking(move || {
        raw_exchange(addr, b"GARBAGE\r\nnot http at all\r\n\r\n")
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert!(
        eventually(Duration::from_secs(5), || s
            .connection_errors("malformed_http")
            == 1.0),
        "{}",
        s.proxy.metrics_text()
    );
    s.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_request_headers_get_431_and_are_counted() {
    let s = setup().await;
    let mut head = String::from("GET /good/x HTTP/1.1\r\nhost: example.com\r\n");
    for i in 0..40 {
        head += &format!("x-filler-{i}: {}\r\n", "a".repeat(1000));
    }
    head += "\r\n";
    let addr = s.addr;
    let answer = tokio::task::spawn_blocking(move || raw_exchange(addr, head.as_bytes()))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    assert_eq!(s.good.count("/good/x"), 0);
    assert!(
        eventually(Duration::from_secs(5), || s
            .connection_errors("headers_too_large")
            == 1.0),
        "{}",
        s.proxy.metrics_text()
    );
    s.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_body_over_the_limit_gets_413() {
    let s = setup().await;

    // Announced by Content-Length: refused before the upstream is contacted.
    let req = Request::post(format!("http://{}/good/sized", s.addr))
        .header("host", "example.com")
        .body(Full::new(Bytes::from(vec![b'x'; 4096])))
        .unwrap();
    let got = client::send(&client::http1(), req).await;
    assert_eq!(got.status, 413, "{}", s.proxy.logs());
    assert_eq!(s.good.count("/good/sized"), 0);
    assert_eq!(s.request_errors("body_too_large"), 1.0);
    s.assert_still_serving().await;

    // Chunked, no length announced: cut off once over the limit.
    let req = Request::post(format!("http://{}/good/chunked", s.addr))
        .header("host", "example.com")
        .body(peers::chunked(8, 512))
        .unwrap();
    let got = peers::send_streaming(req).await.unwrap();
    assert_eq!(got.status, 413, "{}", s.proxy.logs());
    assert_eq!(s.request_errors("body_too_large"), 2.0);
    s.assert_still_serving().await;

    // Just under the limit, chunked: goes through whole.
    let req = Request::post(format!("http://{}/good/fits", s.addr))
        .header("host", "example.com")
        .body(peers::chunked(2, 512))
        .unwrap();
    let got = peers::send_streaming(req).await.unwrap();
    assert_eq!(got.status, 200, "{}", s.proxy.logs());
    let echo: serde_json::Value = serde_json::from_slice(&got.body.unwrap()).unwrap();
    assert_eq!(echo["body"].as_str().unwrap().len(), 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreachable_backend_gets_503() {
    let s = setup().await;
    let got = client::get(s.addr, "example.com", "/dead/x").await;
    assert_eq!(got.status, 503, "{}", s.proxy.logs());
    assert_eq!(s.request_errors("upstream_connect"), 1.0);
    // Upstream details stay in the log.
    assert!(!got.body.contains("127.0.0.1"), "{}", got.body);
    s.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backend_reset_before_response_gets_502() {
    let s = setup().await;
    let got = client::get(s.addr, "example.com", "/reset/x").await;
    assert_eq!(got.status, 502, "{}", s.proxy.logs());
    assert_eq!(s.request_errors("upstream_reset"), 1.0);
    s.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backend_reset_mid_body_fails_the_client_body_and_is_counted() {
    let s = setup().await;
    let req = Request::get(format!("http://{}/midbody/x", s.addr))
        .header("host", "example.com")
        .body(Full::default())
        .unwrap();
    let got = peers::send_checked(req).await.unwrap();
    assert_eq!(got.status, 200, "the head was already on its way");
    assert!(
        got.body.is_err(),
        "truncated body read as complete: {:?}",
        got.body
    );
    assert!(
        eventually(Duration::from_secs(5), || s.proxy.metric(
            "agentmesh_request_errors_total",
            &[
                ("listener", "main/http"),
                ("route", "main/http/midbody"),
                ("backend", "midbody"),
                ("reason", "upstream_reset"),
            ]
        ) == 1.0),
        "{}",
        s.proxy.metrics_text()
    );
    s.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_backend_with_per_try_timeout_gets_504() {
    let s = setup().await;
    let started = std::time::Instant::now();
    let got = client::get(s.addr, "example.com", "/slow").await;
    assert_eq!(got.status, 504, "{}", s.proxy.logs());
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(s.request_errors("upstream_timeout"), 1.0);
    s.assert_still_serving().await;
}
