//! `agentmesh-controller render -f DIR` against checked-in goldens: each folder under
//! `tests/golden-render/` holds `input/` (manifests), optionally `args` (extra command-line
//! arguments, one per line), and the expected `expected.yaml` (stdout) and
//! `expected.stderr` (why a Gateway cannot be deployed; absent when every Gateway can).
//! Regenerate with `UPDATE_GOLDEN=1 cargo test -p agentmesh-controller --test render`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn render(dir: &Path, args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_agentmesh-controller"))
        .args(["render", "-f"])
        .arg(dir)
        .args(args)
        .env_remove("AGENTMESH_GATEWAY_IMAGE")
        .env_remove("AGENTMESH_GATEWAY_XDS_ADDRESS")
        .env_remove("AGENTMESH_GATEWAY_SERVICE_TYPE")
        .env_remove("AGENTMESH_TOKEN_AUDIENCE")
        .output()
        .unwrap()
}

/// Compares `printed` with the golden `path` (absent golden = empty), or rewrites it.
fn check_golden(path: &Path, printed: &str, stale: &mut Vec<String>) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        if printed.is_empty() {
            let _ = std::fs::remove_file(path);
        } else {
            std::fs::write(path, printed).unwrap();
        }
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if printed != expected {
        stale.push(format!("{} is stale; got:\n{printed}", path.display()));
    }
}

#[test]
fn render_prints_each_gateways_deployment_and_service() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden-render");
    let mut scenarios: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    scenarios.sort();
    assert!(!scenarios.is_empty());
    let mut stale = Vec::new();
    for scenario in scenarios {
        let args: Vec<String> = std::fs::read_to_string(scenario.join("args"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        let out = render(&scenario.join("input"), &args);
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        // Exit status and stderr agree: failure exactly when some Gateway is refused.
        assert_eq!(
            out.status.success(),
            stderr.is_empty(),
            "{}: exit {:?}, stderr {stderr}",
            scenario.display(),
            out.status
        );
        // What is printed is YAML a Kubernetes client reads: documents with kind and name.
        for document in serde_norway::Deserializer::from_str(&stdout) {
            let value: serde_json::Value = serde::Deserialize::deserialize(document).unwrap();
            assert!(
                value["kind"] == "Deployment" || value["kind"] == "Service",
                "{value}"
            );
            assert!(value["metadata"]["name"].is_string(), "{value}");
        }
        check_golden(&scenario.join("expected.yaml"), &stdout, &mut stale);
        check_golden(&scenario.join("expected.stderr"), &stderr, &mut stale);
    }
    assert!(
        stale.is_empty(),
        "run `UPDATE_GOLDEN=1 cargo test -p agentmesh-controller --test render`\n{}",
        stale.join("\n")
    );
}

#[test]
fn render_rejects_an_unknown_service_type() {
    let dir = tempfile::tempdir().unwrap();
    let out = render(
        dir.path(),
        &["--gateway-service-type=ExternalName".to_string()],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--gateway-service-type") && stderr.contains("ExternalName"),
        "{stderr}"
    );
}

/// The README's in-cluster gateway example ("Kubernetes: Helm chart…" → "Gateway
/// mode"), with what the cluster already holds (the chart's GatewayClass, the agent's
/// Service), is accepted with every reference resolved, and `render` deploys its proxy.
#[test]
fn readme_kubernetes_gateway_example_is_accepted_and_deployed() {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let start = readme
        .find("### Gateway mode\n")
        .expect("README has a Gateway mode section under Kubernetes");
    let section = &readme[start..];
    let section = &section[..section.find("\n### ").unwrap()];
    let example = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the Gateway mode section has a YAML example");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), example).unwrap();
    // What the cluster holds before the example is applied: the chart's GatewayClass and
    // the agent's Service (the API server gives it a cluster IP).
    std::fs::write(
        dir.path().join("cluster.yaml"),
        "apiVersion: gateway.networking.k8s.io/v1\n\
         kind: GatewayClass\n\
         metadata: { name: agentmesh }\n\
         spec: { controllerName: agentmesh.dev/gateway-controller }\n\
         ---\n\
         apiVersion: v1\n\
         kind: Service\n\
         metadata: { name: research-agent, namespace: agents }\n\
         spec:\n  clusterIP: 10.96.0.20\n  ports: [{ name: http, port: 8080 }]\n",
    )
    .unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_agentmesh-controller"))
        .args(["status", "-f"])
        .arg(dir.path())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    let status: serde_json::Value = serde_json::from_str(&printed).unwrap();
    let object = |name: &str| -> &serde_json::Value {
        status
            .as_object()
            .unwrap()
            .iter()
            .find(|(k, _)| k.contains(name))
            .unwrap_or_else(|| panic!("no status for {name}: {printed}"))
            .1
    };
    let is_true = |conditions: &serde_json::Value, wanted: &str| {
        conditions.as_array().is_some_and(|all| {
            all.iter()
                .any(|c| c["type"] == wanted && c["status"] == "True")
        })
    };
    let gateway = object("agents/agents-gw");
    for wanted in ["Accepted", "Programmed"] {
        assert!(
            is_true(&gateway["conditions"], wanted),
            "Gateway {wanted}: {printed}"
        );
    }
    let parents = object("agents/research")["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 1, "{printed}");
    assert_eq!(parents[0]["parent"], "agents/agents-gw", "{printed}");
    for wanted in ["Accepted", "ResolvedRefs"] {
        assert!(
            is_true(&parents[0]["conditions"], wanted),
            "HTTPRoute {wanted}: {printed}"
        );
    }

    let out = render(dir.path(), &[]);
    let deployed = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        deployed.contains("name: agents-gw-agentmesh") && deployed.contains("kind: Deployment"),
        "{deployed}"
    );
    assert!(
        deployed.contains("--gateway=agents-gw.agents"),
        "{deployed}"
    );
}
