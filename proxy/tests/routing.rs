//! Routing from a client's point of view: which listener and which route take a request
//! (hostnames, paths, methods, headers, query parameters, Gateway API precedence), how
//! weighted backends share traffic, and what a client gets when nothing matches.
//!
//! Every test runs the real proxy binary in front of real upstreams, each of which stamps
//! its name on the response (`x-upstream`), so a test reads which route answered.
#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use support::client::{self, Got};
use support::upstream::TestUpstream;
use support::{Proxy, free_port};

/// Named upstreams, one per route target, and the `backends:` YAML that points at them.
struct Upstreams(Vec<TestUpstream>);

impl Upstreams {
    async fn start(names: &[&str]) -> Upstreams {
        let mut ups = Vec::new();
        for name in names {
            ups.push(TestUpstream::start(name).await);
        }
        Upstreams(ups)
    }

    fn backends_yaml(&self) -> String {
        let mut out = String::from("backends:\n");
        for up in &self.0 {
            out.push_str(&format!(
                "- {{ name: {}, host: {{ address: \"{}\" }} }}\n",
                up.name, up.addr
            ));
        }
        out
    }

    fn get(&self, name: &str) -> &TestUpstream {
        self.0.iter().find(|u| u.name == name).unwrap()
    }
}

/// A config with one bind on `port` whose listeners are given as YAML (indented by 2).
fn config(port: u16, listeners: &str, ups: &Upstreams) -> String {
    format!(
        "binds:\n- name: main\n  address: 127.0.0.1\n  port: {port}\n  listeners:\n{listeners}\n{}",
        ups.backends_yaml()
    )
}

/// One client request.
struct Call<'a> {
    method: &'a str,
    host: &'a str,
    path: &'a str,
    headers: &'a [(&'a str, &'a str)],
}

impl<'a> Call<'a> {
    fn get(host: &'a str, path: &'a str) -> Self {
        Call {
            method: "GET",
            host,
            path,
            headers: &[],
        }
    }

    async fn send(&self, http: &Client<HttpConnector, Full<Bytes>>, addr: SocketAddr) -> Got {
        let mut req = Request::builder()
            .method(self.method)
            .uri(format!("http://{addr}{}", self.path))
            .header("host", self.host);
        for (k, v) in self.headers {
            req = req.header(*k, *v);
        }
        client::send(http, req.body(Full::default()).unwrap()).await
    }
}

/// Who answered: the upstream's name, or the status when the proxy answered itself.
fn answered_by(got: &Got) -> String {
    match got.header("x-upstream") {
        Some(name) => name.to_string(),
        None => got.status.to_string(),
    }
}

/// Sends every call and checks who answered each; reports all mismatches at once.
async fn expect_all(proxy: &Proxy, addr: SocketAddr, cases: &[(Call<'_>, &str)]) {
    let http = client::http1();
    let mut wrong = Vec::new();
    for (call, want) in cases {
        let got = call.send(&http, addr).await;
        let by = answered_by(&got);
        if by != *want {
            wrong.push(format!(
                "{} {} (host {}, headers {:?}): want {want}, got {by} ({})",
                call.method,
                call.path,
                call.host,
                call.headers,
                got.body.trim()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "wrong route:\n  {}\nproxy log:\n{}",
        wrong.join("\n  "),
        proxy.logs()
    );
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test(flavor = "multi_thread")]
async fn listener_is_chosen_by_host_exact_before_wildcard_and_catch_all_takes_the_rest() {
    let ups = Upstreams::start(&["rest", "wild", "exact", "other-wild"]).await;
    let port = free_port();
    // Config order is the opposite of specificity: the catch-all comes first.
    let listeners = "  - name: rest
    routes:
    - { name: all, backends: [{ backend: rest }] }
  - name: wild
    hostnames: ['*.example.com']
    routes:
    - { name: all, backends: [{ backend: wild }] }
  - name: exact
    hostnames: [api.example.com]
    routes:
    - { name: all, backends: [{ backend: exact }] }
  - name: longer-wild
    hostnames: ['*.eu.example.com']
    routes:
    - { name: all, backends: [{ backend: other-wild }] }";
    let proxy = Proxy::start(&config(port, listeners, &ups));
    expect_all(
        &proxy,
        addr(port),
        &[
            (Call::get("api.example.com", "/"), "exact"),
            (Call::get("API.Example.COM:8080", "/"), "exact"),
            (Call::get("a.example.com", "/"), "wild"),
            (Call::get("a.b.example.com", "/"), "wild"),
            (Call::get("x.eu.example.com", "/"), "other-wild"),
            (Call::get("example.com", "/"), "rest"),
            (Call::get("notexample.com", "/"), "rest"),
            (Call::get("other.org", "/"), "rest"),
        ],
    )
    .await;
    let got = Call::get("api.example.com", "/x")
        .send(&client::http1(), addr(port))
        .await;
    assert_eq!(got.json()["headers"]["host"], "api.example.com");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_matching_no_listener_for_the_host_is_404() {
    let ups = Upstreams::start(&["wild"]).await;
    let port = free_port();
    let listeners = "  - name: wild
    hostnames: ['*.example.com']
    routes:
    - { name: all, backends: [{ backend: wild }] }";
    let proxy = Proxy::start(&config(port, listeners, &ups));
    expect_all(
        &proxy,
        addr(port),
        &[
            (Call::get("a.example.com", "/"), "wild"),
            (Call::get("a.b.example.com", "/"), "wild"),
            // A wildcard needs at least one label in front of the suffix.
            (Call::get("example.com", "/"), "404"),
            (Call::get(".example.com", "/"), "404"),
            (Call::get("a.example.community", "/"), "404"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn host_matching_route_hostnames_narrow_the_listener_and_exact_beats_wildcard() {
    let ups = Upstreams::start(&["wild", "exact", "any"]).await;
    let port = free_port();
    // The routes are listed least specific first.
    let listeners = "  - name: http
    routes:
    - { name: any, backends: [{ backend: any }] }
    - { name: wild, hostnames: ['*.example.com'], backends: [{ backend: wild }] }
    - { name: exact, hostnames: [api.example.com], backends: [{ backend: exact }] }
  - name: narrow
    hostnames: ['*.narrow.test']
    routes:
    - { name: only, hostnames: [a.narrow.test], backends: [{ backend: exact }] }";
    let proxy = Proxy::start(&config(port, listeners, &ups));
    expect_all(
        &proxy,
        addr(port),
        &[
            (Call::get("api.example.com", "/"), "exact"),
            (Call::get("web.example.com", "/"), "wild"),
            (Call::get("a.b.example.com", "/"), "wild"),
            (Call::get("example.com", "/"), "any"),
            (Call::get("a.narrow.test", "/"), "exact"),
            // The listener takes b.narrow.test, but its only route does not.
            (Call::get("b.narrow.test", "/"), "404"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn path_matching_exact_prefix_on_segment_boundary_and_whole_path_regex() {
    let ups = Upstreams::start(&["exact", "prefix", "slash-prefix", "regex"]).await;
    let port = free_port();
    let listeners = "  - name: http
    routes:
    - { name: exact, matches: [{ path: { exact: /exact } }], backends: [{ backend: exact }] }
    - { name: prefix, matches: [{ path: { prefix: /api } }], backends: [{ backend: prefix }] }
    - { name: slash, matches: [{ path: { prefix: /docs/ } }], backends: [{ backend: slash-prefix }] }
    - { name: regex, matches: [{ path: { regex: '/v[0-9]+/items' } }], backends: [{ backend: regex }] }";
    let proxy = Proxy::start(&config(port, listeners, &ups));
    let h = "example.com";
    expect_all(
        &proxy,
        addr(port),
        &[
            (Call::get(h, "/exact"), "exact"),
            (Call::get(h, "/exact?q=1"), "exact"),
            (Call::get(h, "/exact/"), "404"),
            (Call::get(h, "/exactly"), "404"),
            (Call::get(h, "/api"), "prefix"),
            (Call::get(h, "/api/"), "prefix"),
            (Call::get(h, "/api/x/y"), "prefix"),
            (Call::get(h, "/api?x=1"), "prefix"),
            (Call::get(h, "/apix"), "404"),
            (Call::get(h, "/ap"), "404"),
            (Call::get(h, "/docs"), "slash-prefix"),
            (Call::get(h, "/docs/intro"), "slash-prefix"),
            (Call::get(h, "/docsx"), "404"),
            (Call::get(h, "/v1/items"), "regex"),
            (Call::get(h, "/v42/items"), "regex"),
            // The regex must match the whole path.
            (Call::get(h, "/v1/items/3"), "404"),
            (Call::get(h, "/x/v1/items"), "404"),
            (Call::get(h, "/vx/items"), "404"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn method_header_and_query_conditions_all_must_hold() {
    let ups = Upstreams::start(&["hit", "miss"]).await;
    let port = free_port();
    let listeners = "  - name: http
    routes:
    - { name: fallback, backends: [{ backend: miss }] }
    - { name: post, matches: [{ path: { exact: /m }, method: post }], backends: [{ backend: hit }] }
    - name: header-exact
      matches: [{ path: { exact: /hx }, headers: [{ name: X-Env, exact: prod }] }]
      backends: [{ backend: hit }]
    - name: header-regex
      matches: [{ path: { exact: /hr }, headers: [{ name: x-ver, regex: 'v[0-9]+' }] }]
      backends: [{ backend: hit }]
    - name: header-present
      matches: [{ path: { exact: /hp }, headers: [{ name: x-debug, present: true }] }]
      backends: [{ backend: hit }]
    - name: header-absent
      matches: [{ path: { exact: /ha }, headers: [{ name: x-debug, present: false }] }]
      backends: [{ backend: hit }]
    - name: query-exact
      matches: [{ path: { exact: /qx }, queryParams: [{ name: env, exact: prod }] }]
      backends: [{ backend: hit }]
    - name: query-regex
      matches: [{ path: { exact: /qr }, queryParams: [{ name: id, regex: '[0-9]+' }] }]
      backends: [{ backend: hit }]
    - name: query-present
      matches: [{ path: { exact: /qp }, queryParams: [{ name: debug, present: true }] }]
      backends: [{ backend: hit }]
    - name: query-absent
      matches: [{ path: { exact: /qa }, queryParams: [{ name: debug, present: false }] }]
      backends: [{ backend: hit }]
    - name: all-of
      matches:
      - path: { exact: /all }
        method: PUT
        headers: [{ name: x-a, exact: '1' }]
        queryParams: [{ name: b, exact: '2' }]
      backends: [{ backend: hit }]
    - name: any-of
      matches:
      - { path: { exact: /any }, method: DELETE }
      - { path: { exact: /any }, headers: [{ name: x-a, exact: '1' }] }
      backends: [{ backend: hit }]";
    let proxy = Proxy::start(&config(port, listeners, &ups));
    let h = "example.com";
    let call = |method, path, headers| Call {
        method,
        host: h,
        path,
        headers,
    };
    expect_all(
        &proxy,
        addr(port),
        &[
            (call("POST", "/m", &[]), "hit"),
            (call("GET", "/m", &[]), "miss"),
            (call("GET", "/hx", &[("x-env", "prod")]), "hit"),
            (call("GET", "/hx", &[("X-ENV", "prod")]), "hit"),
            (call("GET", "/hx", &[("x-env", "Prod")]), "miss"),
            (call("GET", "/hx", &[("x-env", "production")]), "miss"),
            (call("GET", "/hx", &[]), "miss"),
            (call("GET", "/hr", &[("x-ver", "v12")]), "hit"),
            (call("GET", "/hr", &[("x-ver", "v12-beta")]), "miss"),
            (call("GET", "/hr", &[("x-ver", "xv1")]), "miss"),
            (call("GET", "/hp", &[("x-debug", "")]), "hit"),
            (call("GET", "/hp", &[("x-debug", "1")]), "hit"),
            (call("GET", "/hp", &[]), "miss"),
            (call("GET", "/ha", &[]), "hit"),
            (call("GET", "/ha", &[("x-debug", "1")]), "miss"),
            (call("GET", "/qx?env=prod", &[]), "hit"),
            (call("GET", "/qx?a=1&env=prod&b=2", &[]), "hit"),
            (call("GET", "/qx?env=pro%64", &[]), "hit"),
            (call("GET", "/qx?env=production", &[]), "miss"),
            (call("GET", "/qx?ENV=prod", &[]), "miss"),
            (call("GET", "/qx", &[]), "miss"),
            (call("GET", "/qr?id=123", &[]), "hit"),
            (call("GET", "/qr?id=12a", &[]), "miss"),
            (call("GET", "/qp?debug", &[]), "hit"),
            (call("GET", "/qp?debug=1", &[]), "hit"),
            (call("GET", "/qp?nodebug=1", &[]), "miss"),
            (call("GET", "/qa?other=1", &[]), "hit"),
            (call("GET", "/qa?debug=1", &[]), "miss"),
            (call("PUT", "/all?b=2", &[("x-a", "1")]), "hit"),
            (call("POST", "/all?b=2", &[("x-a", "1")]), "miss"),
            (call("PUT", "/all?b=3", &[("x-a", "1")]), "miss"),
            (call("PUT", "/all?b=2", &[]), "miss"),
            (call("DELETE", "/any", &[]), "hit"),
            (call("GET", "/any", &[("x-a", "1")]), "hit"),
            (call("GET", "/any", &[]), "miss"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn precedence_follows_the_gateway_api_not_config_order() {
    let names = [
        "root",
        "api",
        "api-v1",
        "exact",
        "plain",
        "query",
        "one-header",
        "two-headers",
        "method",
        "deep",
        "first",
        "second",
    ];
    let ups = Upstreams::start(&names).await;
    let port = free_port();
    // Every route is listed before the routes that must beat it.
    let listeners = "  - name: http
    routes:
    - { name: root, matches: [{ path: { prefix: / } }], backends: [{ backend: root }] }
    - { name: api, matches: [{ path: { prefix: /api } }], backends: [{ backend: api }] }
    - { name: api-v1, matches: [{ path: { prefix: /api/v1/ } }], backends: [{ backend: api-v1 }] }
    - { name: exact, matches: [{ path: { exact: /api/v1 } }], backends: [{ backend: exact }] }
    - { name: plain, matches: [{ path: { prefix: /svc } }], backends: [{ backend: plain }] }
    - name: query
      matches: [{ path: { prefix: /svc }, queryParams: [{ name: q, present: true }] }]
      backends: [{ backend: query }]
    - name: one-header
      matches: [{ path: { prefix: /svc }, headers: [{ name: x-a, present: true }] }]
      backends: [{ backend: one-header }]
    - name: two-headers
      matches:
      - path: { prefix: /svc }
        headers: [{ name: x-a, present: true }, { name: x-b, present: true }]
      backends: [{ backend: two-headers }]
    - name: method
      matches: [{ path: { prefix: /svc }, method: GET }]
      backends: [{ backend: method }]
    - name: deep
      matches: [{ path: { prefix: /svc/deep } }]
      backends: [{ backend: deep }]
    - { name: first, matches: [{ path: { prefix: /tie } }], backends: [{ backend: first }] }
    - { name: second, matches: [{ path: { prefix: /tie } }], backends: [{ backend: second }] }";
    let proxy = Proxy::start(&config(port, listeners, &ups));
    let call = |method, path, headers| Call {
        method,
        host: "example.com",
        path,
        headers,
    };
    let ab: &[(&str, &str)] = &[("x-a", "1"), ("x-b", "1")];
    expect_all(
        &proxy,
        addr(port),
        &[
            (call("GET", "/other", &[]), "root"),
            // A longer prefix beats a shorter one.
            (call("GET", "/api/x", &[]), "api"),
            (call("GET", "/api/v1/users", &[]), "api-v1"),
            // An exact path beats a prefix that matches the same path, even one written
            // longer (`/api/v1/` takes `/api/v1` too).
            (call("GET", "/api/v1", &[]), "exact"),
            // With the same path: method, then more headers, then query parameters.
            (call("POST", "/svc", &[]), "plain"),
            (call("POST", "/svc?q=1", &[]), "query"),
            (call("POST", "/svc?q=1", &[("x-a", "1")]), "one-header"),
            (call("POST", "/svc?q=1", ab), "two-headers"),
            (call("GET", "/svc?q=1", ab), "method"),
            // The path comes before every other condition.
            (call("GET", "/svc/deep?q=1", ab), "deep"),
            // Equal precedence: config order.
            (call("GET", "/tie", &[]), "first"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn weighted_backends_share_traffic_by_weight_and_weight_zero_gets_none() {
    let ups = Upstreams::start(&["light", "heavy", "off"]).await;
    let port = free_port();
    let listeners = "  - name: http
    routes:
    - name: split
      backends:
      - { backend: light, weight: 1 }
      - { backend: heavy, weight: 3 }
      - { backend: off, weight: 0 }";
    let proxy = Proxy::start(&config(port, listeners, &ups));
    let http = client::http1();
    let total = 800;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..total {
        let got = Call::get("example.com", "/").send(&http, addr(port)).await;
        assert_eq!(got.status, 200, "{}\n{}", got.body, proxy.logs());
        *seen.entry(answered_by(&got)).or_default() += 1;
    }
    let light = seen.get("light").copied().unwrap_or(0);
    let heavy = seen.get("heavy").copied().unwrap_or(0);
    // 25% expected; 20-30% is more than 3 standard deviations either side at n = 800.
    assert!(
        (total / 5..=total * 3 / 10).contains(&light),
        "light (weight 1 of 4) got {light} of {total}: {seen:?}"
    );
    assert_eq!(light + heavy, total, "{seen:?}");
    assert_eq!(ups.get("off").received().len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn unmatched_request_gets_404_naming_method_host_and_path_and_is_counted() {
    let ups = Upstreams::start(&["only"]).await;
    let port = free_port();
    let listeners = "  - name: http
    hostnames: [shop.example.com]
    routes:
    - { name: only, matches: [{ path: { exact: /only } }], backends: [{ backend: only }] }";
    let proxy = Proxy::start(&config(port, listeners, &ups));
    let http = client::http1();
    let errors = || proxy.metric("agentmesh_request_errors_total", &[("reason", "no_route")]);
    assert_eq!(errors(), 0.0);

    // A listener takes the host, but no route takes the path.
    let got = Call {
        method: "POST",
        host: "shop.example.com",
        path: "/nothing?x=1",
        headers: &[],
    }
    .send(&http, addr(port))
    .await;
    assert_eq!(got.status, 404, "{}", got.body);
    assert!(
        got.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        got.headers
    );
    for part in ["POST", "shop.example.com", "/nothing"] {
        assert!(got.body.contains(part), "{part} not in {:?}", got.body);
    }
    assert_eq!(errors(), 1.0);

    // No listener takes the host.
    let got = Call {
        method: "DELETE",
        host: "elsewhere.test",
        path: "/only",
        headers: &[],
    }
    .send(&http, addr(port))
    .await;
    assert_eq!(got.status, 404, "{}", got.body);
    for part in ["DELETE", "elsewhere.test", "/only"] {
        assert!(got.body.contains(part), "{part} not in {:?}", got.body);
    }
    assert_eq!(errors(), 2.0);
    assert_eq!(ups.get("only").received().len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_sees_the_host_that_routing_used_not_a_conflicting_host_header() {
    let ups = Upstreams::start(&["public", "admin", "rest"]).await;
    let port = free_port();
    let listeners = "  - name: public
    hostnames: [public.test]
    routes:
    - { name: all, backends: [{ backend: public }] }
  - name: admin
    hostnames: [admin.test]
    routes:
    - { name: all, backends: [{ backend: admin }] }
  - name: rest
    routes:
    - { name: all, backends: [{ backend: rest }] }";
    let proxy = Proxy::start(&config(port, listeners, &ups));

    // HTTP/1.1 absolute-form: the request target's host wins over the Host header
    // (RFC 9112 section 3.2.2), for routing and for what is forwarded.
    let raw = client::raw_exchange(
        addr(port),
        b"GET http://public.test/x HTTP/1.1\r\nHost: admin.test\r\nConnection: close\r\n\r\n",
    );
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}\n{}", proxy.logs());
    assert!(raw.contains("x-upstream: public"), "{raw}");
    let body = raw.split_once("\r\n\r\n").unwrap().1;
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(echo["headers"]["host"], "public.test", "{body}");

    // HTTP/2: `:authority` wins over a `host` header that disagrees with it.
    let req = Request::get(format!("http://127.0.0.1:{port}/y"))
        .header("host", "admin.test")
        .body(Full::default())
        .unwrap();
    let got = client::send(&client::h2c(), req).await;
    assert_eq!(got.version, http::Version::HTTP_2);
    assert_eq!(answered_by(&got), "rest", "{}", got.body);
    assert_eq!(got.json()["headers"]["host"], format!("127.0.0.1:{port}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn header_conditions_see_values_that_are_not_plain_ascii() {
    let ups = Upstreams::start(&["hit", "miss"]).await;
    let port = free_port();
    let listeners = "  - name: http
    routes:
    - { name: fallback, backends: [{ backend: miss }] }
    - name: present
      matches: [{ path: { exact: /hp }, headers: [{ name: x-debug, present: true }] }]
      backends: [{ backend: hit }]
    - name: absent
      matches: [{ path: { exact: /ha }, headers: [{ name: x-debug, present: false }] }]
      backends: [{ backend: hit }]
    - name: utf8
      matches: [{ path: { exact: /hu }, headers: [{ name: x-name, exact: café }] }]
      backends: [{ backend: hit }]
    - name: utf8-regex
      matches: [{ path: { exact: /hr }, headers: [{ name: x-name, regex: 'caf.' }] }]
      backends: [{ backend: hit }]";
    let proxy = Proxy::start(&config(port, listeners, &ups));
    // Header values may carry bytes above 0x7f (RFC 9110 obs-text): a Latin-1 `é`, or
    // UTF-8. A header that is there is present, whatever its bytes.
    let cases: [(&str, &[u8], &str); 5] = [
        ("/hp", b"x-debug: caf\xe9", "hit"),
        ("/ha", b"x-debug: caf\xe9", "miss"),
        ("/hu", "x-name: café".as_bytes(), "hit"),
        ("/hr", "x-name: café".as_bytes(), "hit"),
        ("/hu", b"x-name: caf\xe9", "miss"),
    ];
    for (path, header, want) in cases {
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: example.com\r\n").into_bytes();
        req.extend_from_slice(header);
        req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let raw = client::raw_exchange(addr(port), &req);
        assert!(
            raw.contains(&format!("x-upstream: {want}")),
            "{path} {:?}: want {want}, got:\n{raw}\n{}",
            String::from_utf8_lossy(header),
            proxy.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dot_segments_are_resolved_before_routing_and_forwarding() {
    let ups = Upstreams::start(&["public", "admin"]).await;
    let port = free_port();
    let listeners = "  - name: http
    routes:
    - { name: public, matches: [{ path: { prefix: /public } }], backends: [{ backend: public }] }
    - { name: admin, matches: [{ path: { prefix: /admin } }], backends: [{ backend: admin }] }";
    let proxy = Proxy::start(&config(port, listeners, &ups));
    let h = "example.com";
    expect_all(
        &proxy,
        addr(port),
        &[
            (Call::get(h, "/public/../admin/users"), "admin"),
            (Call::get(h, "/public/%2e%2E/admin"), "admin"),
            (Call::get(h, "/admin/./x"), "admin"),
            (Call::get(h, "/public/a/../b"), "public"),
        ],
    )
    .await;
    // The backend sees the path it was routed by, query kept.
    let got = Call::get(h, "/public/x/../../admin/users?id=7")
        .send(&client::http1(), addr(port))
        .await;
    assert_eq!(got.json()["path"], "/admin/users");
    assert_eq!(got.json()["query"]["id"], "7");
}
