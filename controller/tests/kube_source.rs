//! The Kubernetes mode of the controller (`serve --kubernetes`), against a FAKE API
//! SERVER: no real API server can run on our machines (see ../shared/TESTING.md), so
//! `support/fake_api.rs` is our own hyper server on loopback speaking the API's HTTP
//! protocol with real JSON (list, watch streams, status merge patches, TokenReview), and
//! recording the PATCHes and TokenReviews it receives. The controller binary reaches it
//! through an ordinary kubeconfig file, with kube-rs's own client and reflectors.
//!
//! What a user would observe: a real `agentmesh-proxy --mode gateway` serves HTTP
//! through the Gateway the cluster defines and follows a watch event; the API server
//! receives the status conditions; a TokenReview-admitted stream is served and a
//! mismatching pod claim is refused with a message naming the mismatch (driven with
//! `grpcurl`, a client we did not write).
#![allow(clippy::unwrap_used)]

#[path = "support/fake_api.rs"]
mod fake_api;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use fake_api::{FakeApi, Recorded, TokenInfo};
use serde_json::{Value, json};
use support::{Process, eventually, free_port, get, grpcurl_ads, proxy_binary, upstream};

/// How long anything may take to show (generous for a loaded 2-core CI box; the real
/// figure is milliseconds).
const BOUND: Duration = Duration::from_secs(30);

const GATEWAY_API: &str = "gateway.networking.k8s.io/v1";
const OTHER_CONTROLLER: &str = "example.com/other-controller";

/// Starts `agentmesh-controller serve --kubernetes` against `fake`; waits until it
/// listens (which it does only once every kind has been listed).
async fn start_controller(fake: &FakeApi, dir: &Path, xds_port: u16) -> Process {
    start_controller_with(fake, dir, xds_port, &[]).await
}

/// [`start_controller`] with extra arguments.
async fn start_controller_with(
    fake: &FakeApi,
    dir: &Path,
    xds_port: u16,
    extra: &[&str],
) -> Process {
    let kubeconfig = dir.join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig);
    let mut args = vec![
        "serve".to_string(),
        "--kubernetes".into(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--xds-addr".into(),
        format!("127.0.0.1:{xds_port}"),
        "--log-level".into(),
        "info,agentmesh_controller=debug".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let controller = Process::start(
        Path::new(env!("CARGO_BIN_EXE_agentmesh-controller")),
        &args,
        dir.join("controller.log"),
    );
    eventually("the controller listens", BOUND, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", xds_port))
            .await
            .is_ok()
            .then_some(())
    })
    .await;
    controller
}

fn service(name: &str, addr: SocketAddr) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": "127.0.0.1", "ports": [{"name": "http", "port": addr.port()}]},
    })
}

/// The HTTPRoute `api` on Gateway `web`: one rule per (path prefix, service, upstream).
fn route(rules: &[(&str, &str, SocketAddr)]) -> Value {
    let rules: Vec<Value> = rules
        .iter()
        .map(|(prefix, service, addr)| {
            json!({
                "matches": [{"path": {"type": "PathPrefix", "value": prefix}}],
                "backendRefs": [{"name": service, "port": addr.port()}],
            })
        })
        .collect();
    json!({
        "apiVersion": GATEWAY_API, "kind": "HTTPRoute",
        "metadata": {"name": "api", "namespace": "default"},
        "spec": {"parentRefs": [{"name": "web"}], "rules": rules},
    })
}

/// The status PATCHes received for `path_part` (`/gatewayclasses/agentmesh/status`).
fn patches_of(fake: &FakeApi, path_part: &str) -> Vec<Recorded> {
    fake.patches()
        .into_iter()
        .filter(|p| p.uri.contains(path_part))
        .collect()
}

fn condition<'a>(conditions: &'a Value, type_: &str) -> &'a Value {
    conditions
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_is_served_from_the_cluster_follows_watch_events_and_gets_status() {
    let proxy_bin = proxy_binary();
    let dir = tempfile::tempdir().unwrap();
    let one = upstream("one").await;
    let two = upstream("two").await;
    let (xds_port, http_port, ready_port, metrics_port) =
        (free_port(), free_port(), free_port(), free_port());

    let fake = FakeApi::start().await;
    // TCPRoute is experimental: its CRD is not installed in this cluster.
    fake.absent("gateway.networking.k8s.io/v1alpha2", "TCPRoute");
    // Where the controller applies the Gateway's Deployment and Service.
    fake.discoverable("apps/v1", "Deployment", true);
    fake.discoverable("v1", "Service", true);
    fake.apply(json!({
        "apiVersion": GATEWAY_API, "kind": "GatewayClass",
        "metadata": {"name": "agentmesh"},
        "spec": {"controllerName": "agentmesh.dev/gateway-controller"},
    }));
    fake.apply(json!({
        "apiVersion": GATEWAY_API, "kind": "GatewayClass",
        "metadata": {"name": "other"},
        "spec": {"controllerName": OTHER_CONTROLLER},
    }));
    fake.apply(json!({
        "apiVersion": GATEWAY_API, "kind": "Gateway",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"gatewayClassName": "agentmesh",
                 "listeners": [{"name": "http", "protocol": "HTTP", "port": http_port}]},
    }));
    fake.apply(service("one", one));
    fake.apply(service("two", two));
    // The route also carries the status another implementation wrote for its own
    // parent, and ours from an earlier run (Accepted since 2020): both must survive.
    let mut api = route(&[("/one", "one", one)]);
    api["status"] = json!({"parents": [
        {"parentRef": {"name": "theirs"}, "controllerName": OTHER_CONTROLLER,
         "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                         "message": "theirs", "observedGeneration": 1,
                         "lastTransitionTime": "2021-05-05T05:05:05Z"}]},
        {"parentRef": {"name": "web"}, "controllerName": "agentmesh.dev/gateway-controller",
         "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                         "message": "earlier run", "observedGeneration": 0,
                         "lastTransitionTime": "2020-01-01T00:00:00Z"}]},
    ]});
    fake.apply(api);
    // A route the controller's types cannot read (a newer CRD version, say): it is
    // reported in its status, and does not stop its kind from being served.
    let mut broken = route(&[]);
    broken["metadata"]["name"] = "broken".into();
    broken["spec"]["rules"] = "not a list".into();
    fake.apply(broken);

    let controller = start_controller(&fake, dir.path(), xds_port).await;

    // A real gateway proxy, presenting a service-account token of the Gateway's
    // namespace, which the controller verifies with a TokenReview.
    fake.token(
        "gateway-token",
        TokenInfo {
            user: json!({"username": "system:serviceaccount:default:web-gateway",
                         "extra": {"authentication.kubernetes.io/pod-name": ["web-7d9f-abcde"]}}),
            audiences: vec!["agentmesh".into()],
        },
    );
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "gateway-token").unwrap();
    let args: Vec<String> = [
        "--mode".to_string(),
        "gateway".into(),
        "--gateway".into(),
        "web.default".into(),
        "--xds".into(),
        format!("http://127.0.0.1:{xds_port}"),
        "--xds-token-file".into(),
        token_file.display().to_string(),
        "--admin-addr".into(),
        "off".into(),
        "--metrics-addr".into(),
        format!("127.0.0.1:{metrics_port}"),
        "--ready-addr".into(),
        format!("127.0.0.1:{ready_port}"),
    ]
    .into();
    let proxy = Process::start(&proxy_bin, &args, dir.path().join("proxy.log"));
    eventually("the gateway is ready", BOUND, || async {
        get(ready_port, "/healthz/ready")
            .await
            .filter(|(s, _)| *s == 200)
    })
    .await;
    assert_eq!(
        get(http_port, "/one/hello").await,
        Some((200, "one".into())),
        "{}\n{}",
        proxy.output(),
        controller.output()
    );
    let review = &fake.reviews()[0].body;
    assert_eq!(review["spec"]["token"], "gateway-token");
    assert_eq!(review["spec"]["audiences"], json!(["agentmesh"]));

    // A watch event (the route gains a rule) changes what is served.
    fake.apply(route(&[("/one", "one", one), ("/two", "two", two)]));
    eventually("the new rule serves", BOUND, || async {
        get(http_port, "/two/hello")
            .await
            .filter(|(s, b)| *s == 200 && b == "two")
    })
    .await;

    // Status: the route's second write (generation 2) keeps the other implementation's
    // entry and the time our Accepted condition has held since.
    let route_patch = eventually("the route's generation 2 status", BOUND, || async {
        patches_of(&fake, "/namespaces/default/httproutes/api/status")
            .into_iter()
            .find(|p| {
                p.body["status"]["parents"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| condition(&e["conditions"], "Accepted")["observedGeneration"] == 2)
            })
    })
    .await;
    assert_eq!(route_patch.content_type, "application/merge-patch+json");
    assert!(
        route_patch
            .uri
            .contains("fieldManager=agentmesh-controller"),
        "{}",
        route_patch.uri
    );
    assert!(route_patch.body["metadata"]["resourceVersion"].is_string());
    let parents = route_patch.body["status"]["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 2, "{parents:?}");
    let theirs = parents
        .iter()
        .find(|p| p["controllerName"] == OTHER_CONTROLLER)
        .unwrap();
    assert_eq!(
        theirs["conditions"][0]["lastTransitionTime"],
        "2021-05-05T05:05:05Z"
    );
    let ours = parents
        .iter()
        .find(|p| p["controllerName"] == "agentmesh.dev/gateway-controller")
        .unwrap();
    assert_eq!(ours["parentRef"], json!({"name": "web"}));
    let accepted = condition(&ours["conditions"], "Accepted");
    assert_eq!(accepted["status"], "True", "{ours}");
    assert_eq!(accepted["lastTransitionTime"], "2020-01-01T00:00:00Z");
    assert_eq!(
        condition(&ours["conditions"], "ResolvedRefs")["status"],
        "True",
        "{ours}"
    );
    // The fake applied the patches: the stored route says the same.
    let stored = fake
        .get(GATEWAY_API, "HTTPRoute", "default", "api")
        .unwrap();
    assert_eq!(stored["status"]["parents"].as_array().unwrap().len(), 2);

    let broken = eventually("the unreadable route's status", BOUND, || async {
        patches_of(&fake, "/namespaces/default/httproutes/broken/status").pop()
    })
    .await;
    let ours = &broken.body["status"]["parents"][0];
    assert_eq!(ours["parentRef"], json!({"name": "web"}));
    let accepted = condition(&ours["conditions"], "Accepted");
    assert_eq!(accepted["status"], "False");
    assert!(
        accepted["message"]
            .as_str()
            .unwrap()
            .contains("field spec.rules"),
        "{accepted}"
    );

    // The Gateway and its listener, and our GatewayClass (not the other one).
    let gateway = patches_of(&fake, "/namespaces/default/gateways/web/status");
    let last = &gateway.last().unwrap().body["status"];
    assert_eq!(condition(&last["conditions"], "Accepted")["status"], "True");
    assert_eq!(
        condition(&last["conditions"], "Programmed")["observedGeneration"],
        1
    );
    let listener = &last["listeners"][0];
    assert_eq!(listener["name"], "http");
    assert_eq!(listener["attachedRoutes"], 1);
    assert_eq!(
        listener["supportedKinds"],
        json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
               {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}])
    );
    let classes = patches_of(&fake, "/gatewayclasses/");
    // Written once: later rounds (our own writes coming back, the route change) found
    // it unchanged. The route's last write came after the class was looked at again.
    assert_eq!(classes.len(), 1, "{classes:?}");
    assert!(classes[0].uri.contains("/gatewayclasses/agentmesh/status"));
    assert_eq!(
        condition(&classes[0].body["status"]["conditions"], "Accepted")["status"],
        "True"
    );

    // The Gateway's workload was server-side applied, by us.
    let applied = eventually("the gateway Deployment is applied", BOUND, || async {
        fake.applies().into_iter().find(|a| {
            a.uri
                .starts_with("/apis/apps/v1/namespaces/default/deployments/")
        })
    })
    .await;
    assert!(
        applied.uri.contains("fieldManager=agentmesh-controller"),
        "{}",
        applied.uri
    );
    assert_eq!(applied.body["kind"], "Deployment");

    // The route leaves our Gateway for the other controller's: our entry is removed from
    // its status, the other controller's is kept as it was.
    let mut moved = route(&[("/one", "one", one)]);
    moved["spec"]["parentRefs"] = json!([{"name": "theirs"}]);
    fake.apply(moved);
    let parents = eventually("our stale parent entry is removed", BOUND, || async {
        let stored = fake.get(GATEWAY_API, "HTTPRoute", "default", "api")?;
        let parents = stored["status"]["parents"].as_array()?.clone();
        (parents.len() == 1).then_some(parents)
    })
    .await;
    assert_eq!(
        parents[0]["controllerName"], OTHER_CONTROLLER,
        "{parents:?}"
    );
    assert_eq!(
        parents[0]["conditions"][0]["lastTransitionTime"],
        "2021-05-05T05:05:05Z"
    );

    // The missing TCPRoute CRD was reported once and did not stop anything.
    let log = controller.output();
    let absent = log
        .lines()
        .filter(|l| l.contains("does not serve this kind") && l.contains("TCPRoute"))
        .count();
    assert_eq!(absent, 1, "{log}");
    assert_eq!(fake.unauthorized(), 0);
    drop(proxy);
}

/// Runs one ADS stream with grpcurl as `node`, presenting `token`: its stdout, stderr
/// and success.
async fn ads_stream(port: u16, node: &str, token: &str) -> (String, String, bool) {
    let request = json!({
        "node": {"id": node},
        "typeUrl": "type.googleapis.com/agentmesh.xds.v1.ConfigResource",
        "resourceNamesSubscribe": ["*"],
    })
    .to_string();
    let output = grpcurl_ads(port, &[format!("authorization: Bearer {token}")], request).await;
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        output.status.success(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_review_admits_the_pods_own_stream_and_refuses_a_mismatching_claim() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::start().await;
    fake.absent("gateway.networking.k8s.io/v1alpha2", "TCPRoute");
    fake.apply(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "agent-0", "namespace": "agents", "uid": "uid-agent-0"},
        "spec": {"serviceAccountName": "agent", "containers": [{"name": "app", "image": "app"}]},
        "status": {"podIP": "127.0.0.1"},
    }));
    fake.token(
        "agent-0-token",
        TokenInfo {
            user: json!({"username": "system:serviceaccount:agents:agent",
                         "extra": {"authentication.kubernetes.io/pod-name": ["agent-0"],
                                   "authentication.kubernetes.io/pod-uid": ["uid-agent-0"]}}),
            audiences: vec!["agentmesh".into()],
        },
    );
    fake.token(
        "other-audience-token",
        TokenInfo {
            user: json!({"username": "system:serviceaccount:agents:agent"}),
            audiences: vec!["vault".into()],
        },
    );
    let xds_port = free_port();
    let controller = start_controller(&fake, dir.path(), xds_port).await;

    // The pod's own token, for its own node id: admitted, and answered.
    let (stdout, stderr, ok) = ads_stream(
        xds_port,
        "sidecar~127.0.0.1~agent-0.agents",
        "agent-0-token",
    )
    .await;
    assert!(ok, "refused: {stderr}\n{}", controller.output());
    let response: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(response["nonce"], "1", "{stdout}");

    // The same token claiming another pod: refused, naming both pods.
    let (_, stderr, ok) = ads_stream(
        xds_port,
        "sidecar~127.0.0.1~agent-1.agents",
        "agent-0-token",
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("PermissionDenied"), "{stderr}");
    assert!(
        stderr
            .contains("claims pod agents/agent-1, but the token was issued to pod agents/agent-0"),
        "{stderr}"
    );

    // ... or another namespace.
    let (_, stderr, ok) =
        ads_stream(xds_port, "sidecar~127.0.0.1~agent-0.tools", "agent-0-token").await;
    assert!(!ok);
    assert!(stderr.contains("claims namespace \"tools\""), "{stderr}");

    // A token issued for another audience, and a token the API server does not know.
    let (_, stderr, ok) = ads_stream(
        xds_port,
        "sidecar~127.0.0.1~agent-0.agents",
        "other-audience-token",
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("Unauthenticated"), "{stderr}");
    assert!(stderr.contains("audience"), "{stderr}");
    let (_, stderr, ok) = ads_stream(xds_port, "sidecar~127.0.0.1~agent-0.agents", "forged").await;
    assert!(!ok);
    assert!(stderr.contains("invalid bearer token"), "{stderr}");

    // The admitted pair is cached: a second stream costs no second TokenReview, while
    // every refused attempt asked again.
    let (_, stderr, ok) = ads_stream(
        xds_port,
        "sidecar~127.0.0.1~agent-0.agents",
        "agent-0-token",
    )
    .await;
    assert!(ok, "{stderr}");
    let reviews = fake.reviews();
    let of = |token: &str| {
        reviews
            .iter()
            .filter(|r| r.body["spec"]["token"] == token)
            .count()
    };
    assert_eq!(of("agent-0-token"), 3, "one admitted, two refused");
    assert_eq!(of("other-audience-token"), 1);
    assert!(
        reviews
            .iter()
            .all(|r| r.body["spec"]["audiences"] == json!(["agentmesh"]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_objects_are_server_side_applied_with_our_field_manager() {
    use agentmesh_controller::kubernetes;
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::start().await;
    fake.discoverable("apps/v1", "Deployment", true);
    let kubeconfig = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig);
    let client = kubernetes::client(Some(&kubeconfig)).await.unwrap();
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web-gateway", "namespace": "default"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web-gateway"}},
                 "template": {"metadata": {"labels": {"app": "web-gateway"}},
                              "spec": {"containers": [{"name": "proxy", "image": "agentmesh-proxy"}]}}},
    });
    let stored = kubernetes::apply::apply(&client, &deployment)
        .await
        .unwrap();
    assert_eq!(stored.metadata.name.as_deref(), Some("web-gateway"));
    assert!(stored.metadata.resource_version.is_some());
    let applies = fake.applies();
    assert_eq!(applies.len(), 1);
    let apply = &applies[0];
    assert!(
        apply
            .uri
            .starts_with("/apis/apps/v1/namespaces/default/deployments/web-gateway?"),
        "{}",
        apply.uri
    );
    assert!(
        apply.uri.contains("fieldManager=agentmesh-controller") && apply.uri.contains("force=true"),
        "{}",
        apply.uri
    );
    assert_eq!(apply.content_type, "application/apply-patch+yaml");
    assert_eq!(apply.body["spec"], deployment["spec"]);

    // A kind the API server does not serve: an error naming the object, not a panic.
    let unknown = json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w", "namespace": "default"},
    });
    let error = kubernetes::apply::apply(&client, &unknown)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("cannot apply Widget \"w\"") && error.contains("example.com/v1"),
        "{error}"
    );
    // And an object without a name.
    let error = kubernetes::apply::apply(&client, &json!({"apiVersion": "v1", "kind": "Service"}))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("field metadata.name is required"), "{error}");
}

#[test]
fn serve_takes_exactly_one_of_folder_and_kubernetes() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentmesh-controller"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["serve", "--kubernetes", "--folder", "/tmp"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    let (code, stderr) = run(&["serve"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--folder"), "{stderr}");
    let (code, stderr) = run(&["serve", "--folder", "/tmp", "--kubeconfig", "/tmp/k"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--kubeconfig"), "{stderr}");
}

/// The leader Lease as the fake API server holds it.
fn lease(fake: &FakeApi) -> Option<Value> {
    fake.get(
        "coordination.k8s.io/v1",
        "Lease",
        "agentmesh-system",
        "agentmesh-controller",
    )
}

/// How many status writes a replica logged.
fn status_writes(replica: &Process) -> usize {
    replica
        .output()
        .lines()
        .filter(|l| l.contains("status written"))
        .count()
}

/// The resources the replica at `port` sends a gateway proxy of `default/web` (presenting
/// `gateway-token`) in its first ADS response, by name; `None` when the stream fails.
async fn gateway_resources(port: u16) -> Option<BTreeMap<String, Value>> {
    let (stdout, _, ok) = ads_stream(port, "gateway~127.0.0.1~web.default", "gateway-token").await;
    if !ok {
        return None;
    }
    let response: Value = serde_json::from_str(&stdout).ok()?;
    response["resources"]
        .as_array()?
        .iter()
        .map(|r| Some((r["name"].as_str()?.to_string(), r["resource"].clone())))
        .collect()
}

/// Whether `resources` hold a route matching the path `path`.
fn serves_path(resources: &BTreeMap<String, Value>, path: &str) -> bool {
    resources
        .values()
        .any(|r| r["route"].is_object() && r["route"].to_string().contains(&format!("\"{path}\"")))
}

/// Two replicas against one API server: both serve xDS (a gateway proxy connected to the
/// follower gets the same resources as one connected to the leader), only the holder of
/// the Lease writes status; when the leader is gone (killed, so it never gives the Lease
/// back), the other replica takes the Lease over once it has expired and writes from then
/// on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes_status_and_another_replica_takes_over_when_it_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&dir_a).unwrap();
    std::fs::create_dir(&dir_b).unwrap();
    let fake = FakeApi::start().await;
    fake.absent("gateway.networking.k8s.io/v1alpha2", "TCPRoute");
    fake.apply(json!({
        "apiVersion": GATEWAY_API, "kind": "GatewayClass",
        "metadata": {"name": "agentmesh"},
        "spec": {"controllerName": "agentmesh.dev/gateway-controller"},
    }));
    fake.apply(json!({
        "apiVersion": GATEWAY_API, "kind": "Gateway",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"gatewayClassName": "agentmesh",
                 "listeners": [{"name": "http", "protocol": "HTTP", "port": free_port()}]},
    }));
    let backend = SocketAddr::from(([127, 0, 0, 1], 9));
    fake.apply(service("one", backend));
    fake.apply(route(&[("/one", "one", backend)]));
    fake.token(
        "gateway-token",
        TokenInfo {
            user: json!({"username": "system:serviceaccount:default:web-gateway"}),
            audiences: vec!["agentmesh".into()],
        },
    );
    let election = |id: &'static str| {
        [
            "--leader-election-id",
            id,
            "--leader-lease-duration",
            "2s",
            "--leader-retry-period",
            "200ms",
        ]
    };
    let (xds_a, xds_b) = (free_port(), free_port());
    let mut a = start_controller_with(&fake, &dir_a, xds_a, &election("replica-a")).await;
    eventually("replica-a holds the Lease", BOUND, || async {
        (lease(&fake)?["spec"]["holderIdentity"] == "replica-a").then_some(())
    })
    .await;
    // Both replicas serve xDS (start_controller_with waited for each to listen).
    let b = start_controller_with(&fake, &dir_b, xds_b, &election("replica-b")).await;

    // A route change while both run: the leader writes its new status, the other nothing.
    fake.apply(route(&[("/one", "one", backend), ("/two", "one", backend)]));
    let generation_written = |generation: i64| {
        let fake = fake.clone();
        async move {
            patches_of(&fake, "/namespaces/default/httproutes/api/status")
                .into_iter()
                .find(|p| {
                    p.body["status"]["parents"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|e| {
                            condition(&e["conditions"], "Accepted")["observedGeneration"]
                                == generation
                        })
                })
        }
    };
    eventually("the leader writes generation 2", BOUND, || {
        generation_written(2)
    })
    .await;
    assert!(status_writes(&a) > 0, "{}", a.output());
    assert_eq!(status_writes(&b), 0, "{}", b.output());
    assert_eq!(lease(&fake).unwrap()["spec"]["holderIdentity"], "replica-a");

    // The follower serves xDS too: a gateway proxy connected to it gets the route change,
    // and exactly the resources the leader sends.
    let from_follower = eventually("the follower serves the route change", BOUND, || async {
        gateway_resources(xds_b)
            .await
            .filter(|r| serves_path(r, "/two"))
    })
    .await;
    let from_leader = gateway_resources(xds_a).await.unwrap();
    assert!(serves_path(&from_leader, "/one"), "{from_leader:?}");
    assert_eq!(from_follower, from_leader);
    assert_eq!(status_writes(&b), 0, "{}", b.output());

    // The leader is gone: replica-b takes the Lease over and writes the next change.
    a.kill();
    let taken = eventually("replica-b takes the Lease over", BOUND, || async {
        let lease = lease(&fake)?;
        (lease["spec"]["holderIdentity"] == "replica-b").then_some(lease)
    })
    .await;
    assert_eq!(taken["spec"]["leaseTransitions"], 1, "{taken}");
    fake.apply(route(&[("/three", "one", backend)]));
    eventually("replica-b writes generation 3", BOUND, || {
        generation_written(3)
    })
    .await;
    assert!(status_writes(&b) > 0, "{}", b.output());
    assert!(
        b.output().contains("took over the leader Lease"),
        "{}",
        b.output()
    );
}
