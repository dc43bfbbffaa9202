//! The mesh CA service over real gRPC: the proxy's own client (`agentmesh_proxy`'s
//! `CaClient`) asks the controller's `MeshCertificates` for an intermediate, and leaves
//! minted with it are checked by a real TLS client (rustls, trusting only the mesh root)
//! in a real handshake: accepted for a name the pod's AgentPolicy intercepts, refused for
//! any other name (the intermediate's name constraints), even though the proxy mints it.
//! Also the refusals a caller sees: no root (FAILED_PRECONDITION), a wrong token, a node
//! that is not a sidecar, a pod that intercepts nothing, a tampered CSR.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agentmesh_controller::auth::Auth;
use agentmesh_controller::ca_service::MeshCaServer;
use agentmesh_controller::mesh_ca::MeshRoot;
use agentmesh_proto::ca::v1::SignIntermediateRequest;
use agentmesh_proto::ca::v1::mesh_certificates_client::MeshCertificatesClient;
use agentmesh_proxy::config::issued_ca::{CaClient, Wants};
use agentmesh_proxy::listen::capture::mesh_ca::MeshCa;
use agentmesh_proxy::telemetry::sidecar::SidecarMetrics;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName};

const TOKEN: &str = "mesh-ca-test-token";

/// A namespace-wide policy of `agents` intercepting `*.example.com`, and one of `quiet`
/// that intercepts nothing.
const POLICIES: &str = "apiVersion: agentmesh.dev/v1alpha1
kind: AgentPolicy
metadata: { name: llm, namespace: agents }
spec:
  workloadSelector: {}
  outbound:
    egress:
    - { name: providers, hostnames: ['*.example.com'], action: Allow, tls: Intercept }
---
apiVersion: agentmesh.dev/v1alpha1
kind: AgentPolicy
metadata: { name: plain, namespace: quiet }
spec:
  workloadSelector: {}
  outbound:
    egress:
    - { name: providers, hostnames: ['*.example.com'], action: Allow }
";

fn root() -> MeshRoot {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    params
        .distinguished_name
        .push(DnType::CommonName, "test mesh root");
    MeshRoot {
        cert_pem: params.self_signed(&key).unwrap().pem(),
        key_pem: key.serialize_pem(),
    }
}

struct Controller {
    address: String,
    token_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// Serves the mesh CA service for `POLICIES` with `root` on a loopback port.
async fn controller(root: Option<MeshRoot>) -> Controller {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("resources");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("policies.yaml"), POLICIES).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let catalog = agentmesh_controller::folder::load(&folder).unwrap();
    let (catalogs_tx, catalogs) = tokio::sync::watch::channel(Arc::new(catalog));
    let (root_tx, roots) = tokio::sync::watch::channel(root.map(Arc::new));
    let server = MeshCaServer::new(
        catalogs,
        Auth::TokenFile(token_file.clone()),
        roots,
        Duration::from_secs(3600),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        // Held by the server task: dropping them would end nothing, but keeps intent clear.
        let _keep = (catalogs_tx, root_tx);
        tonic::transport::Server::builder()
            .add_service(server.into_service())
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    Controller {
        address,
        token_file,
        _dir: dir,
    }
}

fn client(c: &Controller, node: &str) -> CaClient {
    CaClient {
        address: c.address.clone(),
        node_id: node.into(),
        token_file: Some(c.token_file.clone()),
    }
}

fn wants() -> Wants {
    Wants {
        hostnames: ["*.example.com".to_string()].into(),
        cache_size: 16,
    }
}

/// A TLS handshake in memory between a rustls client trusting only `root` and the
/// mesh CA's leaf for `name`. `Err` carries the client's reason for refusing.
fn handshake(ca: &MeshCa, root: &MeshRoot, name: &str) -> Result<(), String> {
    let server_config = ca.server_config(name, &SidecarMetrics::default()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    let root_der: CertificateDer<'static> = rustls_pemfile::certs(&mut root.cert_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    roots.add(root_der).unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut client = rustls::ClientConnection::new(
        Arc::new(client_config),
        ServerName::try_from(name.to_owned()).unwrap(),
    )
    .unwrap();
    let mut server = rustls::ServerConnection::new(server_config).unwrap();
    for _ in 0..10 {
        let mut buf = Vec::new();
        client.write_tls(&mut buf).unwrap();
        server.read_tls(&mut buf.as_slice()).unwrap();
        server.process_new_packets().map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        server.write_tls(&mut buf).unwrap();
        client.read_tls(&mut buf.as_slice()).unwrap();
        client.process_new_packets().map_err(|e| e.to_string())?;
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
    }
    Err("the handshake did not finish".into())
}

#[tokio::test]
async fn an_issued_intermediate_mints_leaves_the_root_verifies_only_inside_its_names() {
    let root = root();
    let c = controller(Some(root.clone())).await;
    let issued = client(&c, "sidecar~10.0.0.7~agent-0.agents")
        .request(&wants())
        .await
        .unwrap();
    assert_eq!(issued.permitted_dns, ["example.com"]);
    let left = issued
        .not_after
        .duration_since(SystemTime::now())
        .unwrap()
        .as_secs();
    assert!((3500..=3600).contains(&left), "{left}");
    // Renewal at two thirds of the validity.
    let renew_in = issued
        .renew_at
        .duration_since(SystemTime::now())
        .unwrap()
        .as_secs();
    assert!((2300..=2400).contains(&renew_in), "{renew_in}");

    handshake(&issued.ca, &root, "api.example.com").unwrap();
    handshake(&issued.ca, &root, "example.com").unwrap();
    // The proxy would mint it, but no client trusting the root accepts it.
    let refused = handshake(&issued.ca, &root, "api.other.test").unwrap_err();
    assert!(refused.contains("certificate"), "{refused}");
    // IP addresses are excluded outright.
    assert!(handshake(&issued.ca, &root, "10.1.2.3").is_err());
}

#[tokio::test]
async fn without_a_root_the_call_fails_with_failed_precondition() {
    let c = controller(None).await;
    let err = client(&c, "sidecar~10.0.0.7~agent-0.agents")
        .request(&wants())
        .await
        .unwrap_err();
    assert!(err.contains("FailedPrecondition"), "{err}");
    assert!(err.contains("--mesh-ca-cert-file"), "{err}");
}

#[tokio::test]
async fn callers_that_may_not_have_an_intermediate_are_refused() {
    let c = controller(Some(root())).await;
    // Not a sidecar.
    let err = client(&c, "gateway~10.0.0.9~gw.agents")
        .request(&wants())
        .await
        .unwrap_err();
    assert!(
        err.contains("PermissionDenied") && err.contains("only sidecars"),
        "{err}"
    );
    // A pod whose policies intercept nothing.
    let err = client(&c, "sidecar~10.0.0.8~web-0.quiet")
        .request(&wants())
        .await
        .unwrap_err();
    assert!(
        err.contains("PermissionDenied") && err.contains("web-0.quiet"),
        "{err}"
    );
    // The wrong credential.
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("token");
    std::fs::write(&wrong, "not-the-token").unwrap();
    let err = CaClient {
        token_file: Some(wrong),
        ..client(&c, "sidecar~10.0.0.7~agent-0.agents")
    }
    .request(&wants())
    .await
    .unwrap_err();
    assert!(err.contains("Unauthenticated"), "{err}");
    // A CSR that is not one.
    let mut raw = MeshCertificatesClient::connect(c.address.clone())
        .await
        .unwrap();
    let mut request = tonic::Request::new(SignIntermediateRequest {
        node_id: "sidecar~10.0.0.7~agent-0.agents".into(),
        csr_pem: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
            .into(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let status = raw.sign_intermediate(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().starts_with("csrPem"),
        "{}",
        status.message()
    );
}

#[test]
fn an_intercepting_policy_gives_the_pod_its_rule_ca_bundle_and_a_controller_issued_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = root().cert_pem;
    let indented: String = ca.lines().map(|l| format!("        {l}\n")).collect();
    let policy = format!(
        "apiVersion: agentmesh.dev/v1alpha1
kind: AgentPolicy
metadata: {{ name: llm, namespace: agents }}
spec:
  workloadSelector: {{}}
  outbound:
    egress:
    - name: providers
      hostnames: [llm]
      action: Allow
      tls: Intercept
      caBundle: |
{indented}"
    );
    std::fs::write(dir.path().join("policy.yaml"), policy).unwrap();
    let catalog = agentmesh_controller::folder::load(dir.path()).unwrap();
    let node =
        agentmesh_controller::auth::NodeId::parse("sidecar~10.0.0.7~agent-0.agents").unwrap();
    let sidecar = catalog.resources_for(&node).unwrap().sidecar.unwrap();
    let rule = &sidecar.egress[0];
    assert_eq!(rule.name, "llm/providers");
    assert_eq!(
        rule.tls,
        agentmesh_proto::config::v1::EgressTls::Intercept as i32
    );
    assert_eq!(rule.ca_pem.trim(), ca.trim());
    let mesh_ca = sidecar.mesh_ca.unwrap();
    assert!(mesh_ca.controller.is_some() && mesh_ca.cert_file.is_empty());
    // Another namespace's pods are untouched.
    let other = agentmesh_controller::auth::NodeId::parse("sidecar~10.0.0.8~web-0.quiet").unwrap();
    assert!(catalog.resources_for(&other).unwrap().sidecar.is_none());
}

/// The real binaries: a sidecar whose policy intercepts is not ready while the
/// controller cannot issue it an intermediate (no root: the request fails, is counted,
/// and retried), becomes ready once a controller with a root answers, and asks for a new
/// intermediate when the intercepted hostnames change. No private key in its config dump.
#[tokio::test]
async fn a_sidecar_is_ready_only_with_an_intermediate_and_renews_when_its_names_change() {
    use support::{
        Process, eventually, free_port, get, proxy_binary, start_serving, write_atomically,
    };
    let bound = Duration::from_secs(30);
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("resources");
    std::fs::create_dir(&folder).unwrap();
    let intercepting = |hosts: &str| {
        format!(
            "apiVersion: agentmesh.dev/v1alpha1
kind: AgentPolicy
metadata: {{ name: llm, namespace: agents }}
spec:
  workloadSelector: {{}}
  outbound:
    egress:
    - {{ name: providers, hostnames: [{hosts}], action: Allow, tls: Intercept }}
"
        )
    };
    write_atomically(&folder, "policy.yaml", &intercepting("llm.test"));
    let root = root();
    let (cert, key) = (dir.path().join("root.crt"), dir.path().join("root.key"));
    std::fs::write(&cert, &root.cert_pem).unwrap();
    std::fs::write(&key, &root.key_pem).unwrap();
    let (xds, ready, metrics, admin) = (free_port(), free_port(), free_port(), free_port());
    let serve = |with_root: bool| {
        let mut args = vec![
            "serve".to_string(),
            "--folder".into(),
            folder.display().to_string(),
            "--xds-addr".into(),
            format!("127.0.0.1:{xds}"),
        ];
        if with_root {
            args.extend([
                "--mesh-ca-cert-file".into(),
                cert.display().to_string(),
                "--mesh-ca-key-file".into(),
                key.display().to_string(),
                // Renewal (at two thirds) every 10 seconds.
                "--mesh-ca-intermediate-validity".into(),
                "15s".into(),
            ]);
        }
        args
    };
    let mut controller = start_serving(
        &serve(false),
        xds,
        dir.path().join("controller-1.log"),
        bound,
    )
    .await;
    let args: Vec<String> = vec![
        "--xds".into(),
        format!("http://127.0.0.1:{xds}"),
        "--xds-node-id".into(),
        "sidecar~127.0.0.1~agent-0.agents".into(),
        "--admin-addr".into(),
        format!("127.0.0.1:{admin}"),
        "--ready-addr".into(),
        format!("127.0.0.1:{ready}"),
        "--metrics-addr".into(),
        format!("127.0.0.1:{metrics}"),
    ];
    let proxy = Process::start(&proxy_binary(), &args, dir.path().join("proxy.log"));
    let count = |outcome: &'static str| async move {
        let (_, text) = get(metrics, "/metrics").await?;
        let series =
            format!("agentmesh_mesh_ca_intermediate_requests_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    eventually(
        "a failed intermediate request is counted",
        bound,
        || async { count("failed").await.filter(|n| *n >= 1.0) },
    )
    .await;
    let (status, _) = get(ready, "/healthz/ready").await.unwrap();
    assert_eq!(
        status,
        503,
        "ready without an intermediate\n{}",
        proxy.output()
    );
    assert!(
        controller.output().contains("no mesh root CA"),
        "{}",
        controller.output()
    );

    // A controller with the root, on the same address.
    controller.kill();
    let controller = start_serving(
        &serve(true),
        xds,
        dir.path().join("controller-2.log"),
        bound,
    )
    .await;
    eventually("the sidecar becomes ready", bound, || async {
        get(ready, "/healthz/ready")
            .await
            .filter(|(s, _)| *s == 200)
    })
    .await;
    assert!(count("issued").await.unwrap_or(0.0) >= 1.0);
    let (_, dump) = get(admin, "/config_dump").await.unwrap();
    assert!(dump.contains("controller"), "{dump}");
    assert!(!dump.contains("PRIVATE KEY"), "{dump}");

    // New intercepted names: a new intermediate, constrained to them.
    write_atomically(
        &folder,
        "policy.yaml",
        &intercepting("llm.test, api.other.test"),
    );
    eventually("a new intermediate for the new names", bound, || async {
        count("issued").await.filter(|n| *n >= 2.0)
    })
    .await;
    eventually("the controller signed for the new names", bound, || async {
        controller
            .output()
            .lines()
            .any(|l| l.contains("intermediate CA signed") && l.contains("api.other.test"))
            .then_some(())
    })
    .await;

    // Renewed at two thirds of the validity, without any config change.
    eventually("a timed renewal", bound, || async {
        count("issued").await.filter(|n| *n >= 3.0)
    })
    .await;
    // The controller goes away: the next renewal fails, is counted and retried, and the
    // sidecar keeps its intermediate and stays ready.
    let failed_before = count("failed").await.unwrap_or(0.0);
    drop(controller);
    eventually("a failed renewal", bound, || async {
        count("failed").await.filter(|n| *n > failed_before)
    })
    .await;
    let (status, _) = get(ready, "/healthz/ready").await.unwrap();
    assert_eq!(status, 200, "{}", proxy.output());
    assert!(
        proxy.output().contains("keeping_current=true"),
        "{}",
        proxy.output()
    );
    assert!(!proxy.output().contains("PRIVATE KEY"));
}
