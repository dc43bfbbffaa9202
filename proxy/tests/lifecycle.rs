//! The proxy's life as an operator sees it, through the real binary: hot reload (applied,
//! rejected, binds opened and closed, requests in flight kept on their config), SIGTERM
//! drain, the admin, readiness and metrics ports, and the command line.
#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use support::upstream::TestUpstream;
use support::{Proxy, client, eventually, free_port, simple_config};

/// Upper bound for anything a test waits on.
const LIMIT: Duration = Duration::from_secs(10);

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// A route named `name` sending everything to `backend`, adding response header
/// `x-config: <tag>`.
fn tagged_route(name: &str, backend: &str, tag: &str) -> String {
    format!(
        "    - name: {name}\n      backends:\n      - backend: {backend}\n      policies:\n        responseHeaders:\n          set:\n          - {{ name: x-config, value: \"{tag}\" }}"
    )
}

fn host_backend(name: &str, addr: SocketAddr) -> String {
    format!("- name: {name}\n  host: {{ address: \"{addr}\" }}")
}

/// GET on a fresh connection; `None` when the request fails (no listener, reset...).
async fn try_get(addr: SocketAddr, path: &str) -> Option<client::Got> {
    let req = Request::get(format!("http://{addr}{path}"))
        .header("host", "example.com")
        .body(Full::<Bytes>::default())
        .unwrap();
    let resp = tokio::time::timeout(LIMIT, client::http1().request(req))
        .await
        .ok()?
        .ok()?;
    let (parts, body) = resp.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .ok()?
        .to_bytes();
    Some(client::Got {
        status: parts.status.as_u16(),
        headers: parts.headers,
        version: parts.version,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

/// Polls `GET path` every 20 ms, up to [`LIMIT`], until `cond` holds for a response.
async fn get_until(addr: SocketAddr, path: &str, cond: impl Fn(&client::Got) -> bool) -> bool {
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        if try_get(addr, path).await.is_some_and(|g| cond(&g)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn reloads(proxy: &Proxy, outcome: &str) -> f64 {
    proxy.metric("agentmesh_config_reloads_total", &[("outcome", outcome)])
}

/// POSTs to the admin API; returns status and body.
async fn admin_post(admin: SocketAddr, path: &str) -> (u16, String) {
    let req = Request::post(format!("http://{admin}{path}"))
        .body(Full::default())
        .unwrap();
    let got = client::send(&client::http1(), req).await;
    (got.status, got.body)
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_applies_a_changed_response_header() {
    let up = TestUpstream::start("one").await;
    let port = free_port();
    let config = |tag| {
        simple_config(
            port,
            &tagged_route("all", "one", tag),
            &host_backend("one", up.addr),
        )
    };
    let proxy = Proxy::start(&config("v1"));
    let got = client::get(addr(port), "example.com", "/").await;
    assert_eq!(got.header("x-config"), Some("v1"));
    assert_eq!(reloads(&proxy, "applied"), 1.0);

    proxy.write_config(&config("v2"));
    assert!(
        get_until(addr(port), "/", |g| g.header("x-config") == Some("v2")).await,
        "reload not applied; log:\n{}",
        proxy.logs()
    );
    assert_eq!(reloads(&proxy, "applied"), 2.0);
    assert_eq!(reloads(&proxy, "rejected"), 0.0);
    assert!(proxy.logs().contains("config reloaded"));
    let dump = client::get(proxy.admin, "localhost", "/config_dump")
        .await
        .json();
    let route = &dump["binds"][0]["listeners"][0]["routes"][0];
    assert_eq!(
        route["policies"]["responseHeaders"]["set"][0]["value"], "v2",
        "{dump}"
    );
    // The backend did not change, so its pooled connection survived the reload.
    let http = client::http1();
    for _ in 0..5 {
        let req = Request::get(format!("http://{}/", addr(port)))
            .header("host", "example.com")
            .body(Full::default())
            .unwrap();
        assert_eq!(client::send(&http, req).await.status, 200);
    }
    assert_eq!(
        proxy.metric(
            "agentmesh_upstream_connections_total",
            &[("backend", "one")]
        ),
        up.connections.load(std::sync::atomic::Ordering::SeqCst) as f64
    );
    assert!(
        up.connections.load(std::sync::atomic::Ordering::SeqCst) <= 2,
        "the reload dropped the warm upstream connections"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn request_in_flight_finishes_on_the_config_it_started_with() {
    let old = TestUpstream::start("old").await;
    let new = TestUpstream::start("new").await;
    let port = free_port();
    let backends = format!(
        "{}\n{}",
        host_backend("old", old.addr),
        host_backend("new", new.addr)
    );
    let proxy = Proxy::start(&simple_config(
        port,
        &tagged_route("all", "old", "v1"),
        &backends,
    ));
    let in_flight = tokio::spawn(client::get(addr(port), "example.com", "/delay/1500"));
    assert!(eventually(LIMIT, || old.count("/delay/1500") == 1));

    proxy.write_config(&simple_config(
        port,
        &tagged_route("all", "new", "v2"),
        &backends,
    ));
    assert!(
        get_until(addr(port), "/", |g| g.header("x-upstream") == Some("new")).await,
        "reload not applied; log:\n{}",
        proxy.logs()
    );
    assert!(!in_flight.is_finished(), "the slow request ended early");

    let got = tokio::time::timeout(LIMIT, in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.status, 200, "{}", proxy.logs());
    assert_eq!(got.header("x-upstream"), Some("old"));
    assert_eq!(got.header("x-config"), Some("v1"));
    assert_eq!(new.count("/delay/1500"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_changes_are_rejected_logged_and_counted_while_the_old_config_serves() {
    let up = TestUpstream::start("one").await;
    let port = free_port();
    let good = simple_config(
        port,
        &tagged_route("r", "one", "v1"),
        &host_backend("one", up.addr),
    );
    let proxy = Proxy::start(&good);

    // An unknown field.
    proxy.write_config(&good.replace("responseHeaders:", "responseHeaderz:"));
    assert!(
        eventually(LIMIT, || reloads(&proxy, "rejected") == 1.0),
        "{}",
        proxy.logs()
    );
    let logs = proxy.logs();
    assert!(
        logs.contains("config change rejected") && logs.contains("responseHeaderz"),
        "the log does not name the unknown field:\n{logs}"
    );
    let got = client::get(addr(port), "example.com", "/").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-config"), Some("v1"));

    // A reference to a backend that does not exist.
    proxy.write_config(&good.replace("backend: one", "backend: nowhere"));
    assert!(
        eventually(LIMIT, || reloads(&proxy, "rejected") == 2.0),
        "{}",
        proxy.logs()
    );
    let logs = proxy.logs();
    assert!(
        logs.contains(r#"route \"main/http/r\" field backends[0].backend"#)
            || logs.contains(r#"route "main/http/r" field backends[0].backend"#),
        "the log does not name the bad reference:\n{logs}"
    );
    assert!(logs.contains("nowhere"), "{logs}");
    let got = client::get(addr(port), "example.com", "/").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-upstream"), Some("one"));
    assert_eq!(reloads(&proxy, "applied"), 1.0);

    // A good config still goes through afterwards.
    proxy.write_config(&good.replace("v1", "v2"));
    assert!(get_until(addr(port), "/", |g| g.header("x-config") == Some("v2")).await);
    assert_eq!(reloads(&proxy, "applied"), 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_opens_an_added_bind_and_closes_a_removed_one() {
    let up = TestUpstream::start("one").await;
    let (main_port, extra_port) = (free_port(), free_port());
    let base = simple_config(
        main_port,
        &tagged_route("all", "one", "main"),
        &host_backend("one", up.addr),
    );
    let proxy = Proxy::start(&base);
    assert!(std::net::TcpStream::connect(addr(extra_port)).is_err());

    let extra_bind = format!(
        "- name: extra\n  address: 127.0.0.1\n  port: {extra_port}\n  listeners:\n  - name: http\n    routes:\n{}\n",
        tagged_route("all", "one", "extra")
    );
    let with_extra = base.replacen("binds:\n", &format!("binds:\n{extra_bind}"), 1);
    proxy.write_config(&with_extra);
    assert!(
        get_until(addr(extra_port), "/", |g| g.status == 200
            && g.header("x-config") == Some("extra"))
        .await,
        "added bind not serving; log:\n{}",
        proxy.logs()
    );

    proxy.write_config(&base);
    assert!(
        eventually(LIMIT, || std::net::TcpStream::connect(addr(extra_port))
            .is_err()),
        "removed bind still accepts connections; log:\n{}",
        proxy.logs()
    );
    let got = client::get(addr(main_port), "example.com", "/").await;
    assert_eq!(got.header("x-config"), Some("main"));
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_that_renames_a_bind_keeps_its_port_serving() {
    let up = TestUpstream::start("one").await;
    let port = free_port();
    let config = simple_config(
        port,
        &tagged_route("all", "one", "v1"),
        &host_backend("one", up.addr),
    );
    let proxy = Proxy::start(&config);
    assert_eq!(
        client::get(addr(port), "example.com", "/").await.status,
        200
    );

    // Same address and port under a new name: the old socket must be gone before the
    // new one binds, or the port is lost.
    proxy.write_config(
        &config
            .replace("name: main", "name: public")
            .replace("v1", "v2"),
    );
    assert!(
        get_until(addr(port), "/", |g| g.header("x-config") == Some("v2")).await,
        "renamed bind does not serve; log:\n{}",
        proxy.logs()
    );
    assert!(
        !proxy.logs().contains("bind could not be opened"),
        "{}",
        proxy.logs()
    );
    let dump = client::get(proxy.admin, "localhost", "/config_dump")
        .await
        .json();
    assert_eq!(dump["binds"][0]["name"], "public");
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_follows_a_kubernetes_configmap_symlink_swap() {
    use std::os::unix::fs::symlink;

    let up = TestUpstream::start("one").await;
    let port = free_port();
    let config = |tag: &str| {
        simple_config(
            port,
            &tagged_route("all", "one", tag),
            &host_backend("one", up.addr),
        )
    };
    let proxy = Proxy::start(&config("v1"));
    // The kubelet's layout: config.yaml -> ..data/config.yaml, ..data -> ..<timestamp>.
    let dir = proxy.dir.path();
    let publish = |version: &str, tag: &str| {
        let target = dir.join(format!("..{version}"));
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("config.yaml"), config(tag)).unwrap();
        symlink(format!("..{version}"), dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    };
    publish("2026_01", "v1");
    symlink("..data/config.yaml", dir.join("config.tmp")).unwrap();
    std::fs::rename(dir.join("config.tmp"), &proxy.config_path).unwrap();
    // Let the proxy settle on the (unchanged) content behind the new link.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        client::get(addr(port), "example.com", "/")
            .await
            .header("x-config"),
        Some("v1")
    );

    // An update only swaps the `..data` link; config.yaml itself is never touched.
    publish("2026_02", "v2");
    assert!(
        get_until(addr(port), "/", |g| g.header("x-config") == Some("v2")).await,
        "ConfigMap update not seen; log:\n{}",
        proxy.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let up = TestUpstream::start("one").await;
    let port = free_port();
    let mut proxy = Proxy::start_with(
        &simple_config(
            port,
            &tagged_route("all", "one", "v1"),
            &host_backend("one", up.addr),
        ),
        &["--drain-timeout", "5s"],
    );
    let in_flight = tokio::spawn(client::get(addr(port), "example.com", "/delay/1000"));
    let h2_req = Request::get(format!("http://{}/delay/1000", addr(port)))
        .header("host", "example.com")
        .body(Full::default())
        .unwrap();
    let h2_in_flight = tokio::spawn(async move { client::send(&client::h2c(), h2_req).await });
    assert!(eventually(LIMIT, || up.count("/delay/1000") == 2));

    let sent = Instant::now();
    proxy.sigterm();
    assert!(
        eventually(Duration::from_millis(800), || {
            client::blocking_get(proxy.ready, "/healthz/ready")
                .is_some_and(|(s, b)| s == 503 && b.contains("draining"))
        }),
        "readiness did not report draining; log:\n{}",
        proxy.logs()
    );
    assert!(
        eventually(Duration::from_millis(800), || std::net::TcpStream::connect(
            addr(port)
        )
        .is_err()),
        "new connections still accepted while draining"
    );
    assert!(
        proxy.try_exited().is_none(),
        "exited before the request finished"
    );

    let got = tokio::time::timeout(LIMIT, in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.status, 200, "{}", proxy.logs());
    assert_eq!(got.body, "delayed 1000ms");
    let got = tokio::time::timeout(LIMIT, h2_in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.status, got.version), (200, http::Version::HTTP_2));
    assert_eq!(got.body, "delayed 1000ms");
    let status = proxy
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running after the drain; log:\n{}", proxy.logs()));
    assert!(status.success(), "exit {status}; log:\n{}", proxy.logs());
    assert!(sent.elapsed() < Duration::from_secs(5));
    assert!(proxy.logs().contains("drained"), "{}", proxy.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn open_websocket_is_counted_and_drained_until_it_closes() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let up = TestUpstream::start("ws").await;
    let port = free_port();
    let mut proxy = Proxy::start_with(
        &simple_config(
            port,
            &tagged_route("all", "ws", "v1"),
            &host_backend("ws", up.addr),
        ),
        &["--drain-timeout", "5s"],
    );
    let tcp = tokio::net::TcpStream::connect(addr(port)).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("ws://example.com/ws", tcp)
        .await
        .unwrap();
    let active = |proxy: &Proxy| {
        proxy.metric(
            "agentmesh_downstream_connections_active",
            &[("bind", "main")],
        )
    };
    // The tunnel is an open client connection.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(active(&proxy), 1.0, "{}", proxy.metrics_text());

    // During the drain the tunnel keeps working, and the proxy waits for it.
    proxy.sigterm();
    assert!(eventually(LIMIT, || client::blocking_get(
        proxy.ready,
        "/healthz/ready"
    )
    .is_some_and(|(s, _)| s == 503)));
    ws.send(Message::text("still here")).await.unwrap();
    let echo = tokio::time::timeout(LIMIT, ws.next()).await.unwrap();
    assert_eq!(echo.unwrap().unwrap(), Message::text("still here"));
    assert!(proxy.try_exited().is_none(), "exited with a tunnel open");

    let closed = Instant::now();
    ws.close(None).await.unwrap();
    drop(ws);
    let status = proxy
        .wait_exit(Duration::from_secs(4))
        .unwrap_or_else(|| panic!("still running after the tunnel closed:\n{}", proxy.logs()));
    assert!(status.success());
    assert!(
        closed.elapsed() < Duration::from_secs(2),
        "{:?}",
        closed.elapsed()
    );
    assert!(proxy.logs().contains("drained"), "{}", proxy.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_timeout_bounds_the_wait_for_slow_requests() {
    let up = TestUpstream::start("one").await;
    let port = free_port();
    let mut proxy = Proxy::start_with(
        &simple_config(
            port,
            &tagged_route("all", "one", "v1"),
            &host_backend("one", up.addr),
        ),
        &["--drain-timeout", "300ms"],
    );
    let in_flight = tokio::spawn(client::get(addr(port), "example.com", "/delay/5000"));
    assert!(eventually(LIMIT, || up.count("/delay/5000") == 1));

    let sent = Instant::now();
    proxy.sigterm();
    let status = proxy
        .wait_exit(Duration::from_secs(3))
        .unwrap_or_else(|| panic!("still running 3 s after SIGTERM; log:\n{}", proxy.logs()));
    let took = sent.elapsed();
    assert!(status.success(), "exit {status}; log:\n{}", proxy.logs());
    assert!(
        took < Duration::from_millis(1200),
        "exit took {took:?} with a 300ms drain timeout"
    );
    assert!(
        proxy.logs().contains("drain deadline passed"),
        "{}",
        proxy.logs()
    );
    in_flight.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_reports_readiness_dumps_config_without_secrets_and_sets_log_level() {
    let up = TestUpstream::start("one").await;
    let port = free_port();
    let routes = "    - name: api\n      backends:\n      - backend: one\n      policies:\n        requestHeaders:\n          set:\n          - { name: authorization, value: \"Bearer sk-live-SECRET123\" }\n          - { name: x-api-key, value: \"key-SECRET456\" }";
    let proxy = Proxy::start(&simple_config(port, routes, &host_backend("one", up.addr)));

    let (status, body) = client::blocking_get(proxy.ready, "/healthz/ready").unwrap();
    assert_eq!((status, body.as_str()), (200, "ready\n"));

    let got = client::get(proxy.admin, "localhost", "/config_dump").await;
    assert_eq!(got.status, 200);
    assert!(
        got.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let dump = got.json();
    assert_eq!(dump["binds"][0]["name"], "main");
    assert_eq!(dump["binds"][0]["port"], port);
    assert_eq!(dump["binds"][0]["listeners"][0]["name"], "http");
    assert_eq!(dump["binds"][0]["listeners"][0]["routes"][0]["name"], "api");
    assert_eq!(dump["backends"][0]["name"], "one");
    assert_eq!(dump["backends"][0]["host"]["address"], up.addr.to_string());
    assert!(
        !got.body.contains("SECRET"),
        "config_dump leaks a secret:\n{}",
        got.body
    );
    // The upstream still gets the real value.
    client::get(addr(port), "example.com", "/").await;
    assert_eq!(
        up.received()[0].headers["authorization"],
        "Bearer sk-live-SECRET123"
    );

    assert_eq!(admin_post(proxy.admin, "/logging?level=debug").await.0, 200);
    let got = client::get(proxy.admin, "localhost", "/logging").await;
    assert_eq!(got.body.trim(), "debug");
    let (status, body) = admin_post(proxy.admin, "/logging?level=loud").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("loud"), "{body}");
    let got = client::get(proxy.admin, "localhost", "/logging").await;
    assert_eq!(got.body.trim(), "debug");

    // The level really applies: at `warn`, a new upstream connection logs nothing.
    assert_eq!(admin_post(proxy.admin, "/logging?level=warn").await.0, 200);
    let opened = |logs: &str| logs.matches("upstream connection opened").count();
    let before = opened(&proxy.logs());
    // Two requests at once need a second upstream connection.
    let (a, b) = tokio::join!(
        client::get(addr(port), "example.com", "/delay/200"),
        client::get(addr(port), "example.com", "/delay/200")
    );
    assert_eq!((a.status, b.status), (200, 200));
    assert!(up.connections.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    assert_eq!(opened(&proxy.logs()), before, "{}", proxy.logs());
}

#[test]
fn startup_with_an_invalid_config_exits_non_zero_naming_the_field() {
    let port = free_port();
    let bad = simple_config(
        port,
        &tagged_route("r", "nowhere", "v1"),
        &host_backend("one", addr(9)),
    );
    let mut proxy = Proxy::spawn(&bad, &[]);
    let status = proxy.wait_exit(LIMIT).expect("proxy kept running");
    assert!(!status.success());
    let logs = proxy.logs();
    assert!(
        logs.contains(r#"route "main/http/r" field backends[0].backend"#),
        "{logs}"
    );
}

#[test]
fn startup_on_a_busy_port_exits_non_zero_naming_the_bind() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let config = simple_config(
        port,
        &tagged_route("r", "one", "v1"),
        &host_backend("one", addr(9)),
    );
    let mut proxy = Proxy::spawn(&config, &[]);
    let status = proxy.wait_exit(LIMIT).expect("proxy kept running");
    assert!(!status.success());
    let logs = proxy.logs();
    assert!(
        logs.contains(r#"bind "main""#) && logs.contains(&port.to_string()),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_promtool_and_carry_request_and_upstream_labels() {
    let up = TestUpstream::start("one").await;
    let dead = support::free_port();
    let port = free_port();
    let routes = "    - name: api\n      matches: [{ path: { prefix: /api } }]\n      backends:\n      - backend: one\n    - name: down\n      matches: [{ path: { prefix: /down } }]\n      backends:\n      - backend: dead";
    let backends = format!(
        "{}\n{}",
        host_backend("one", up.addr),
        host_backend("dead", addr(dead))
    );
    let proxy = Proxy::start(&simple_config(port, routes, &backends));
    for _ in 0..3 {
        assert_eq!(
            client::get(addr(port), "example.com", "/api/x")
                .await
                .status,
            200
        );
    }
    assert_eq!(
        client::get(addr(port), "example.com", "/nope").await.status,
        404
    );
    assert_eq!(
        client::get(addr(port), "example.com", "/down").await.status,
        503
    );

    let text = proxy.metrics_text();
    agentmesh_e2e::promtool::assert_accepts(&text);

    let ok = [
        ("listener", "main/http"),
        ("route", "main/http/api"),
        ("backend", "one"),
        ("method", "GET"),
        ("status_class", "2xx"),
    ];
    let value = |name: &str, labels: &[(&str, &str)]| support::metric_value(&text, name, labels);
    assert_eq!(value("agentmesh_requests_total", &ok), 3.0, "{text}");
    assert_eq!(
        value("agentmesh_request_duration_seconds_count", &ok),
        3.0,
        "{text}"
    );
    let inf: Vec<_> = ok.iter().copied().chain([("le", "+Inf")]).collect();
    assert_eq!(
        value("agentmesh_request_duration_seconds_bucket", &inf),
        3.0,
        "{text}"
    );
    assert_eq!(
        value(
            "agentmesh_requests_total",
            &[
                ("listener", "main/http"),
                ("route", ""),
                ("status_class", "4xx")
            ]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(
            "agentmesh_requests_total",
            &[
                ("route", "main/http/down"),
                ("backend", "dead"),
                ("status_class", "5xx")
            ]
        ),
        1.0,
        "{text}"
    );
    assert!(
        value(
            "agentmesh_upstream_connections_total",
            &[("backend", "one")]
        ) >= 1.0
    );
    assert!(
        text.contains("agentmesh_upstream_connections_active{backend=\"one\"}"),
        "{text}"
    );
    assert!(
        value(
            "agentmesh_upstream_connect_errors_total",
            &[("backend", "dead")]
        ) >= 1.0
    );
    assert!(
        value(
            "agentmesh_downstream_connections_total",
            &[("bind", "main")]
        ) >= 5.0
    );
    assert_eq!(
        value("agentmesh_config_reloads_total", &[("outcome", "applied")]),
        1.0
    );
}

fn proxy_bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentmesh-proxy"));
    for var in [
        "AGENTMESH_CONFIG",
        "AGENTMESH_MODE",
        "AGENTMESH_ADMIN_ADDR",
        "AGENTMESH_METRICS_ADDR",
        "AGENTMESH_READY_ADDR",
        "AGENTMESH_LOG_FORMAT",
        "AGENTMESH_LOG",
        "AGENTMESH_DRAIN_TIMEOUT",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

#[test]
fn cli_help_documents_every_flag() {
    let out = proxy_bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--mode",
        "--admin-addr",
        "--metrics-addr",
        "--ready-addr",
        "--log-format",
        "--log-level",
        "--drain-timeout",
        "--no-watch",
        "--help",
        "--version",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
    for subcommand in ["validate", "schema"] {
        assert!(
            help.contains(subcommand),
            "--help lacks {subcommand}:\n{help}"
        );
    }
}

#[test]
fn cli_validate_accepts_a_good_file_and_names_resource_and_field_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = simple_config(
        8080,
        &tagged_route("r", "one", "v1"),
        &host_backend("one", addr(9)),
    );
    let good_path = dir.path().join("good.yaml");
    std::fs::write(&good_path, &good).unwrap();
    let out = proxy_bin()
        .arg("validate")
        .arg(&good_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad_path = dir.path().join("bad.yaml");
    std::fs::write(&bad_path, good.replace("backend: one", "backend: nowhere")).unwrap();
    let out = proxy_bin().arg("validate").arg(&bad_path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(r#"route "main/http/r" field backends[0].backend"#),
        "{stderr}"
    );

    let unknown_path = dir.path().join("unknown.yaml");
    std::fs::write(
        &unknown_path,
        good.replace("address: 127.0.0.1", "adress: 127.0.0.1"),
    )
    .unwrap();
    let out = proxy_bin()
        .arg("validate")
        .arg(&unknown_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("binds[0]") && stderr.contains("adress"),
        "{stderr}"
    );
}

#[test]
fn cli_without_config_says_what_is_missing() {
    let out = proxy_bin().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--config"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_that_removes_a_backend_closes_its_pooled_connections() {
    let old = TestUpstream::start("old").await;
    let new = TestUpstream::start("new").await;
    let port = free_port();
    let config = |backend: &str, up: &TestUpstream| {
        simple_config(
            port,
            &tagged_route("all", backend, "x"),
            &host_backend(backend, up.addr),
        )
    };
    let proxy = Proxy::start(&config("old", &old));
    assert_eq!(
        client::get(addr(port), "example.com", "/").await.status,
        200
    );
    let active = |b: &str| proxy.metric("agentmesh_upstream_connections_active", &[("backend", b)]);
    assert_eq!(
        active("old"),
        1.0,
        "one pooled connection to the old backend"
    );

    proxy.write_config(&config("new", &new));
    assert!(get_until(addr(port), "/", |g| g.header("x-upstream") == Some("new")).await);
    assert!(
        eventually(LIMIT, || active("old") == 0.0),
        "the removed backend's idle connection was not closed:\n{}",
        proxy.metrics_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_adding_a_bind_on_a_taken_port_is_rejected_as_a_whole() {
    let up = TestUpstream::start("one").await;
    let (main_port, taken_port) = (free_port(), free_port());
    // Another process (here: this test) holds the port the new bind wants.
    let _holder = std::net::TcpListener::bind(("127.0.0.1", taken_port)).unwrap();
    let base = simple_config(
        main_port,
        &tagged_route("all", "one", "v1"),
        &host_backend("one", up.addr),
    );
    let proxy = Proxy::start(&base);
    let extra_bind = format!(
        "- name: extra\n  address: 127.0.0.1\n  port: {taken_port}\n  listeners:\n  - name: http\n    routes:\n{}\n",
        tagged_route("all", "one", "extra")
    );
    // The same change also retags the main route: none of it may be applied.
    let changed = base
        .replacen("binds:\n", &format!("binds:\n{extra_bind}"), 1)
        .replace("\"v1\"", "\"v2\"");
    proxy.write_config(&changed);
    assert!(
        eventually(LIMIT, || reloads(&proxy, "rejected") == 1.0),
        "change not rejected; log:\n{}",
        proxy.logs()
    );
    let logs = proxy.logs();
    assert!(
        logs.contains(&format!(
            r#"bind "extra" field port: cannot listen on 127.0.0.1:{taken_port}"#
        )),
        "log must name the bind and port:\n{logs}"
    );
    let got = client::get(addr(main_port), "example.com", "/").await;
    assert_eq!(
        got.header("x-config"),
        Some("v1"),
        "the old config keeps serving"
    );
}

/// The classic-sidecar lifecycle hooks the injector writes into pods, run as the kubelet
/// runs them: `agentmesh-proxy wait` returns once the running proxy is ready, and
/// `agentmesh-proxy drain` turns its readiness to not ready while it keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn wait_and_drain_hooks_follow_the_running_proxy() {
    let up = TestUpstream::start("one").await;
    let port = free_port();
    let proxy = Proxy::start(&simple_config(
        port,
        &tagged_route("r", "one", "v1"),
        &host_backend("one", up.addr),
    ));
    let bin = env!("CARGO_BIN_EXE_agentmesh-proxy");
    let hook = |args: &[&str]| {
        let out = Command::new(bin).args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let ready = proxy.ready.to_string();
    let admin = proxy.admin.to_string();
    assert_eq!(
        hook(&["wait", "--ready-addr", &ready, "--timeout", "10s"]),
        (true, String::new())
    );

    let started = Instant::now();
    let (ok, err) = hook(&["drain", "--admin-addr", &admin, "--grace", "300ms"]);
    assert!(ok, "{err}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let (status, body) = client::blocking_get(proxy.ready, "/healthz/ready").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("draining"), "{body}");
    // Still serving: draining only moves new traffic away.
    assert_eq!(
        client::get(addr(port), "example.com", "/").await.status,
        200
    );

    // Now never ready again: `wait` gives up, saying why.
    let (ok, err) = hook(&["wait", "--ready-addr", &ready, "--timeout", "300ms"]);
    assert!(!ok);
    assert!(
        err.contains("was not ready") && err.contains("draining"),
        "{err}"
    );
}
