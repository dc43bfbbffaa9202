//! End-to-end smoke test: the real binary, a real upstream, one request through.
#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use support::upstream::TestUpstream;
use support::{Proxy, client, free_port, simple_config};

#[tokio::test(flavor = "multi_thread")]
async fn request_goes_through_with_header_policies_and_is_counted() {
    let up = TestUpstream::start("one").await;
    let port = free_port();
    let routes = "    - name: all\n      backends:\n      - backend: one\n      policies:\n        requestHeaders:\n          set:\n          - { name: x-demo, value: \"1\" }\n        responseHeaders:\n          add:\n          - { name: x-served-by, value: agentmesh }";
    let backends = format!("- name: one\n  host: {{ address: \"{}\" }}", up.addr);
    let proxy = Proxy::start(&simple_config(port, routes, &backends));
    let got = client::get(
        format!("127.0.0.1:{port}").parse().unwrap(),
        "example.com",
        "/hello?x=1",
    )
    .await;
    assert_eq!(got.status, 200, "{}", proxy.logs());
    assert_eq!(got.header("x-served-by"), Some("agentmesh"));
    let echo = got.json();
    assert_eq!(echo["path"], "/hello");
    assert_eq!(echo["headers"]["x-demo"], "1");
    assert_eq!(echo["headers"]["host"], "example.com");
    assert_eq!(
        proxy.metric(
            "agentmesh_requests_total",
            &[("route", "main/http/all"), ("status_class", "2xx")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn single_and_multi_thread_schedulers_both_serve() {
    let up = TestUpstream::start("one").await;
    for threads in ["1", "2"] {
        let port = free_port();
        let routes = "    - name: all\n      backends:\n      - backend: one";
        let backends = format!("- name: one\n  host: {{ address: \"{}\" }}", up.addr);
        let proxy = Proxy::start_with(
            &simple_config(port, routes, &backends),
            &["--worker-threads", threads],
        );
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        for _ in 0..3 {
            let got = client::get(addr, "example.com", "/x").await;
            assert_eq!(
                got.status,
                200,
                "--worker-threads {threads}: {}",
                proxy.logs()
            );
        }
        assert_eq!(
            proxy.metric("agentmesh_requests_total", &[("status_class", "2xx")]),
            3.0
        );
    }
}
