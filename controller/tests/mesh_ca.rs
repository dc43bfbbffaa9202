//! The mesh CA's root in Kubernetes mode against an API server: generated once however
//! many replicas start, loaded and followed when the Secret is replaced, refused when
//! it is not a CA, and its certificate published to exactly the namespaces labelled
//! for injection, restored when edited or deleted, with the previous root kept for
//! the overlap after a replacement.
//!
//! The API server is our own double (`support/fake_api.rs`): no real API server can run
//! on our machines (see ../shared/TESTING.md). It speaks the wire protocol the code
//! uses (get, create with 409 AlreadyExists, replace with 409 Conflict on a stale
//! resourceVersion, list + watch, with real JSON), but applies no label or field
//! selector, so these tests also prove the code filters namespaces and ConfigMaps
//! itself.
#![allow(clippy::unwrap_used)]

#[path = "support/fake_api.rs"]
mod fake_api;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use agentmesh_controller::kubernetes;
use agentmesh_controller::kubernetes::mesh_ca::{PublishSettings, RootSettings, publish, start};
use agentmesh_controller::kubernetes::webhook_cert::issue;
use agentmesh_controller::mesh_ca::RootWatch;
use fake_api::FakeApi;
use k8s_openapi::ByteString;
use serde_json::{Value, json};

const NAMESPACE: &str = "agentmesh-system";
const SECRET: &str = "agentmesh-mesh-ca";
const CONFIGMAP: &str = "agentmesh-mesh-ca";
const KEY: &str = "ca-bundle.crt";
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

async fn client(fake: &FakeApi, dir: &Path) -> kube::Client {
    let kubeconfig = dir.join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig);
    kubernetes::client(Some(&kubeconfig)).await.unwrap()
}

fn root_settings(generate: bool) -> RootSettings {
    RootSettings {
        namespace: NAMESPACE.into(),
        secret: SECRET.into(),
        generate,
    }
}

/// A replica's root source.
async fn replica(fake: &FakeApi, dir: &Path) -> RootWatch {
    start(client(fake, dir).await, root_settings(true))
        .await
        .unwrap()
}

fn namespace(name: &str, inject: Option<&str>) -> Value {
    let mut labels = json!({"kubernetes.io/metadata.name": name});
    if let Some(value) = inject {
        labels["agentmesh.dev/inject"] = value.into();
    }
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn tls_secret(cert: &str, key: &str) -> Value {
    let data = |text: &str| serde_json::to_value(ByteString(text.into())).unwrap();
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NAMESPACE},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": data(cert), "tls.key": data(key)},
    })
}

fn secret_text(fake: &FakeApi, key: &str) -> String {
    let secret = fake
        .get("v1", "Secret", NAMESPACE, SECRET)
        .expect("no Secret");
    let bytes: ByteString = serde_json::from_value(secret["data"][key].clone()).unwrap();
    String::from_utf8(bytes.0).unwrap()
}

/// The published bundle in `namespace`, if there is one.
fn bundle(fake: &FakeApi, namespace: &str) -> Option<String> {
    let configmap = fake.get("v1", "ConfigMap", namespace, CONFIGMAP)?;
    configmap["data"][KEY].as_str().map(str::to_owned)
}

/// The PEM certificates of a bundle, in order.
fn certificates(pem: &str) -> Vec<Vec<u8>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .map(|c| c.unwrap().to_vec())
        .collect()
}

fn der(pem: &str) -> Vec<u8> {
    certificates(pem).remove(0)
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A PEM file standing for the public roots (one self-signed CA), and its certificate.
fn public_roots(dir: &Path) -> (std::path::PathBuf, String) {
    let (cert, _) = issue::issue_ca("a public root", YEAR, SystemTime::now()).unwrap();
    let path = dir.join("public-roots.pem");
    std::fs::write(&path, &cert).unwrap();
    (path, cert)
}

fn publish_settings(public_roots: &Path, overlap: Duration) -> PublishSettings {
    PublishSettings {
        namespace: NAMESPACE.into(),
        configmap: CONFIGMAP.into(),
        key: KEY.into(),
        overlap,
        public_roots: Some(public_roots.to_owned()),
    }
}

#[tokio::test]
async fn two_replicas_starting_together_generate_one_root() {
    let fake = FakeApi::start().await;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (first, second) = tokio::join!(replica(&fake, a.path()), replica(&fake, b.path()));
    let stored = secret_text(&fake, "tls.crt");
    for roots in [&first, &second] {
        let root = roots.borrow().clone().expect("no root");
        assert_eq!(root.cert_pem, stored);
        assert_eq!(root.key_pem, secret_text(&fake, "tls.key"));
    }
    let secret = fake.get("v1", "Secret", NAMESPACE, SECRET).unwrap();
    assert_eq!(secret["type"], "kubernetes.io/tls");
    // A CA whose key is the one stored, valid for years.
    let not_after = issue::check_ca(&stored, &secret_text(&fake, "tls.key")).unwrap();
    assert!(
        not_after.duration_since(SystemTime::now()).unwrap() > 9 * YEAR,
        "the root expires too soon"
    );
    // A third replica, later, reads the same root.
    let c = tempfile::tempdir().unwrap();
    let third = replica(&fake, c.path()).await;
    assert_eq!(third.borrow().as_ref().unwrap().cert_pem, stored);
}

#[tokio::test]
async fn an_operators_root_is_used_and_a_replacement_followed() {
    let fake = FakeApi::start().await;
    let (cert, key) = issue::issue_ca("corp mesh CA", YEAR, SystemTime::now()).unwrap();
    fake.apply(tls_secret(&cert, &key));
    let dir = tempfile::tempdir().unwrap();
    let mut roots = replica(&fake, dir.path()).await;
    assert_eq!(roots.borrow_and_update().as_ref().unwrap().cert_pem, cert);
    // The operator (or cert-manager) replaces the Secret: the watch has the new root.
    let (cert2, key2) = issue::issue_ca("corp mesh CA 2", YEAR, SystemTime::now()).unwrap();
    fake.apply(tls_secret(&cert2, &key2));
    tokio::time::timeout(Duration::from_secs(20), roots.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(roots.borrow().as_ref().unwrap().cert_pem, cert2);
    // A broken replacement is refused; the last good root stays.
    fake.apply(tls_secret(&cert, &key2));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(roots.borrow().as_ref().unwrap().cert_pem, cert2);
}

#[tokio::test]
async fn a_secret_that_is_no_ca_is_refused_naming_the_secret_and_key() {
    let fake = FakeApi::start().await;
    let names = issue::service_names("agentmesh-controller", NAMESPACE);
    let serving = issue::issue_all(&names, &Default::default(), SystemTime::now()).unwrap();
    fake.apply(tls_secret(&serving.cert, &serving.key));
    let dir = tempfile::tempdir().unwrap();
    let err = start(client(&fake, dir.path()).await, root_settings(true))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("agentmesh-system/agentmesh-mesh-ca")
            && err.contains("tls.crt")
            && err.contains("not a CA"),
        "{err}"
    );
    // It was not overwritten: the operator's Secret is theirs.
    assert_eq!(secret_text(&fake, "tls.crt"), serving.cert);

    let other = tls_secret(&serving.ca_cert, "");
    fake.apply(other);
    let err = start(client(&fake, dir.path()).await, root_settings(true))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("tls.key"), "{err}");
}

#[tokio::test]
async fn without_generating_the_root_arrives_with_its_secret() {
    let fake = FakeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut roots = start(client(&fake, dir.path()).await, root_settings(false))
        .await
        .unwrap();
    assert!(roots.borrow_and_update().is_none());
    assert!(fake.get("v1", "Secret", NAMESPACE, SECRET).is_none());
    // cert-manager writes the Secret later.
    let (cert, key) = issue::issue_ca("cert-manager CA", YEAR, SystemTime::now()).unwrap();
    fake.apply(tls_secret(&cert, &key));
    tokio::time::timeout(Duration::from_secs(20), roots.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(roots.borrow().as_ref().unwrap().cert_pem, cert);
}

#[tokio::test]
async fn the_root_is_published_to_labelled_namespaces_only_and_restored() {
    let fake = FakeApi::start().await;
    fake.apply(namespace(NAMESPACE, None));
    fake.apply(namespace("agents", Some("enabled")));
    fake.apply(namespace("plain", None));
    fake.apply(namespace("opted-out", Some("disabled")));
    let dir = tempfile::tempdir().unwrap();
    let (public_file, public_root) = public_roots(dir.path());
    let roots = replica(&fake, dir.path()).await;
    let root = roots.borrow().as_ref().unwrap().cert_pem.clone();
    let _publisher = tokio::spawn(publish(
        client(&fake, dir.path()).await,
        publish_settings(&public_file, Duration::from_secs(3600)),
        roots.clone(),
    ));
    eventually("the bundle in agents", || bundle(&fake, "agents").is_some()).await;
    let published = bundle(&fake, "agents").unwrap();
    // The root first, then the public roots; never a key.
    assert_eq!(
        certificates(&published),
        vec![der(&root), der(&public_root)]
    );
    assert!(!published.contains("PRIVATE KEY"), "{published}");
    for other in ["plain", "opted-out"] {
        assert!(bundle(&fake, other).is_none(), "published to {other}");
    }
    // The state in the controller's namespace says which root the bundle is for.
    let state = fake
        .get("v1", "ConfigMap", NAMESPACE, CONFIGMAP)
        .expect("no state");
    assert_eq!(state["data"]["root.crt"], root.as_str());
    assert_eq!(state["data"][KEY], published.as_str());

    // Deleted: written again.
    assert!(fake.delete("v1", "ConfigMap", "agents", CONFIGMAP));
    eventually("the bundle restored after deletion", || {
        bundle(&fake, "agents").as_deref() == Some(&published)
    })
    .await;
    // Edited: written again, the user's other keys kept.
    fake.apply(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP, "namespace": "agents"},
        "data": {KEY: "-----BEGIN CERTIFICATE-----\nbm90IG91cnM=\n-----END CERTIFICATE-----\n", "note": "mine"},
    }));
    eventually("the bundle restored after an edit", || {
        bundle(&fake, "agents").as_deref() == Some(&published)
    })
    .await;
    let edited = fake.get("v1", "ConfigMap", "agents", CONFIGMAP).unwrap();
    assert_eq!(edited["data"]["note"], "mine");
    // A namespace labelled later gets it too.
    fake.apply(namespace("plain", Some("enabled")));
    eventually("the bundle in a newly labelled namespace", || {
        bundle(&fake, "plain").as_deref() == Some(&published)
    })
    .await;
}

#[tokio::test]
async fn a_replaced_root_is_published_with_the_previous_one_until_the_overlap_ends() {
    let fake = FakeApi::start().await;
    fake.apply(namespace("agents", Some("enabled")));
    let (old_cert, old_key) = issue::issue_ca("corp mesh CA", YEAR, SystemTime::now()).unwrap();
    fake.apply(tls_secret(&old_cert, &old_key));
    let dir = tempfile::tempdir().unwrap();
    let (public_file, public_root) = public_roots(dir.path());
    let roots = replica(&fake, dir.path()).await;
    let overlap = Duration::from_secs(3);
    let _publisher = tokio::spawn(publish(
        client(&fake, dir.path()).await,
        publish_settings(&public_file, overlap),
        roots.clone(),
    ));
    eventually("the first bundle", || {
        bundle(&fake, "agents").is_some_and(|b| certificates(&b)[0] == der(&old_cert))
    })
    .await;

    let (new_cert, new_key) = issue::issue_ca("corp mesh CA 2", YEAR, SystemTime::now()).unwrap();
    fake.apply(tls_secret(&new_cert, &new_key));
    // During the overlap: the new root, the previous one, the public roots.
    let with_both = vec![der(&new_cert), der(&old_cert), der(&public_root)];
    eventually("the new root next to the previous one", || {
        bundle(&fake, "agents").is_some_and(|b| certificates(&b) == with_both)
    })
    .await;
    let replaced_at = Instant::now();
    // A copy deleted during the overlap comes back with both roots.
    assert!(fake.delete("v1", "ConfigMap", "agents", CONFIGMAP));
    eventually("the restored copy with both roots", || {
        bundle(&fake, "agents").is_some_and(|b| certificates(&b) == with_both)
    })
    .await;
    // After it: the new root alone (and the public roots).
    eventually("the previous root to be dropped", || {
        bundle(&fake, "agents")
            .is_some_and(|b| certificates(&b) == vec![der(&new_cert), der(&public_root)])
    })
    .await;
    assert!(
        replaced_at.elapsed() + Duration::from_millis(1500) >= overlap,
        "dropped before the overlap ended"
    );
    let state = fake.get("v1", "ConfigMap", NAMESPACE, CONFIGMAP).unwrap();
    assert!(state["data"].get("previous-root.crt").is_none(), "{state}");
}
