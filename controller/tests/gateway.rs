//! Gateway mode end to end: the controller binary in folder mode reads Gateway API
//! manifests (GatewayClass, Gateway, HTTPRoute, Services whose clusterIP is loopback) and
//! serves them over real gRPC to the proxy binary in `--mode gateway`, which serves the
//! Gateway's listener in front of real hyper upstreams. Every check is what a user sees:
//! HTTP answers through the gateway, readiness, and `agentmesh-controller status`.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use support::{
    Process, eventually, free_port, get, proxy_binary, start_controller, upstream, write_atomically,
};

/// How long a change on disk may take to be served (generous for a loaded 2-core CI box;
/// the real figure is milliseconds, see e2e/bench/controller.sh).
const CHANGE_BOUND: Duration = Duration::from_secs(10);
/// How long a proxy may take to resynchronize after the controller comes back (the
/// reconnect backoff grows while the controller is away).
const RESYNC_BOUND: Duration = Duration::from_secs(25);

/// The class, the Gateway `web` (one HTTP listener on `port`) and two Services whose
/// clusterIP is loopback, so that the upstream a Service port leads to is `one` or `two`.
fn infrastructure(port: u16, one: SocketAddr, two: SocketAddr) -> String {
    let service = |name: &str, addr: SocketAddr| {
        format!(
            "apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
spec:
  clusterIP: 127.0.0.1
  ports:
  - name: http
    port: {}
",
            addr.port()
        )
    };
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: agentmesh
spec:
  controllerName: agentmesh.dev/gateway-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: web
  namespace: default
spec:
  gatewayClassName: agentmesh
  listeners:
  - name: http
    protocol: HTTP
    port: {port}
---
{}---
{}",
        service("one", one),
        service("two", two)
    )
}

/// The HTTPRoute `api` on `web`: one rule per `(path prefix, service, port)`.
fn route(rules: &[(&str, &str, SocketAddr)]) -> String {
    let mut text = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: api
  namespace: default
spec:
  parentRefs:
  - name: web
  rules:
"
    .to_string();
    for (prefix, service, addr) in rules {
        text += &format!(
            "  - matches:
    - path:
        type: PathPrefix
        value: {prefix}
    backendRefs:
    - name: {service}
      port: {}
",
            addr.port()
        );
    }
    text
}

/// `agentmesh-controller status -f DIR`: exit success and what it printed (both streams).
fn status(folder: &Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentmesh-controller"))
        .args(["status", "-f"])
        .arg(folder)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The body of `GET path` through the gateway, when it answers 200.
async fn served(port: u16, path: &str) -> Option<String> {
    get(port, path)
        .await
        .filter(|(s, _)| *s == 200)
        .map(|(_, body)| body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_serves_its_routes_follows_changes_and_outlives_the_controller() {
    let proxy_bin = proxy_binary();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("manifests");
    std::fs::create_dir(&folder).unwrap();
    let one = upstream("one").await;
    let two = upstream("two").await;
    let (xds_port, http_port, ready_port, metrics_port) =
        (free_port(), free_port(), free_port(), free_port());
    write_atomically(
        &folder,
        "10-infrastructure.yaml",
        &infrastructure(http_port, one, two),
    );
    write_atomically(&folder, "20-route.yaml", &route(&[("/one", "one", one)]));
    let (ok, printed) = status(&folder);
    assert!(ok, "a valid folder has problems: {printed}");

    let mut controller =
        start_controller(&folder, xds_port, dir.path().join("controller-1.log")).await;
    let args: Vec<String> = [
        "--mode".to_string(),
        "gateway".into(),
        "--gateway".into(),
        "web.default".into(),
        "--xds".into(),
        format!("http://127.0.0.1:{xds_port}"),
        "--admin-addr".into(),
        "off".into(),
        "--metrics-addr".into(),
        format!("127.0.0.1:{metrics_port}"),
        "--ready-addr".into(),
        format!("127.0.0.1:{ready_port}"),
    ]
    .into();
    let proxy = Process::start(&proxy_bin, &args, dir.path().join("proxy.log"));
    eventually("the gateway is ready", RESYNC_BOUND, || async {
        get(ready_port, "/healthz/ready")
            .await
            .filter(|(s, _)| *s == 200)
    })
    .await;
    assert_eq!(
        served(http_port, "/one/hello").await.as_deref(),
        Some("one"),
        "{}",
        proxy.output()
    );
    // It identified as the Gateway (`gateway~<ip>~web.default`).
    assert!(
        controller
            .output()
            .contains("gateway~127.0.0.1~web.default"),
        "{}",
        controller.output()
    );

    // A new rule on disk: the gateway serves it, and still the old one.
    write_atomically(
        &folder,
        "20-route.yaml",
        &route(&[("/one", "one", one), ("/two", "two", two)]),
    );
    eventually("the new rule serves", CHANGE_BOUND, || {
        served(http_port, "/two/hello")
    })
    .await;
    assert_eq!(
        served(http_port, "/one/hello").await.as_deref(),
        Some("one")
    );

    // Two routes with the same match: the older by creationTimestamp is served, although
    // the other comes first by name (the Gateway API's tie-break).
    let aged = |name: &str, created: &str, service: &str, addr: SocketAddr| {
        route(&[("/same", service, addr)]).replace(
            "name: api\n",
            &format!("name: {name}\n  creationTimestamp: \"{created}\"\n"),
        )
    };
    write_atomically(
        &folder,
        "30-age.yaml",
        &format!(
            "{}---\n{}",
            aged("aaa-newer", "2026-11-20T10:00:09Z", "two", two),
            aged("zzz-older", "2026-11-20T10:00:01Z", "one", one)
        ),
    );
    // Both routes arrive in one update (one file), so the first answer is the final one.
    let body = eventually("the tied routes serve", CHANGE_BOUND, || {
        served(http_port, "/same/x")
    })
    .await;
    assert_eq!(body, "one", "the newer of two tied routes is served");

    // A broken manifest: `status` says which file and why; the gateway keeps serving.
    write_atomically(
        &folder,
        "20-route.yaml",
        &route(&[("/one", "one", one), ("/two", "two", two)]).replace("rules:\n", "rules: [\n"),
    );
    let (ok, printed) = status(&folder);
    assert!(!ok, "a broken folder passes status: {printed}");
    assert!(printed.contains("20-route.yaml"), "{printed}");
    eventually(
        "the controller reports the broken folder",
        CHANGE_BOUND,
        || async {
            controller
                .output()
                .contains("still serving the previous resources")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        served(http_port, "/two/hello").await.as_deref(),
        Some("two")
    );
    assert_eq!(
        served(http_port, "/one/hello").await.as_deref(),
        Some("one")
    );

    // An object that parses but does not fit its kind: `status` names the object, file
    // and field; the running controller keeps the route's last good version (as the API
    // server would refuse the apply), so both rules keep serving.
    write_atomically(
        &folder,
        "20-route.yaml",
        &route(&[("/one", "one", one), ("/two", "two", two)]).replacen(
            &format!("port: {}", two.port()),
            "port: eighty",
            1,
        ),
    );
    let (ok, printed) = status(&folder);
    assert!(!ok, "an invalid route passes status: {printed}");
    let expected = r#"20-route.yaml#1: field spec.rules[1].backendRefs[0].port: invalid type: string \"eighty\""#;
    assert!(
        printed.contains(r#""HTTPRoute \"default/api\""#) && printed.contains(expected),
        "{printed}"
    );
    eventually(
        "the controller reports the invalid route",
        CHANGE_BOUND,
        || async {
            controller
                .output()
                .contains("the version read before this change is still served")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        served(http_port, "/two/hello").await.as_deref(),
        Some("two")
    );

    // The controller goes away: the gateway keeps serving and stays ready.
    controller.kill();
    eventually("the gateway notices", CHANGE_BOUND, || async {
        get(metrics_port, "/metrics")
            .await
            .filter(|(_, b)| b.contains("agentmesh_xds_connected 0"))
    })
    .await;
    assert_eq!(
        served(http_port, "/one/hello").await.as_deref(),
        Some("one")
    );
    assert_eq!(
        get(ready_port, "/healthz/ready").await.map(|(s, _)| s),
        Some(200)
    );

    // Fixed, with one more rule, while the controller was away: on restart the gateway
    // resynchronizes and serves the change.
    write_atomically(
        &folder,
        "20-route.yaml",
        &route(&[
            ("/one", "one", one),
            ("/two", "two", two),
            ("/three", "one", one),
        ]),
    );
    let (ok, printed) = status(&folder);
    assert!(ok, "the fixed folder has problems: {printed}");
    let _controller =
        start_controller(&folder, xds_port, dir.path().join("controller-2.log")).await;
    eventually("the gateway resynchronizes", RESYNC_BOUND, || {
        served(http_port, "/three/hello")
    })
    .await;
    assert_eq!(
        served(http_port, "/two/hello").await.as_deref(),
        Some("two")
    );
    drop(proxy);
}

/// A Gateway that is not accepted (here: it asks for a NamedAddress) is not served: its
/// proxy gets an empty configuration, stays up and ready, and refuses connections on the
/// listener's port, and `status` says why its route is not accepted. Accepted again, it
/// is served; unaccepted again, it stops being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unaccepted_gateway_is_not_served_and_its_proxy_stays_up() {
    let proxy_bin = proxy_binary();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("manifests");
    std::fs::create_dir(&folder).unwrap();
    let one = upstream("one").await;
    let (xds_port, http_port, ready_port) = (free_port(), free_port(), free_port());
    let accepted = infrastructure(http_port, one, one);
    let unaccepted = accepted.replace(
        "  gatewayClassName: agentmesh\n",
        "  gatewayClassName: agentmesh\n  addresses:\n  - type: NamedAddress\n    value: pool-a\n",
    );
    write_atomically(&folder, "10-infrastructure.yaml", &unaccepted);
    write_atomically(&folder, "20-route.yaml", &route(&[("/one", "one", one)]));
    let (ok, printed) = status(&folder);
    assert!(!ok, "{printed}");
    assert!(
        printed.contains("Gateway default/web is not accepted"),
        "{printed}"
    );

    let controller = start_controller(&folder, xds_port, dir.path().join("controller.log")).await;
    let args: Vec<String> = [
        "--mode".to_string(),
        "gateway".into(),
        "--gateway".into(),
        "web.default".into(),
        "--xds".into(),
        format!("http://127.0.0.1:{xds_port}"),
        "--admin-addr".into(),
        "off".into(),
        "--metrics-addr".into(),
        "off".into(),
        "--ready-addr".into(),
        format!("127.0.0.1:{ready_port}"),
    ]
    .into();
    let proxy = Process::start(&proxy_bin, &args, dir.path().join("proxy.log"));
    let refuses = || async {
        tokio::net::TcpStream::connect(("127.0.0.1", http_port))
            .await
            .is_err()
    };
    // Ready: it holds the controller's current configuration, which serves nothing.
    eventually("the gateway is ready", RESYNC_BOUND, || async {
        get(ready_port, "/healthz/ready")
            .await
            .filter(|(s, _)| *s == 200)
    })
    .await;
    assert!(refuses().await, "{}", proxy.output());

    // Accepted: served.
    write_atomically(&folder, "10-infrastructure.yaml", &accepted);
    eventually("the accepted gateway serves", CHANGE_BOUND, || {
        served(http_port, "/one/hello")
    })
    .await;

    // Not accepted again: withdrawn, while the proxy stays up and ready.
    write_atomically(&folder, "10-infrastructure.yaml", &unaccepted);
    eventually("the listener is withdrawn", CHANGE_BOUND, || async {
        refuses().await.then_some(())
    })
    .await;
    assert_eq!(
        get(ready_port, "/healthz/ready").await.map(|(s, _)| s),
        Some(200),
        "{}\n{}",
        proxy.output(),
        controller.output()
    );
}

#[test]
fn gateway_mode_without_a_controller_is_a_clear_error() {
    let out = std::process::Command::new(proxy_binary())
        .args(["--mode", "gateway", "--gateway", "web.default"])
        .env_remove("AGENTMESH_XDS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--xds ADDRESS is required"), "{stderr}");

    let out = std::process::Command::new(proxy_binary())
        .args(["--mode", "gateway", "--xds", "http://127.0.0.1:1"])
        .env_remove("AGENTMESH_GATEWAY")
        .env_remove("AGENTMESH_XDS_NODE_ID")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--gateway NAME.NAMESPACE"), "{stderr}");
}
