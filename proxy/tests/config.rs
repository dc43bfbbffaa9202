//! Config conversion goldens, the examples, and `validate`.
//!
//! Goldens live in `tests/golden/config/`: for `NAME.yaml`, the flattened resources are
//! compared with `NAME.resources.json`; for `invalid-*.yaml`, the error message with
//! `NAME.error.txt`. Regenerate with `UPDATE_GOLDEN=1 cargo test -p agentmesh-proxy --test config`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

use agentmesh_proxy::config::{self, file};
use agentmesh_proxy::telemetry::Metrics;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/config")
}

fn check_golden(path: &Path, actual: &str) -> Option<String> {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).unwrap();
        return None;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    (expected != actual).then(|| {
        format!("{} is stale or wrong (UPDATE_GOLDEN=1 to regenerate)\n--- expected\n{expected}\n--- actual\n{actual}", path.display())
    })
}

fn resources_json(r: &file::Resources) -> String {
    let doc = serde_json::json!({
        "settings": r.settings,
        "binds": r.binds,
        "listeners": r.listeners,
        "routes": r.routes,
        "backends": r.backends,
        "policies": r.policies,
    });
    serde_json::to_string_pretty(&doc).unwrap() + "\n"
}

fn ctx() -> config::CompileContext {
    agentmesh_proxy::app::compile_context(&Metrics::new())
}

#[tokio::test]
async fn config_goldens_match() {
    let mut failures = Vec::new();
    let mut seen = 0;
    for entry in std::fs::read_dir(golden_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        seen += 1;
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let (golden, actual) = if stem.starts_with("invalid-") {
            let err = file::parse(&text, false)
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    config::compile(file::flatten(c), &ctx())
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
                .expect_err("an invalid-* golden must fail");
            (golden_dir().join(format!("{stem}.error.txt")), err + "\n")
        } else {
            let parsed = file::parse(&text, false).unwrap_or_else(|e| panic!("{stem}: {e}"));
            let resources = file::flatten(parsed);
            config::compile(resources.clone(), &ctx()).unwrap_or_else(|e| panic!("{stem}: {e}"));
            (
                golden_dir().join(format!("{stem}.resources.json")),
                resources_json(&resources),
            )
        };
        failures.extend(check_golden(&golden, &actual));
    }
    assert!(
        seen >= 5,
        "expected the golden configs in {}",
        golden_dir().display()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test]
async fn every_example_is_valid() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "yaml" | "yml" | "json") {
            continue;
        }
        config::load_file(&path, &ctx()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        checked.push(path.file_name().unwrap().to_string_lossy().to_string());
    }
    assert!(checked.len() >= 6, "examples checked: {checked:?}");
}

#[tokio::test]
async fn flatten_then_nest_gives_back_the_file_view() {
    let text = std::fs::read_to_string(golden_dir().join("nested.yaml")).unwrap();
    let parsed = file::parse(&text, false).unwrap();
    let nested = file::nest(&file::flatten(parsed.clone()));
    // Keys and parent references are filled in; everything else round-trips.
    let again = file::nest(&file::flatten(nested.clone()));
    assert_eq!(nested, again);
    assert_eq!(
        nested.binds[0].listeners[0].routes[0].backends,
        parsed.binds[0].listeners[0].routes[0].backends
    );
    assert_eq!(
        nested.policies.len(),
        1,
        "only named policies stay top-level"
    );
}

#[test]
fn json_and_yaml_files_are_the_same_config() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let yaml = file::load(&dir.join("quickstart.yaml")).unwrap();
    let json = file::load(&dir.join("quickstart.json")).unwrap();
    assert_eq!(yaml.backends, json.backends);
    assert_eq!(yaml.binds[0].port, json.binds[0].port);
}

fn validate(path: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agentmesh-proxy"))
        .arg("validate")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn validate_accepts_a_good_file_and_names_resource_and_field_of_a_bad_one() {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let (ok, out) = validate(&examples.join("routing.yaml"));
    assert!(ok, "{out}");
    let (ok, out) = validate(&golden_dir().join("invalid-references.yaml"));
    assert!(!ok);
    assert!(
        out.contains(
            r#"route "main/http/r" field backends[0].backend: no backend is named "missing""#
        ),
        "{out}"
    );
    let (ok, out) = validate(&golden_dir().join("invalid-unknown-field.yaml"));
    assert!(!ok);
    assert!(
        out.contains("binds[0].listeners[0].routes[0].matches[0].path") && out.contains("prefx"),
        "{out}"
    );
    let (ok, out) = validate(Path::new("/nonexistent/agentmesh.yaml"));
    assert!(!ok);
    assert!(
        out.contains("cannot read config file /nonexistent/agentmesh.yaml"),
        "{out}"
    );
}
