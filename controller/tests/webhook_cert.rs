//! The webhook certificate keeper against an API server: the Secret created, reused or
//! rotated, the webhook configuration's `caBundle` set (and set again after an upgrade
//! resets it; holding the previous CA next to a replacement for the overlap), the files
//! a rustls client trusting `ca.crt` verifies for the Service's name, and the
//! certificate's metrics on the controller's `/metrics`, linted by `promtool`.
//!
//! The API server is our own double (`support/fake_api.rs`): no real API server can run
//! on our machines (see ../shared/TESTING.md). It speaks the wire protocol the keeper
//! uses (get, create with 409 AlreadyExists, replace with 409 Conflict on a stale
//! resourceVersion, JSON patch with 422 on a failed test, list + watch) with real JSON.
//! The files are verified with rustls's own certificate verifier, as a client of the
//! webhook would verify them. The last tests start the controller binary with the
//! chart's flags: its webhook, called over HTTPS by curl trusting only the caBundle,
//! injects a pod.
#![allow(clippy::unwrap_used)]

#[path = "support/fake_api.rs"]
mod fake_api;
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use agentmesh_controller::kubernetes;
use agentmesh_controller::kubernetes::webhook_cert::issue::{
    self, CertificateSet, Lifetimes, service_names,
};
use agentmesh_controller::kubernetes::webhook_cert::metrics::CertMetrics;
use agentmesh_controller::kubernetes::webhook_cert::{CertSource, GeneratedCert};
use fake_api::FakeApi;
use k8s_openapi::ByteString;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{Value, json};

const NAMESPACE: &str = "agentmesh-system";
const SECRET: &str = "agentmesh-webhook-cert";
const CONFIGURATION: &str = "agentmesh-sidecar-injector";
const SERVICE: &str = "agentmesh-controller";
const DAY: Duration = Duration::from_secs(24 * 3600);

async fn client(fake: &FakeApi, dir: &Path) -> kube::Client {
    let kubeconfig = dir.join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig);
    kubernetes::client(Some(&kubeconfig)).await.unwrap()
}

fn settings(dir: &Path) -> GeneratedCert {
    GeneratedCert {
        namespace: NAMESPACE.into(),
        secret: SECRET.into(),
        configuration: CONFIGURATION.into(),
        names: service_names(SERVICE, NAMESPACE),
        dir: dir.join("webhook"),
        lifetimes: Lifetimes::default(),
        ca_overlap: Duration::from_secs(3600),
    }
}

/// The keeper's start, as `serve` calls it.
async fn start(
    client: kube::Client,
    source: CertSource,
) -> Result<std::path::PathBuf, kubernetes::webhook_cert::WebhookCertError> {
    kubernetes::webhook_cert::start(client, source, CertMetrics::default()).await
}

/// The keeper's first pass for `dir` (files in `dir/webhook`), as `serve` starts it.
async fn keep(fake: &FakeApi, dir: &Path) -> std::path::PathBuf {
    start(
        client(fake, dir).await,
        CertSource::Generated(settings(dir)),
    )
    .await
    .unwrap()
}

/// A CA and serving certificate issued `ago`, installed as the Secret and the
/// configuration's caBundle.
fn installed(fake: &FakeApi, ago: Duration) -> CertificateSet {
    let held = issue::issue_all(
        &service_names(SERVICE, NAMESPACE),
        &Lifetimes::default(),
        SystemTime::now() - ago,
    )
    .unwrap();
    fake.apply(secret_of(&held));
    fake.apply(configuration(Some(&held.ca_cert)));
    held
}

/// The chart's webhook configuration, as `helm install` leaves it: no caBundle.
fn configuration(ca_bundle: Option<&str>) -> Value {
    let mut client_config = json!({
        "service": {"name": SERVICE, "namespace": NAMESPACE, "path": "/inject", "port": 443},
    });
    if let Some(ca) = ca_bundle {
        client_config["caBundle"] = serde_json::to_value(ByteString(ca.into())).unwrap();
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION},
        "webhooks": [{
            "name": "sidecar-injector.agentmesh.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "clientConfig": client_config,
        }],
    })
}

fn secret_of(set: &CertificateSet) -> Value {
    let data = |text: &str| serde_json::to_value(ByteString(text.into())).unwrap();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NAMESPACE},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": data(&set.cert), "tls.key": data(&set.key),
            "ca.crt": data(&set.ca_cert), "ca.key": data(&set.ca_key),
        },
    })
}

fn stored_secret(fake: &FakeApi) -> Value {
    fake.get("v1", "Secret", NAMESPACE, SECRET)
        .expect("no certificate Secret")
}

fn secret_text(secret: &Value, key: &str) -> String {
    let bytes: ByteString = serde_json::from_value(secret["data"][key].clone()).unwrap();
    String::from_utf8(bytes.0).unwrap()
}

/// Every webhook's caBundle, decoded.
fn ca_bundles(fake: &FakeApi) -> Vec<Option<String>> {
    let configuration = fake
        .get(
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            "",
            CONFIGURATION,
        )
        .unwrap();
    configuration["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let bundle = w["clientConfig"].get("caBundle")?;
            let bytes: ByteString = serde_json::from_value(bundle.clone()).unwrap();
            Some(String::from_utf8(bytes.0).unwrap())
        })
        .collect()
}

fn pem_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

/// What a TLS client trusting only `ca.crt` decides about `tls.crt` for `name`.
fn client_verifies(dir: &Path, name: &str) -> Result<(), rustls::Error> {
    let ca = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
    let cert = std::fs::read_to_string(dir.join("tls.crt")).unwrap();
    verifies(&ca, &cert, name)
}

/// What a TLS client trusting the CAs of `ca_bundle` decides about `cert` for `name`.
fn verifies(ca: &str, cert: &str, name: &str) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for der in pem_certs(ca) {
        roots.add(der).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
    let chain = pem_certs(cert);
    verifier
        .verify_server_cert(
            &chain[0],
            &chain[1..],
            &ServerName::try_from(name.to_owned()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_fresh_install_gets_a_secret_a_ca_bundle_and_files_a_client_verifies() {
    let fake = FakeApi::start().await;
    fake.apply(configuration(None));
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path());
    let files = start(
        client(&fake, dir.path()).await,
        CertSource::Generated(settings.clone()),
    )
    .await
    .unwrap();
    assert_eq!(files, settings.dir);

    let secret = stored_secret(&fake);
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let ca = secret_text(&secret, "ca.crt");
    assert_eq!(ca_bundles(&fake), vec![Some(ca.clone())]);
    for file in ["tls.crt", "tls.key", "ca.crt"] {
        assert_eq!(
            std::fs::read_to_string(files.join(file)).unwrap(),
            secret_text(&secret, file),
            "{file}"
        );
    }
    // The API server dials the Service by these names; a client trusting the CA
    // accepts the served certificate for each, and for no other.
    for name in service_names(SERVICE, NAMESPACE) {
        client_verifies(&files, &name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(client_verifies(&files, "agentmesh-controller.elsewhere.svc").is_err());
    // The serving certificate lives a year, the CA ten.
    let not_after = issue::not_after(&secret_text(&secret, "tls.crt")).unwrap();
    let year = not_after.duration_since(SystemTime::now()).unwrap();
    assert!(year > 364 * DAY && year <= 365 * DAY, "{year:?}");
    let ca_years = issue::not_after(&ca)
        .unwrap()
        .duration_since(not_after)
        .unwrap();
    assert!(ca_years > 8 * 365 * DAY, "{ca_years:?}");
}

#[tokio::test]
async fn a_valid_secret_is_reused_and_nothing_is_rewritten() {
    let fake = FakeApi::start().await;
    let held = installed(&fake, 10 * DAY);
    let before = stored_secret(&fake);
    let dir = tempfile::tempdir().unwrap();
    let files = keep(&fake, dir.path()).await;
    assert_eq!(stored_secret(&fake), before, "the Secret was rewritten");
    assert!(fake.json_patches().is_empty(), "the caBundle was patched");
    assert_eq!(
        std::fs::read_to_string(files.join("tls.crt")).unwrap(),
        held.cert
    );
    assert_eq!(
        std::fs::read_to_string(files.join("tls.key")).unwrap(),
        held.key
    );
}

#[tokio::test]
async fn a_ca_bundle_reset_by_an_upgrade_is_set_again() {
    let fake = FakeApi::start().await;
    fake.apply(configuration(None));
    let dir = tempfile::tempdir().unwrap();
    keep(&fake, dir.path()).await;
    let ca = secret_text(&stored_secret(&fake), "ca.crt");
    assert_eq!(ca_bundles(&fake), vec![Some(ca.clone())]);
    // `helm upgrade` puts the configuration back as the chart renders it.
    fake.apply(configuration(None));
    eventually("the caBundle to be set again", || {
        ca_bundles(&fake) == vec![Some(ca.clone())]
    })
    .await;
    assert_eq!(secret_text(&stored_secret(&fake), "ca.crt"), ca);
}

#[tokio::test]
async fn an_expiring_certificate_is_rotated_under_the_same_ca() {
    let fake = FakeApi::start().await;
    // Issued 300 days ago: in the last third of its year.
    let held = installed(&fake, 300 * DAY);
    let dir = tempfile::tempdir().unwrap();
    let files = keep(&fake, dir.path()).await;
    let secret = stored_secret(&fake);
    let cert = secret_text(&secret, "tls.crt");
    assert_ne!(cert, held.cert, "the certificate was not rotated");
    assert_eq!(secret_text(&secret, "ca.crt"), held.ca_cert);
    assert_eq!(secret_text(&secret, "ca.key"), held.ca_key);
    // The CA did not change, so the caBundle needed no patch.
    assert!(fake.json_patches().is_empty());
    assert_eq!(
        std::fs::read_to_string(files.join("tls.crt")).unwrap(),
        cert
    );
    let left = issue::not_after(&cert)
        .unwrap()
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(left > 364 * DAY, "{left:?}");
    client_verifies(&files, "agentmesh-controller.agentmesh-system.svc").unwrap();
}

#[tokio::test]
async fn replicas_racing_on_a_fresh_install_serve_one_certificate() {
    let fake = FakeApi::start().await;
    fake.apply(configuration(None));
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (client_a, client_b) = (client(&fake, a.path()).await, client(&fake, b.path()).await);
    let (first, second) = tokio::join!(
        start(client_a, CertSource::Generated(settings(a.path()))),
        start(client_b, CertSource::Generated(settings(b.path()))),
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    let stored = secret_text(&stored_secret(&fake), "tls.crt");
    for files in [first, second] {
        assert_eq!(
            std::fs::read_to_string(files.join("tls.crt")).unwrap(),
            stored
        );
    }
    assert_eq!(
        ca_bundles(&fake),
        vec![Some(secret_text(&stored_secret(&fake), "ca.crt"))]
    );
}

#[tokio::test]
async fn garbage_in_the_secret_is_replaced_and_its_type_kept() {
    let fake = FakeApi::start().await;
    fake.apply(configuration(None));
    fake.apply(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NAMESPACE, "labels": {"team": "platform"}},
        "type": "Opaque",
        "data": {"tls.crt": "bm90IGEgY2VydGlmaWNhdGU=", "other": "a2VwdA=="},
    }));
    let dir = tempfile::tempdir().unwrap();
    let files = keep(&fake, dir.path()).await;
    let secret = stored_secret(&fake);
    // Garbage is no CA anybody served: the caBundle holds the new CA alone.
    assert_eq!(
        ca_bundles(&fake),
        vec![Some(secret_text(&secret, "ca.crt"))]
    );
    assert!(secret["data"].get("previous-ca.crt").is_none());
    // The type of a Secret cannot change; the user's other keys and labels stay.
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(secret["metadata"]["labels"]["team"], "platform");
    assert_eq!(secret_text(&secret, "other"), "kept");
    client_verifies(&files, "agentmesh-controller.agentmesh-system.svc").unwrap();
}

/// The controller binary, started as the chart starts it (the certificate flags of
/// `agentmesh.webhookArgs`), against the fake.
fn serve_args(fake: &FakeApi, dir: &Path, xds_port: u16, certificate: &[String]) -> Vec<String> {
    let kubeconfig = dir.join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig);
    let mut args = vec![
        "serve".to_string(),
        "--kubernetes".into(),
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--xds-addr=127.0.0.1:{xds_port}"),
        format!("--leader-election-namespace={NAMESPACE}"),
        format!("--webhook-namespace={NAMESPACE}"),
    ];
    args.extend_from_slice(certificate);
    args
}

/// The controller serving with the chart's generated-certificate flags (files in
/// `dir/webhook`) plus `extra`, once its xDS server listens.
async fn serve_as_the_chart_does(fake: &FakeApi, dir: &Path, extra: &[String]) -> support::Process {
    let port = support::free_port();
    let mut flags = vec![
        format!("--webhook-cert-secret={SECRET}"),
        format!("--webhook-configuration={CONFIGURATION}"),
        format!("--webhook-service={SERVICE}"),
        format!(
            "--webhook-generated-cert-dir={}",
            dir.join("webhook").display()
        ),
    ];
    flags.extend_from_slice(extra);
    let args = serve_args(fake, dir, port, &flags);
    support::start_serving(
        &args,
        port,
        dir.join("controller.log"),
        Duration::from_secs(30),
    )
    .await
}

#[tokio::test]
async fn serve_with_the_charts_flags_keeps_the_certificate_before_it_serves() {
    let fake = FakeApi::start().await;
    fake.apply(configuration(None));
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("webhook");
    let _controller = serve_as_the_chart_does(&fake, dir.path(), &[]).await;
    // By the time xDS listens, the certificate is in place.
    let secret = stored_secret(&fake);
    assert_eq!(
        ca_bundles(&fake),
        vec![Some(secret_text(&secret, "ca.crt"))]
    );
    assert_eq!(
        std::fs::read_to_string(files.join("tls.crt")).unwrap(),
        secret_text(&secret, "tls.crt")
    );
    client_verifies(&files, "agentmesh-controller.agentmesh-system.svc").unwrap();
}

#[test]
fn serve_refuses_certificate_files_that_are_not_there_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    // Building the client needs no connection, and the files are refused before the
    // first request: nothing is ever sent to this address.
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'http://127.0.0.1:9'}\n\
         users:\n- name: u\n  user: {token: t}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\n\
         current-context: c\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentmesh-controller"))
        .args([
            "serve".to_string(),
            "--kubernetes".into(),
            format!("--kubeconfig={}", kubeconfig.display()),
            "--xds-addr=127.0.0.1:0".into(),
            format!("--webhook-cert-dir={}", dir.path().join("absent").display()),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("webhook certificate") && stderr.contains("absent/tls.crt"),
        "{stderr}"
    );
}

/// An AdmissionReview for a Pod CREATE in `agents` with `labels`.
fn pod_review(uid: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "agents",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "research-agent", "namespace": "agents", "labels": labels},
                "spec": {"containers": [{"name": "agent", "image": "example.com/agent:1"}]}
            }
        }
    })
}

/// `curl` as the API server calls the webhook: HTTPS to the Service's name (resolved to
/// loopback), trusting only the CA of the webhook configuration's caBundle.
fn curl(args: &[&str]) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is missing: run scripts/install-test-deps.sh");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The controller started as the chart starts it serves the injection webhook with the
/// certificate it generated: the API server (here curl, trusting only the caBundle the
/// controller patched in) gets a JSONPatch that injects the chart's images, a skip with
/// its reason, and `/metrics` counts both.
#[tokio::test]
async fn serve_with_the_charts_flags_serves_the_injection_webhook() {
    let fake = FakeApi::start().await;
    fake.apply(configuration(None));
    let dir = tempfile::tempdir().unwrap();
    let (webhook_port, metrics_port) = (support::free_port(), support::free_port());
    let _controller = serve_as_the_chart_does(
        &fake,
        dir.path(),
        &[
            format!("--webhook-addr=127.0.0.1:{webhook_port}"),
            format!("--metrics-addr=127.0.0.1:{metrics_port}"),
            "--proxy-image=registry.example/agentmesh-proxy:t1".into(),
            "--init-image=registry.example/agentmesh-init:t1".into(),
            "--sidecar-xds-address=http://agentmesh-controller.agentmesh-system.svc:16010".into(),
        ],
    )
    .await;
    // What the API server trusts: the caBundle the controller wrote.
    let ca_bundle = ca_bundles(&fake)[0].clone().expect("caBundle set");
    let ca_file = dir.path().join("ca-bundle.pem");
    std::fs::write(&ca_file, &ca_bundle).unwrap();
    let host = format!("{SERVICE}.{NAMESPACE}.svc");
    let resolve = format!("{host}:{webhook_port}:127.0.0.1");
    let url = format!("https://{host}:{webhook_port}/inject");
    let review = |body: &Value| -> Value {
        let answer = curl(&[
            "--cacert",
            ca_file.to_str().unwrap(),
            "--resolve",
            &resolve,
            "-H",
            "content-type: application/json",
            "--data-binary",
            &body.to_string(),
            &url,
        ]);
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"))
    };

    let answer = review(&pod_review("uid-1", json!({"app": "agent"})));
    let response = &answer["response"];
    assert_eq!(response["uid"], "uid-1");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        response["patch"].as_str().unwrap(),
    )
    .unwrap();
    let patch: Value = serde_json::from_slice(&patch).unwrap();
    let text = patch.to_string();
    for expected in [
        "registry.example/agentmesh-proxy:t1",
        "registry.example/agentmesh-init:t1",
        "http://agentmesh-controller.agentmesh-system.svc:16010",
        "agentmesh.dev/status",
    ] {
        assert!(
            text.contains(expected),
            "the patch lacks {expected}: {text}"
        );
    }

    let answer = review(&pod_review(
        "uid-2",
        json!({"app": "agent", "agentmesh.dev/inject": "disabled"}),
    ));
    let response = &answer["response"];
    assert_eq!(
        (response["uid"].clone(), response["allowed"].clone()),
        (json!("uid-2"), json!(true))
    );
    assert!(response.get("patch").is_none(), "{response}");
    assert!(
        response["warnings"]
            .to_string()
            .contains("agentmesh.dev/inject"),
        "{response}"
    );

    let metrics = curl(&[&format!("http://127.0.0.1:{metrics_port}/metrics")]);
    assert!(
        metrics.contains("agentmesh_injector_injected_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"agentmesh_injector_skipped_total{reason="opted_out"} 1"#),
        "{metrics}"
    );
}

/// A CA replaced (here: in its last third) stays in the caBundle next to the new one
/// for the overlap, so a replica still serving a certificate of the old CA (it has not
/// seen the new Secret yet) is accepted by the API server; then it is dropped.
#[tokio::test]
async fn a_replaced_ca_stays_in_the_ca_bundle_until_the_overlap_ends() {
    let fake = FakeApi::start().await;
    // A CA issued 3000 days ago (in its last third), with a fresh serving certificate
    // under it: what the other replicas serve right now.
    let old = issue::issue_all(
        &service_names(SERVICE, NAMESPACE),
        &Lifetimes::default(),
        SystemTime::now() - 3000 * DAY,
    )
    .unwrap();
    let served_by_others = issue::renew_serving(
        &old.ca_cert,
        &old.ca_key,
        &service_names(SERVICE, NAMESPACE),
        &Lifetimes::default(),
        SystemTime::now(),
    )
    .unwrap();
    fake.apply(secret_of(&served_by_others));
    fake.apply(configuration(Some(&old.ca_cert)));
    let dir = tempfile::tempdir().unwrap();
    let overlap = Duration::from_secs(3);
    let started = Instant::now();
    start(
        client(&fake, dir.path()).await,
        CertSource::Generated(GeneratedCert {
            ca_overlap: overlap,
            ..settings(dir.path())
        }),
    )
    .await
    .unwrap();
    let secret = stored_secret(&fake);
    let new_ca = secret_text(&secret, "ca.crt");
    assert_ne!(new_ca, old.ca_cert, "the CA was not replaced");
    assert_eq!(secret_text(&secret, "previous-ca.crt"), old.ca_cert);
    assert!(
        secret["metadata"]["annotations"]["agentmesh.dev/previous-ca-until"].is_string(),
        "{secret}"
    );
    // During the overlap the API server trusts both: the certificate this replica
    // serves now and the one the others still serve.
    let bundle = ca_bundles(&fake)[0].clone().expect("no caBundle");
    assert_eq!(
        pem_certs(&bundle),
        [pem_certs(&new_ca), pem_certs(&old.ca_cert)].concat()
    );
    let name = "agentmesh-controller.agentmesh-system.svc";
    verifies(&bundle, &secret_text(&secret, "tls.crt"), name).unwrap();
    verifies(&bundle, &served_by_others.cert, name).unwrap();
    // Afterwards: the new CA alone, in the caBundle and the Secret.
    eventually("the previous CA to be dropped", || {
        ca_bundles(&fake) == vec![Some(new_ca.clone())]
    })
    .await;
    assert!(
        started.elapsed() + Duration::from_secs(1) >= overlap,
        "dropped after {:?}, before the overlap ended",
        started.elapsed()
    );
    let secret = stored_secret(&fake);
    assert!(secret["data"].get("previous-ca.crt").is_none(), "{secret}");
    assert_eq!(secret_text(&secret, "ca.crt"), new_ca);
    let bundle = ca_bundles(&fake)[0].clone().unwrap();
    assert!(verifies(&bundle, &served_by_others.cert, name).is_err());
}

/// The value of the sample `series` (name and labels, as printed) in `metrics`.
fn sample(metrics: &str, series: &str) -> Option<i64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.parse::<f64>().ok().map(|v| v as i64)
    })
}

fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The controller's `/metrics`, scraped over HTTP as Prometheus does, reports when the
/// served certificate and its CA expire, counts a rotation another replica wrote, and
/// counts a pass that failed; promtool accepts the text every time.
#[tokio::test]
async fn metrics_report_the_certificates_expiry_rotations_and_failures() {
    let fake = FakeApi::start().await;
    let held = installed(&fake, 10 * DAY);
    let dir = tempfile::tempdir().unwrap();
    let (webhook_port, metrics_port) = (support::free_port(), support::free_port());
    let controller = serve_as_the_chart_does(
        &fake,
        dir.path(),
        &[
            format!("--webhook-addr=127.0.0.1:{webhook_port}"),
            format!("--metrics-addr=127.0.0.1:{metrics_port}"),
        ],
    )
    .await;
    let scrape = || async {
        support::eventually("/metrics answers", Duration::from_secs(10), || async {
            support::get(metrics_port, "/metrics")
                .await
                .filter(|(status, _)| *status == 200)
                .map(|(_, body)| body)
        })
        .await
    };
    let expiry = "agentmesh_webhook_certificate_expiry_timestamp_seconds";
    let ca_expiry = "agentmesh_webhook_ca_expiry_timestamp_seconds";
    let serving_rotations =
        r#"agentmesh_webhook_certificate_rotations_total{certificate="serving"}"#;
    let ca_rotations = r#"agentmesh_webhook_certificate_rotations_total{certificate="ca"}"#;
    let failures = "agentmesh_webhook_certificate_failures_total";

    let metrics = scrape().await;
    agentmesh_e2e::promtool::assert_accepts(&metrics);
    assert_eq!(
        sample(&metrics, expiry),
        Some(unix_seconds(issue::not_after(&held.cert).unwrap())),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, ca_expiry),
        Some(unix_seconds(issue::not_after(&held.ca_cert).unwrap())),
        "{metrics}"
    );
    assert_eq!(sample(&metrics, serving_rotations), Some(0), "{metrics}");
    assert_eq!(sample(&metrics, ca_rotations), Some(0), "{metrics}");
    assert_eq!(sample(&metrics, failures), Some(0), "{metrics}");

    // Another replica renews the serving certificate under the same CA.
    let renewed = issue::renew_serving(
        &held.ca_cert,
        &held.ca_key,
        &service_names(SERVICE, NAMESPACE),
        &Lifetimes::default(),
        SystemTime::now() - DAY,
    )
    .unwrap();
    fake.apply(secret_of(&renewed));
    let metrics = support::eventually(
        "the rotation is counted",
        Duration::from_secs(20),
        || async {
            let metrics = scrape().await;
            (sample(&metrics, serving_rotations) == Some(1)).then_some(metrics)
        },
    )
    .await;
    agentmesh_e2e::promtool::assert_accepts(&metrics);
    assert_eq!(
        sample(&metrics, expiry),
        Some(unix_seconds(issue::not_after(&renewed.cert).unwrap()))
    );
    assert_eq!(sample(&metrics, ca_rotations), Some(0), "{metrics}");

    // The Secrets API goes away (RBAC revoked, say): the next pass fails and counts.
    fake.absent("v1", "Secret");
    fake.apply(configuration(Some(&held.ca_cert)));
    let metrics = support::eventually(
        "the failure is counted",
        Duration::from_secs(20),
        || async {
            let metrics = scrape().await;
            sample(&metrics, failures)
                .is_some_and(|n| n >= 1)
                .then_some(metrics)
        },
    )
    .await;
    agentmesh_e2e::promtool::assert_accepts(&metrics);
    drop(controller);
}

/// With cert-manager's files (`--webhook-cert-dir`, the chart's cert-manager source),
/// `/metrics` reports the expiry of the files' certificate and CA too.
#[tokio::test]
async fn metrics_report_the_expiry_of_cert_managers_files() {
    let fake = FakeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("cert-manager");
    std::fs::create_dir(&files).unwrap();
    let set = issue::issue_all(
        &service_names(SERVICE, NAMESPACE),
        &Lifetimes::default(),
        SystemTime::now() - 5 * DAY,
    )
    .unwrap();
    for (file, text) in [
        ("tls.crt", &set.cert),
        ("tls.key", &set.key),
        ("ca.crt", &set.ca_cert),
    ] {
        std::fs::write(files.join(file), text).unwrap();
    }
    let (xds_port, webhook_port, metrics_port) = (
        support::free_port(),
        support::free_port(),
        support::free_port(),
    );
    let args = serve_args(
        &fake,
        dir.path(),
        xds_port,
        &[
            format!("--webhook-cert-dir={}", files.display()),
            format!("--webhook-addr=127.0.0.1:{webhook_port}"),
            format!("--metrics-addr=127.0.0.1:{metrics_port}"),
        ],
    );
    let _controller = support::start_serving(
        &args,
        xds_port,
        dir.path().join("controller.log"),
        Duration::from_secs(30),
    )
    .await;
    let metrics = support::eventually("/metrics answers", Duration::from_secs(10), || async {
        support::get(metrics_port, "/metrics")
            .await
            .filter(|(status, _)| *status == 200)
            .map(|(_, body)| body)
    })
    .await;
    agentmesh_e2e::promtool::assert_accepts(&metrics);
    assert_eq!(
        sample(
            &metrics,
            "agentmesh_webhook_certificate_expiry_timestamp_seconds"
        ),
        Some(unix_seconds(issue::not_after(&set.cert).unwrap())),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "agentmesh_webhook_ca_expiry_timestamp_seconds"),
        Some(unix_seconds(issue::not_after(&set.ca_cert).unwrap())),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "agentmesh_webhook_certificate_failures_total"),
        Some(0)
    );
}
