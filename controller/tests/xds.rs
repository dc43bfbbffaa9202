//! Controller in folder mode → delta ADS over real gRPC → the real proxy binary → real
//! hyper upstreams; and the same ADS stream driven by `grpcurl`, a client we did not
//! write (installed by `scripts/install-xds-deps.sh`).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{
    Process, eventually, free_port, get, grpcurl_ads, proxy_binary, start_controller, upstream,
    write_atomically,
};

/// How long a change on disk may take to be served (generous for a loaded 2-core CI box;
/// the real figure is milliseconds).
const CHANGE_BOUND: Duration = Duration::from_secs(10);
/// How long a proxy may take to resynchronize after the controller comes back (the
/// reconnect backoff grows while the controller is away).
const RESYNC_BOUND: Duration = Duration::from_secs(25);

/// One bind on `port` with a route `/api` to `backend`; both backends defined.
fn config(
    port: u16,
    backend: &str,
    one: std::net::SocketAddr,
    two: std::net::SocketAddr,
) -> String {
    format!(
        "binds:
- name: main
  address: 127.0.0.1
  port: {port}
  listeners:
  - name: http
    routes:
    - name: api
      matches:
      - path: {{ prefix: /api }}
      backends:
      - backend: {backend}
"
    ) + &format!(
        "backends:
- name: one
  host: {{ address: \"{one}\" }}
- name: two
  host: {{ address: \"{two}\" }}
"
    )
}

async fn ready(port: u16) -> Option<(u16, String)> {
    get(port, "/healthz/ready").await
}

async fn metrics(port: u16) -> String {
    get(port, "/metrics")
        .await
        .map(|(_, b)| b)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_follows_the_folder_keeps_last_good_config_and_survives_the_controller() {
    let proxy_bin = proxy_binary();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("resources");
    std::fs::create_dir(&folder).unwrap();
    let one = upstream("one").await;
    let two = upstream("two").await;
    let (xds_port, http_port, ready_port, metrics_port) =
        (free_port(), free_port(), free_port(), free_port());
    write_atomically(&folder, "gateway.yaml", &config(http_port, "one", one, two));

    // The proxy starts first: no config, not ready, retrying the controller.
    let args: Vec<String> = [
        "--xds".to_string(),
        format!("http://127.0.0.1:{xds_port}"),
        "--xds-node-id".into(),
        "standalone~127.0.0.1~it-proxy".into(),
        "--admin-addr".into(),
        "off".into(),
        "--ready-addr".into(),
        format!("127.0.0.1:{ready_port}"),
        "--metrics-addr".into(),
        format!("127.0.0.1:{metrics_port}"),
    ]
    .into();
    let proxy = Process::start(&proxy_bin, &args, dir.path().join("proxy.log"));
    let (status, body) = eventually("the readiness port answers", CHANGE_BOUND, || {
        ready(ready_port)
    })
    .await;
    assert_eq!(status, 503, "ready before any config: {body}");
    assert!(
        metrics(metrics_port)
            .await
            .contains("agentmesh_xds_connected 0")
    );

    let mut controller =
        start_controller(&folder, xds_port, dir.path().join("controller-1.log")).await;
    eventually("the proxy is ready", RESYNC_BOUND, || async {
        ready(ready_port).await.filter(|(s, _)| *s == 200)
    })
    .await;
    assert_eq!(get(http_port, "/api/x").await, Some((200, "one".into())));
    assert!(
        metrics(metrics_port)
            .await
            .contains("agentmesh_xds_connected 1")
    );

    // A change on disk reaches the proxy; only the changed route is sent.
    write_atomically(&folder, "gateway.yaml", &config(http_port, "two", one, two));
    eventually("the proxy serves the new route", CHANGE_BOUND, || async {
        get(http_port, "/api/x").await.filter(|(_, b)| b == "two")
    })
    .await;
    eventually(
        "the controller sent one changed resource",
        CHANGE_BOUND,
        || async {
            controller
                .output()
                .contains("nonce=2 changed=1 removed=0")
                .then_some(())
        },
    )
    .await;

    // An invalid resource: the proxy NACKs with resource and field, the controller logs
    // it with the node id, and the old route keeps serving.
    write_atomically(
        &folder,
        "gateway.yaml",
        &config(http_port, "missing", one, two),
    );
    let nack = eventually("the controller logs the NACK", CHANGE_BOUND, || async {
        controller
            .output()
            .lines()
            .find(|l| l.contains("NACK"))
            .map(str::to_string)
    })
    .await;
    assert!(nack.contains("standalone~127.0.0.1~it-proxy"), "{nack}");
    assert!(
        nack.contains(
            r#"route "main/http/api" field backends[0].backend: no backend is named "missing""#
        ),
        "{nack}"
    );
    assert_eq!(get(http_port, "/api/x").await, Some((200, "two".into())));
    assert!(
        metrics(metrics_port)
            .await
            .contains("agentmesh_xds_updates_total{outcome=\"rejected\"} 1")
    );

    // The controller goes away: the proxy keeps serving and stays ready.
    controller.kill();
    eventually("the proxy notices", CHANGE_BOUND, || async {
        metrics(metrics_port)
            .await
            .contains("agentmesh_xds_connected 0")
            .then_some(())
    })
    .await;
    assert_eq!(get(http_port, "/api/x").await, Some((200, "two".into())));
    assert_eq!(ready(ready_port).await.map(|(s, _)| s), Some(200));

    // Fixed while the controller was away; on restart the proxy resynchronizes.
    write_atomically(&folder, "gateway.yaml", &config(http_port, "one", one, two));
    let controller = start_controller(&folder, xds_port, dir.path().join("controller-2.log")).await;
    eventually("the proxy resynchronizes", RESYNC_BOUND, || async {
        get(http_port, "/api/x").await.filter(|(_, b)| b == "one")
    })
    .await;
    // It reported what it held, so only the fixed route was sent.
    assert!(
        controller.output().contains("nonce=1 changed=1 removed=0"),
        "{}",
        controller.output()
    );
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_drives_the_ads_stream_and_its_nack_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let one = upstream("one").await;
    write_atomically(dir.path(), "a.yaml", &config(free_port(), "one", one, one));
    let port = free_port();
    let controller = start_controller(dir.path(), port, dir.path().join("controller.log")).await;

    // Subscribe to everything, then NACK the first response (nonce 1).
    let requests = r#"{"node": {"id": "standalone~127.0.0.1~grpcurl"},
 "typeUrl": "type.googleapis.com/agentmesh.xds.v1.ConfigResource",
 "resourceNamesSubscribe": ["*"]}
{"typeUrl": "type.googleapis.com/agentmesh.xds.v1.ConfigResource",
 "responseNonce": "1", "errorDetail": {"code": 3, "message": "grpcurl rejects this"}}"#;
    let output = grpcurl_ads(port, &[], requests.to_string()).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "grpcurl failed: {stderr}\n{stdout}"
    );
    let response: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(response["nonce"], "1");
    assert_eq!(
        response["typeUrl"],
        "type.googleapis.com/agentmesh.xds.v1.ConfigResource"
    );
    let route = response["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "route/main/http/api")
        .unwrap_or_else(|| panic!("no route in {stdout}"));
    assert_eq!(
        route["resource"]["@type"],
        "type.googleapis.com/agentmesh.xds.v1.ConfigResource"
    );
    assert_eq!(route["resource"]["route"]["listenerKey"], "main/http");
    assert_eq!(route["version"].as_str().unwrap().len(), 16);

    eventually("the controller logs the NACK", CHANGE_BOUND, || async {
        controller
            .output()
            .lines()
            .find(|l| l.contains("NACK") && l.contains("grpcurl rejects this"))
            .filter(|l| l.contains("standalone~127.0.0.1~grpcurl"))
            .map(|_| ())
    })
    .await;
}
