//! Traffic policies seen from a client: header changes, redirects, URL rewrites, direct
//! responses, CORS, timeouts, retries and mirroring, each through the real proxy binary
//! with real upstreams on loopback.
#![allow(clippy::unwrap_used, missing_docs)]

mod peers;
mod support;

use std::fmt::Display;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::client::{self, Got};
use support::upstream::TestUpstream;
use support::{Proxy, eventually, simple_config};

/// A backend entry of the config's `backends` list, with optional inline policies.
fn backend(name: &str, addr: impl Display, policies: &str) -> String {
    let mut s = format!("- name: {name}\n  host: {{ address: \"{addr}\" }}\n");
    if !policies.is_empty() {
        s += &format!("  policies: {policies}\n");
    }
    s
}

/// A route entry (indented for `simple_config`): taken for `host` (any host when empty)
/// and a path `prefix`, sent to `to` (none when empty), with inline `policies`.
fn route(name: &str, host: &str, prefix: &str, to: &str, policies: &str) -> String {
    let mut s = format!("    - name: {name}\n");
    if !host.is_empty() {
        s += &format!("      hostnames: [\"{host}\"]\n");
    }
    s += &format!("      matches: [{{ path: {{ prefix: \"{prefix}\" }} }}]\n");
    if !to.is_empty() {
        s += &format!("      backends: [{{ backend: {to} }}]\n");
    }
    if !policies.is_empty() {
        s += &format!("      policies: {policies}\n");
    }
    s
}

/// Starts the proxy on a free port with `routes` and `backends`, plus top-level `extra`
/// YAML (such as `settings`).
fn start(routes: &[String], backends: &[String], extra: &str) -> (Proxy, u16) {
    let (routes, backends) = (routes.concat(), backends.concat());
    peers::start_proxy(|port| simple_config(port, routes.trim_end(), &backends) + extra)
}

/// Sends one request over HTTP/1.1; `host` goes in the Host header.
async fn call(
    port: u16,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Got {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    client::send(&client::http1(), req).await
}

async fn get(port: u16, host: &str, path: &str) -> Got {
    call(port, "GET", host, path, &[], "").await
}

/// Every value of a header as the upstream received it in its `i`-th request.
fn received_values(up: &TestUpstream, i: usize, name: &str) -> Vec<String> {
    up.received()[i]
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

// ---- header modifiers ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_header_set_add_and_remove_reach_the_upstream() {
    let up = TestUpstream::start("one").await;
    let policy = "{ requestHeaders: { set: [{ name: x-set, value: new }], add: [{ name: x-multi, value: added }], remove: [x-secret] } }";
    let (proxy, port) = start(
        &[route("all", "", "/", "one", policy)],
        &[backend("one", up.addr, "")],
        "",
    );
    let got = call(
        port,
        "GET",
        "example.com",
        "/echo",
        &[
            ("x-set", "old"),
            ("x-multi", "original"),
            ("x-secret", "hunter2"),
            ("x-untouched", "kept"),
        ],
        "",
    )
    .await;
    assert_eq!(got.status, 200, "{}", proxy.logs());
    let echo = got.json();
    assert_eq!(echo["headers"]["x-set"], "new");
    assert_eq!(echo["headers"]["x-untouched"], "kept");
    assert!(echo["headers"].get("x-secret").is_none(), "{echo}");
    assert_eq!(received_values(&up, 0, "x-set"), ["new"]);
    assert_eq!(received_values(&up, 0, "x-multi"), ["original", "added"]);
    assert!(received_values(&up, 0, "x-secret").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn response_header_set_add_and_remove_reach_the_client() {
    let up = TestUpstream::start("one").await;
    let policy = "{ responseHeaders: { set: [{ name: x-upstream, value: hidden }], add: [{ name: x-served-by, value: agentmesh }, { name: x-served-by, value: again }], remove: [content-type] } }";
    let (proxy, port) = start(
        &[route("all", "", "/", "one", policy)],
        &[backend("one", up.addr, "")],
        "",
    );
    let got = get(port, "example.com", "/echo").await;
    assert_eq!(got.status, 200, "{}", proxy.logs());
    assert_eq!(got.header("x-upstream"), Some("hidden"));
    let served: Vec<_> = got.headers.get_all("x-served-by").iter().collect();
    assert_eq!(served, ["agentmesh", "again"]);
    assert!(
        got.headers.get("content-type").is_none(),
        "{:?}",
        got.headers
    );
    assert_eq!(got.json()["path"], "/echo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn most_specific_policy_wins_per_kind_listener_route_backend() {
    let one = TestUpstream::start("one").await;
    let two = TestUpstream::start("two").await;
    let set = |v: &str| format!("requestHeaders: {{ set: [{{ name: x-level, value: {v} }}] }}");
    let yaml = |port: u16| {
        format!(
            "binds:
- name: main
  address: 127.0.0.1
  port: {port}
  listeners:
  - name: http
    policies: {{ {listener}, responseHeaders: {{ set: [{{ name: x-listener, value: yes }}] }} }}
    routes:
    - name: plain
      matches: [{{ path: {{ prefix: /plain }} }}]
      backends: [{{ backend: one }}]
    - name: routed
      matches: [{{ path: {{ prefix: /routed }} }}]
      backends: [{{ backend: one }}]
      policies: {{ {route} }}
    - name: backended
      matches: [{{ path: {{ prefix: /backended }} }}]
      backends: [{{ backend: two }}]
      policies: {{ {route} }}
backends:
{one}{two}",
            listener = set("listener"),
            route = set("route"),
            one = backend("one", one.addr, ""),
            two = backend("two", two.addr, &format!("{{ {} }}", set("backend"))),
        )
    };
    let (proxy, port) = peers::start_proxy(yaml);
    for (path, level) in [
        ("/plain", "listener"),
        ("/routed", "route"),
        ("/backended", "backend"),
    ] {
        let got = get(port, "example.com", path).await;
        assert_eq!(got.status, 200, "{path}: {}", proxy.logs());
        assert_eq!(got.json()["headers"]["x-level"], level, "{path}");
        // Another kind set only on the listener still applies under a route override.
        assert_eq!(got.header("x-listener"), Some("yes"), "{path}");
    }
}

// ---- redirect ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redirect_builds_the_exact_location_and_never_reaches_the_upstream() {
    let up = TestUpstream::start("one").await;
    let routes = [
        route(
            "scheme",
            "",
            "/scheme",
            "one",
            "{ redirect: { scheme: https, host: secure.example, port: 8443, status: 301 } }",
        ),
        route(
            "full",
            "",
            "/full",
            "one",
            "{ redirect: { path: { full: /landing }, status: 308 } }",
        ),
        route(
            "prefix",
            "",
            "/old",
            "",
            "{ redirect: { path: { prefix: /new } } }",
        ),
        route(
            "tohttps",
            "",
            "/tohttps",
            "",
            "{ redirect: { scheme: https } }",
        ),
        route(
            "sameport",
            "",
            "/sameport",
            "",
            "{ redirect: { path: { full: /here }, status: 307 } }",
        ),
    ];
    let (proxy, port) = start(&routes, &[backend("one", up.addr, "")], "");
    let cases = [
        (
            "shop.example",
            "/scheme/a?q=1&r=two",
            301,
            "https://secure.example:8443/scheme/a?q=1&r=two",
        ),
        (
            "shop.example",
            "/full/x/y?q=1",
            308,
            "http://shop.example/landing?q=1",
        ),
        (
            "shop.example",
            "/old/a/b?x=1",
            302,
            "http://shop.example/new/a/b?x=1",
        ),
        ("shop.example", "/old", 302, "http://shop.example/new"),
        // A new scheme means that scheme's well-known port.
        (
            "shop.example:8080",
            "/tohttps/p?k=v",
            302,
            "https://shop.example/tohttps/p?k=v",
        ),
        // Same scheme, no port given: the request's port stays.
        (
            "shop.example:8080",
            "/sameport/p?k=v",
            307,
            "http://shop.example:8080/here?k=v",
        ),
    ];
    for (host, path, status, location) in cases {
        let got = get(port, host, path).await;
        assert_eq!(got.status, status, "{host}{path}: {}", proxy.logs());
        assert_eq!(got.header("location"), Some(location), "{host}{path}");
    }
    assert!(up.received().is_empty(), "{:?}", up.received());
}

// ---- URL rewrite ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn url_rewrite_changes_host_and_path_and_keeps_the_query() {
    let up = TestUpstream::start("one").await;
    let routes = [
        route(
            "host",
            "",
            "/host",
            "one",
            "{ urlRewrite: { host: internal.example } }",
        ),
        route(
            "full",
            "",
            "/full",
            "one",
            "{ urlRewrite: { path: { full: /replaced } } }",
        ),
        route(
            "prefix",
            "",
            "/api",
            "one",
            "{ urlRewrite: { path: { prefix: /v2 } } }",
        ),
    ];
    let (proxy, port) = start(&routes, &[backend("one", up.addr, "")], "");

    let got = get(port, "public.example", "/host/x?q=1").await;
    assert_eq!(got.status, 200, "{}", proxy.logs());
    let echo = got.json();
    assert_eq!(echo["headers"]["host"], "internal.example");
    assert_eq!(echo["path"], "/host/x");
    assert_eq!(echo["query"]["q"], "1");

    let echo = get(port, "public.example", "/full/a/b?q=1&z=2")
        .await
        .json();
    assert_eq!(echo["path"], "/replaced");
    assert_eq!(echo["query"]["q"], "1");
    assert_eq!(echo["query"]["z"], "2");
    assert_eq!(echo["headers"]["host"], "public.example");

    let echo = get(port, "public.example", "/api/v1/x?a=1&b=2")
        .await
        .json();
    assert_eq!(echo["path"], "/v2/v1/x");
    assert_eq!(echo["query"]["a"], "1");
    assert_eq!(echo["query"]["b"], "2");

    let echo = get(port, "public.example", "/api").await.json();
    assert_eq!(echo["path"], "/v2");

    let seen: Vec<_> = up
        .received()
        .into_iter()
        .map(|r| r.path_and_query)
        .collect();
    assert_eq!(
        seen,
        [
            "/host/x?q=1",
            "/replaced?q=1&z=2",
            "/v2/v1/x?a=1&b=2",
            "/v2"
        ]
    );
}

// ---- direct response ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn direct_response_answers_without_touching_the_upstream() {
    let up = TestUpstream::start("one").await;
    let routes = [route(
        "maintenance",
        "",
        "/",
        "one",
        "{ directResponse: { status: 503, body: \"down for maintenance\" } }",
    )];
    let (proxy, port) = start(&routes, &[backend("one", up.addr, "")], "");
    let got = call(port, "POST", "example.com", "/anything", &[], "payload").await;
    assert_eq!(got.status, 503, "{}", proxy.logs());
    assert_eq!(got.body, "down for maintenance");
    assert!(
        got.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        got.headers
    );
    assert!(up.received().is_empty());
}

// ---- CORS ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cors_preflight_and_actual_requests() {
    let up = TestUpstream::start("one").await;
    let cors = "{ cors: { allowOrigins: [\"https://app.example.com\", \"https://*.trusted.example\"], allowMethods: [GET, POST], allowHeaders: [content-type, x-token], exposeHeaders: [x-upstream], allowCredentials: true, maxAge: 600s } }";
    let (proxy, port) = start(
        &[route("all", "", "/", "one", cors)],
        &[backend("one", up.addr, "")],
        "",
    );
    let preflight = |origin: &'static str| async move {
        call(
            port,
            "OPTIONS",
            "api.example",
            "/things",
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "x-token"),
            ],
            "",
        )
        .await
    };

    let got = preflight("https://app.example.com").await;
    assert_eq!(got.status, 204, "{}", proxy.logs());
    assert_eq!(
        got.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        got.header("access-control-allow-methods"),
        Some("GET, POST")
    );
    assert_eq!(
        got.header("access-control-allow-headers"),
        Some("content-type, x-token")
    );
    assert_eq!(got.header("access-control-max-age"), Some("600"));
    assert_eq!(got.header("access-control-allow-credentials"), Some("true"));
    assert!(
        up.received().is_empty(),
        "allowed preflight reached upstream"
    );

    let got = preflight("https://evil.example").await;
    assert_eq!(
        got.status, 200,
        "forwarded preflight gets the upstream answer"
    );
    assert_eq!(got.header("x-upstream"), Some("one"));
    assert!(got.header("access-control-allow-origin").is_none());
    assert!(got.header("access-control-allow-methods").is_none());
    assert_eq!(up.count("/things"), 1);
    assert_eq!(up.received()[0].method, "OPTIONS");

    let got = call(
        port,
        "GET",
        "api.example",
        "/things",
        &[("origin", "https://a.trusted.example")],
        "",
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.header("access-control-allow-origin"),
        Some("https://a.trusted.example")
    );
    assert_eq!(
        got.header("access-control-expose-headers"),
        Some("x-upstream")
    );
    assert_eq!(got.header("access-control-allow-credentials"), Some("true"));
    assert!(
        got.headers
            .get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap().contains("Origin"))
    );

    let got = call(
        port,
        "GET",
        "api.example",
        "/things",
        &[("origin", "https://evil.example")],
        "",
    )
    .await;
    assert_eq!(got.status, 200);
    assert!(got.header("access-control-allow-origin").is_none());
    assert!(got.header("access-control-expose-headers").is_none());
    assert!(got.header("access-control-allow-credentials").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cors_any_origin_without_credentials_answers_star() {
    let up = TestUpstream::start("one").await;
    let cors = "{ cors: { allowOrigins: [\"*\"], allowMethods: [GET] } }";
    let (proxy, port) = start(
        &[route("all", "", "/", "one", cors)],
        &[backend("one", up.addr, "")],
        "",
    );
    let got = call(
        port,
        "GET",
        "api.example",
        "/x",
        &[("origin", "https://anyone.example")],
        "",
    )
    .await;
    assert_eq!(got.status, 200, "{}", proxy.logs());
    assert_eq!(got.header("access-control-allow-origin"), Some("*"));
    assert!(got.header("access-control-allow-credentials").is_none());
}

// ---- timeouts ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backend_request_timeout_answers_504_quickly() {
    let up = TestUpstream::start("one").await;
    let routes = [route(
        "slow",
        "",
        "/",
        "one",
        "{ timeouts: { backendRequest: 0.2s } }",
    )];
    let (proxy, port) = start(&routes, &[backend("one", up.addr, "")], "");
    let started = Instant::now();
    let got = get(port, "example.com", "/delay/2000").await;
    let took = started.elapsed();
    assert_eq!(got.status, 504, "{}", proxy.logs());
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!(
        proxy.metric(
            "agentmesh_request_errors_total",
            &[("route", "main/http/slow"), ("reason", "upstream_timeout")]
        ),
        1.0
    );
    // A fast request on the same route is fine.
    assert_eq!(get(port, "example.com", "/delay/1").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_timeout_bounds_the_whole_request_across_retries() {
    let up = TestUpstream::start("one").await;
    // Unbounded, six 0.3 s tries would take about 1.8 s.
    let routes = [route(
        "bounded",
        "",
        "/",
        "one",
        "{ timeouts: { request: 0.5s, backendRequest: 0.3s }, retry: { attempts: 5, backoff: 0.01s } }",
    )];
    let (proxy, port) = start(&routes, &[backend("one", up.addr, "")], "");
    let started = Instant::now();
    let got = get(port, "example.com", "/delay/2000").await;
    let took = started.elapsed();
    assert_eq!(got.status, 504, "{}", proxy.logs());
    assert!(took < Duration::from_millis(1300), "took {took:?}");
    assert_eq!(
        proxy.metric(
            "agentmesh_request_errors_total",
            &[("reason", "request_timeout")]
        ),
        1.0
    );
    assert!(
        proxy.metric("agentmesh_upstream_retries_total", &[("backend", "one")]) >= 1.0,
        "the first try timed out and was retried before the request timeout"
    );
}

// ---- retries ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_turn_transient_503s_into_a_success() {
    let up = TestUpstream::start("one").await;
    let routes = [
        route(
            "three",
            "three.test",
            "/",
            "one",
            "{ retry: { attempts: 3, backoff: 0.01s } }",
        ),
        route(
            "one",
            "once.test",
            "/",
            "one",
            "{ retry: { attempts: 1, backoff: 0.01s } }",
        ),
    ];
    let (proxy, port) = start(&routes, &[backend("one", up.addr, "")], "");
    let flaky = |host: &'static str, id: &'static str| async move {
        call(
            port,
            "GET",
            host,
            "/flaky",
            &[("x-fail-times", "2"), ("x-test-id", id)],
            "",
        )
        .await
    };

    let got = flaky("three.test", "a").await;
    assert_eq!(got.status, 200, "{}", proxy.logs());
    assert_eq!(got.body, "attempt 3");
    assert_eq!(up.count("/flaky"), 3);
    assert_eq!(
        proxy.metric("agentmesh_upstream_retries_total", &[("backend", "one")]),
        2.0
    );

    let got = flaky("once.test", "b").await;
    assert_eq!(got.status, 503);
    assert_eq!(up.count("/flaky"), 5, "one try and one retry");
    assert_eq!(
        proxy.metric("agentmesh_upstream_retries_total", &[("backend", "one")]),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connect_errors_are_retried_then_answered_503() {
    let (_hold, dead) = peers::dead_addr();
    let routes = [
        route(
            "retried",
            "retried.test",
            "/",
            "dead",
            "{ retry: { attempts: 2, backoff: 0.01s } }",
        ),
        route(
            "noretry",
            "noretry.test",
            "/",
            "dead2",
            "{ retry: { attempts: 2, backoff: 0.01s, onConnectError: false } }",
        ),
    ];
    let (proxy, port) = start(
        &routes,
        &[backend("dead", dead, ""), backend("dead2", dead, "")],
        "",
    );

    let got = get(port, "retried.test", "/x").await;
    assert_eq!(got.status, 503, "{}", proxy.logs());
    assert_eq!(
        proxy.metric("agentmesh_upstream_retries_total", &[("backend", "dead")]),
        2.0
    );
    assert_eq!(
        proxy.metric(
            "agentmesh_upstream_connect_errors_total",
            &[("backend", "dead")]
        ),
        3.0,
        "attempts + 1 tries"
    );
    assert_eq!(
        proxy.metric(
            "agentmesh_request_errors_total",
            &[("backend", "dead"), ("reason", "upstream_connect")]
        ),
        1.0
    );

    let got = get(port, "noretry.test", "/x").await;
    assert_eq!(got.status, 503);
    assert_eq!(
        proxy.metric("agentmesh_upstream_retries_total", &[("backend", "dead2")]),
        0.0,
        "onConnectError: false"
    );
    assert_eq!(
        proxy.metric(
            "agentmesh_upstream_connect_errors_total",
            &[("backend", "dead2")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_over_the_replay_limit_are_streamed_and_not_retried() {
    // Fails the first two requests (after reading their bodies): a retry would succeed.
    let rec = peers::BodyRecorder::start(2).await;
    let routes = [route(
        "r",
        "",
        "/",
        "rec",
        "{ retry: { attempts: 3, backoff: 0.01s } }",
    )];
    let (proxy, port) = start(
        &routes,
        &[backend("rec", rec.addr, "")],
        "settings:\n  maxReplayBodyBytes: 1024\n",
    );

    // Known length (Content-Length) over the replay limit.
    let big = "x".repeat(4096);
    let got = call(port, "POST", "example.com", "/upload", &[], &big).await;
    assert_eq!(got.status, 503, "{}", proxy.logs());
    assert_eq!(rec.bodies().len(), 1, "tried once");

    // Unknown length (chunked), larger than the limit.
    let req = Request::post(format!("http://127.0.0.1:{port}/upload"))
        .header("host", "example.com")
        .body(peers::chunked(4, 1024))
        .unwrap();
    let got = peers::send_streaming(req).await.unwrap();
    assert_eq!(got.status, 503, "{}", proxy.logs());
    let bodies = rec.bodies();
    assert_eq!(bodies.len(), 2, "tried once");
    assert!(
        bodies.iter().all(|b| b.len() == 4096),
        "whole bodies streamed"
    );
    assert_eq!(
        proxy.metric("agentmesh_upstream_retries_total", &[("backend", "rec")]),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_post_is_retried_with_the_full_body_each_time() {
    let rec = peers::BodyRecorder::start(2).await;
    let routes = [route(
        "r",
        "",
        "/",
        "rec",
        "{ retry: { attempts: 3, backoff: 0.01s } }",
    )];
    let (proxy, port) = start(&routes, &[backend("rec", rec.addr, "")], "");
    let got = call(port, "POST", "example.com", "/submit", &[], "small payload").await;
    assert_eq!(got.status, 200, "{}", proxy.logs());
    assert_eq!(got.body, "small payload");
    assert_eq!(rec.bodies(), vec![Bytes::from("small payload"); 3]);
    assert_eq!(
        proxy.metric("agentmesh_upstream_retries_total", &[("backend", "rec")]),
        2.0
    );
}

// ---- mirror ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirror_sends_a_copy_and_the_client_gets_the_primary_answer() {
    let primary = TestUpstream::start("primary").await;
    let shadow = TestUpstream::start("shadow").await;
    let rec = peers::BodyRecorder::start(0).await;
    let routes = [
        route(
            "get",
            "get.test",
            "/",
            "primary",
            "{ mirror: { backend: shadow } }",
        ),
        route(
            "post",
            "post.test",
            "/",
            "primary",
            "{ mirror: { backend: rec } }",
        ),
    ];
    let (proxy, port) = start(
        &routes,
        &[
            backend("primary", primary.addr, ""),
            backend("shadow", shadow.addr, ""),
            backend("rec", rec.addr, ""),
        ],
        "",
    );

    let got = get(port, "get.test", "/mirrored?x=1").await;
    assert_eq!(got.status, 200, "{}", proxy.logs());
    assert_eq!(got.header("x-upstream"), Some("primary"));
    assert_eq!(got.json()["server"], "primary");
    assert!(eventually(Duration::from_secs(5), || shadow
        .count("/mirrored")
        == 1));
    assert_eq!(shadow.received()[0].path_and_query, "/mirrored?x=1");
    assert_eq!(primary.count("/mirrored"), 1);
    assert!(eventually(Duration::from_secs(5), || proxy.metric(
        "agentmesh_mirror_requests_total",
        &[("backend", "shadow"), ("outcome", "sent")]
    ) == 1.0));

    let got = call(port, "POST", "post.test", "/submit", &[], "copy me").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["body"], "copy me");
    assert!(eventually(Duration::from_secs(5), || rec.bodies()
        == [Bytes::from("copy me")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirror_at_zero_percent_sends_nothing() {
    let primary = TestUpstream::start("primary").await;
    let shadow = TestUpstream::start("shadow").await;
    let routes = [route(
        "r",
        "",
        "/",
        "primary",
        "{ mirror: { backend: shadow, percentage: 0 } }",
    )];
    let (proxy, port) = start(
        &routes,
        &[
            backend("primary", primary.addr, ""),
            backend("shadow", shadow.addr, ""),
        ],
        "",
    );
    for i in 0..20 {
        let got = get(port, "example.com", &format!("/n/{i}")).await;
        assert_eq!(got.status, 200, "{}", proxy.logs());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(primary.received().len(), 20);
    assert!(shadow.received().is_empty());
    assert_eq!(
        proxy.metric("agentmesh_mirror_requests_total", &[("backend", "shadow")]),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_mirror_does_not_affect_the_client() {
    let primary = TestUpstream::start("primary").await;
    let (_hold, dead) = peers::dead_addr();
    let routes = [route(
        "r",
        "",
        "/",
        "primary",
        "{ mirror: { backend: shadow } }",
    )];
    let (proxy, port) = start(
        &routes,
        &[
            backend("primary", primary.addr, ""),
            backend("shadow", dead, ""),
        ],
        "",
    );
    let got = get(port, "example.com", "/x").await;
    assert_eq!(got.status, 200, "{}", proxy.logs());
    assert_eq!(got.json()["server"], "primary");
    assert!(
        eventually(Duration::from_secs(5), || proxy.metric(
            "agentmesh_mirror_requests_total",
            &[("backend", "shadow"), ("outcome", "failed")]
        ) == 1.0),
        "{}",
        proxy.metrics_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_chunked_post_is_retried_with_the_full_body_without_buffering_first() {
    // Chunked (no Content-Length) but under the replay limit: the first attempt streams
    // it while keeping a copy, and the retries replay the copy.
    let rec = peers::BodyRecorder::start(2).await;
    let routes = [route(
        "r",
        "",
        "/",
        "rec",
        "{ retry: { attempts: 3, backoff: 0.01s } }",
    )];
    let (proxy, port) = start(
        &routes,
        &[backend("rec", rec.addr, "")],
        "settings:\n  maxReplayBodyBytes: 8192\n",
    );
    let req = Request::post(format!("http://127.0.0.1:{port}/upload"))
        .header("host", "example.com")
        .body(peers::chunked(4, 1024))
        .unwrap();
    let got = peers::send_streaming(req).await.unwrap();
    assert_eq!(got.status, 200, "{}", proxy.logs());
    let bodies = rec.bodies();
    assert_eq!(bodies.len(), 3, "two failures, then success");
    assert!(
        bodies.iter().all(|b| b.len() == 4096),
        "every attempt got the whole body"
    );
    assert_eq!(
        proxy.metric("agentmesh_upstream_retries_total", &[("backend", "rec")]),
        2.0
    );
}
