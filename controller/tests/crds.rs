//! The CRDs checked in under `charts/agentmesh/crds/` (where Helm installs them from)
//! are what `agentmesh-controller crds` prints from the Rust types. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p agentmesh-controller --test crds`.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

fn printed() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_agentmesh-controller"))
        .arg("crds")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn checked_in_crds_match_the_rust_types() {
    let golden =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/agentmesh/crds/agentmesh.yaml");
    let printed = printed();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &printed).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_default();
    assert!(
        printed == expected,
        "{} is stale: run `UPDATE_GOLDEN=1 cargo test -p agentmesh-controller --test crds`",
        golden.display()
    );
}

#[test]
fn crds_are_namespaced_v1alpha1_of_group_agentmesh_dev_with_a_status_subresource() {
    use serde::Deserialize;
    let text = printed();
    let mut kinds = Vec::new();
    for document in serde_norway::Deserializer::from_str(&text) {
        let crd = CustomResourceDefinition::deserialize(document).unwrap();
        assert_eq!(crd.spec.group, "agentmesh.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let schema = version
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap();
        // A structural schema: the spec is typed, not `x-kubernetes-preserve-unknown-fields`,
        // so the API server itself prunes nothing silently and rejects wrong types.
        let spec = &schema.properties.as_ref().unwrap()["spec"];
        assert_eq!(spec.type_.as_deref(), Some("object"));
        assert!(spec.x_kubernetes_preserve_unknown_fields.is_none());
        kinds.push(crd.spec.names.kind);
    }
    assert_eq!(kinds, ["AgentBackend", "AgentPolicy"]);
}

/// The README's AgentBackend and AgentPolicy examples are accepted as written:
/// `agentmesh-controller status` on a folder holding them reports no False condition.
#[test]
fn readme_examples_of_agentmesh_kinds_are_accepted() {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut examples = 0;
    for (i, block) in readme.split("```yaml\n").skip(1).enumerate() {
        let block = block.split("```").next().unwrap();
        if block.contains("apiVersion: agentmesh.dev/") {
            std::fs::write(dir.path().join(format!("{i}.yaml")), block).unwrap();
            examples += 1;
        }
    }
    assert!(examples >= 2, "the README has no agentmesh.dev examples");
    let out = Command::new(env!("CARGO_BIN_EXE_agentmesh-controller"))
        .args(["status", "-f"])
        .arg(dir.path())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    let status: serde_json::Value = serde_json::from_str(&printed).unwrap();
    let objects = status.as_object().unwrap();
    assert_eq!(objects.len(), 3, "{printed}");
    for (object, s) in objects {
        let accepted = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Accepted" && c["status"] == "True");
        assert!(accepted, "{object}: {printed}");
    }
}
