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
