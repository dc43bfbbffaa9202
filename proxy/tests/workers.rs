//! Serving threads (`--worker-threads`), through the real binary: client connections
//! go to the least busy worker (the per-worker gauge shows where), each worker reuses
//! its own upstream connections, a reload reaches every worker, and a SIGTERM drain
//! waits for requests in flight on any of them.
#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::Duration;

use support::upstream::TestUpstream;
use support::{Proxy, eventually, free_port, simple_config};

const LIMIT: Duration = Duration::from_secs(10);

/// One keep-alive client connection, read and written with blocking calls.
struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(port: u16) -> Conn {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(LIMIT)).unwrap();
        Conn {
            reader: BufReader::new(tcp),
        }
    }

    fn send(&mut self, path: &str) {
        write!(
            self.reader.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: example.com\r\n\r\n"
        )
        .unwrap();
    }

    /// Reads one response: status, `x-config` header, body.
    fn read(&mut self) -> (u16, Option<String>, String) {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {line:?}"));
        let (mut length, mut tag) = (0, None);
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "x-config" => tag = Some(value.trim().to_string()),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        (status, tag, String::from_utf8(body).unwrap())
    }

    fn get(&mut self, path: &str) -> (u16, Option<String>, String) {
        self.send(path);
        self.read()
    }
}

fn config(port: u16, up: SocketAddr, tag: &str) -> String {
    simple_config(
        port,
        &format!(
            "    - name: all\n      backends:\n      - backend: up\n      policies:\n        responseHeaders:\n          set:\n          - {{ name: x-config, value: \"{tag}\" }}"
        ),
        &format!("- name: up\n  host: {{ address: \"{up}\" }}"),
    )
}

fn worker_gauge(proxy: &Proxy, worker: &str) -> f64 {
    proxy.metric("agentmesh_worker_connections_active", &[("worker", worker)])
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_spread_over_workers_that_keep_their_own_upstream_connections() {
    let up = TestUpstream::start("up").await;
    let port = free_port();
    let proxy = Proxy::start_with(&config(port, up.addr, "v1"), &["--worker-threads", "2"]);

    // Four client connections: the least busy worker each time, ties in turn, so they
    // alternate, two on each worker.
    let mut conns: Vec<Conn> = (0..4).map(|_| Conn::open(port)).collect();
    for conn in &mut conns {
        let (status, tag, _) = conn.get("/first");
        assert_eq!(
            (status, tag.as_deref()),
            (200, Some("v1")),
            "{}",
            proxy.logs()
        );
    }
    assert_eq!(worker_gauge(&proxy, "0"), 2.0, "{}", proxy.metrics_text());
    assert_eq!(worker_gauge(&proxy, "1"), 2.0, "{}", proxy.metrics_text());

    // One request at a time: each worker reuses the upstream connection it opened, and
    // no worker borrows the other's (that would make a request wake another thread).
    for round in 0..3 {
        for conn in &mut conns {
            let (status, _, body) = conn.get(&format!("/round/{round}"));
            assert_eq!(status, 200, "{}", proxy.logs());
            assert!(body.contains(&format!("/round/{round}")), "{body}");
        }
    }
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        2,
        "one upstream connection per worker"
    );

    // A reload reaches the connections of both workers.
    proxy.write_config(&config(port, up.addr, "v2"));
    assert!(
        eventually(LIMIT, || {
            conns
                .iter_mut()
                .all(|c| c.get("/after-reload").1.as_deref() == Some("v2"))
        }),
        "reload not seen on every worker; log:\n{}",
        proxy.logs()
    );

    // The two connections of worker 1 close: the next two both go to worker 1, now the
    // least busy (taking turns would have put one on worker 0).
    let (mut on_0, on_1): (Vec<_>, Vec<_>) =
        conns.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    drop(on_1);
    assert!(
        eventually(LIMIT, || worker_gauge(&proxy, "1") == 0.0),
        "{}",
        proxy.metrics_text()
    );
    for _ in 0..2 {
        let mut conn = Conn::open(port);
        assert_eq!(conn.get("/again").0, 200);
        on_0.push((0, conn));
    }
    assert_eq!(worker_gauge(&proxy, "0"), 2.0, "{}", proxy.metrics_text());
    assert_eq!(worker_gauge(&proxy, "1"), 2.0, "{}", proxy.metrics_text());

    // Closed connections leave both gauges.
    drop(on_0);
    assert!(
        eventually(LIMIT, || worker_gauge(&proxy, "0") == 0.0
            && worker_gauge(&proxy, "1") == 0.0),
        "{}",
        proxy.metrics_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_waits_for_requests_in_flight_on_every_worker() {
    let up = TestUpstream::start("up").await;
    let port = free_port();
    let mut proxy = Proxy::start_with(
        &config(port, up.addr, "v1"),
        &["--worker-threads", "2", "--drain-timeout", "5s"],
    );
    let mut conns: Vec<Conn> = (0..2).map(|_| Conn::open(port)).collect();
    assert_eq!(conns[0].get("/warm").0, 200);
    assert_eq!(conns[1].get("/warm").0, 200);
    assert_eq!(worker_gauge(&proxy, "1"), 1.0, "{}", proxy.metrics_text());

    for conn in &mut conns {
        conn.send("/delay/700");
    }
    assert!(eventually(LIMIT, || up.count("/delay/700") == 2));
    proxy.sigterm();
    for conn in &mut conns {
        let (status, _, body) = conn.read();
        assert_eq!(
            (status, body.as_str()),
            (200, "delayed 700ms"),
            "{}",
            proxy.logs()
        );
    }
    let status = proxy
        .wait_exit(LIMIT)
        .unwrap_or_else(|| panic!("still running after the drain; log:\n{}", proxy.logs()));
    assert!(status.success(), "exit {status}; log:\n{}", proxy.logs());
}
