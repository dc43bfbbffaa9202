//! Running the real tools: `helm template` and `kubernetes-validate`, and reading what
//! they print.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::Value;

use crate::foreign::{FOREIGN_KINDS, check_foreign};

/// The namespace the chart is rendered into.
pub const NAMESPACE: &str = "agentmesh-system";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn chart_dir() -> PathBuf {
    workspace().join("charts/agentmesh")
}

/// A tool installed by `scripts/install-chart-deps.sh`; missing is a failure.
fn tool(relative: &str) -> PathBuf {
    let dir = std::env::var_os("AGENTMESH_TOOLS_DIR")
        .map_or_else(|| workspace().join("target/tools"), PathBuf::from);
    let path = dir.join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/install-chart-deps.sh (scripts/test.sh runs it)",
        path.display()
    );
    path
}

pub fn helm(args: &[&str]) -> Output {
    Command::new(tool("bin/helm"))
        .args(args)
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("agentmesh-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("agentmesh-helm-config"),
        )
        .output()
        .unwrap()
}

/// A rendering of the chart.
pub struct Rendered {
    /// What `helm template` printed.
    pub text: String,
    /// Its objects, CRDs included.
    pub objects: Vec<Value>,
}

impl Rendered {
    /// The objects of `kind`.
    pub fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    /// The one object of `kind`.
    pub fn one(&self, kind: &str) -> &Value {
        let found = self.all(kind);
        assert_eq!(found.len(), 1, "expected one {kind}, got {}", found.len());
        found[0]
    }

    /// The controller's container.
    pub fn controller(&self) -> &Value {
        &self.one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    }

    /// The controller's arguments.
    pub fn args(&self) -> Vec<&str> {
        self.controller()["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect()
    }

    /// The value of `--flag=value` in the controller's arguments.
    pub fn flag(&self, flag: &str) -> Option<&str> {
        self.args()
            .into_iter()
            .find_map(|a| a.strip_prefix(flag)?.strip_prefix('='))
    }

    /// The webhook of the MutatingWebhookConfiguration.
    pub fn webhook(&self) -> &Value {
        let webhooks = self.one("MutatingWebhookConfiguration")["webhooks"]
            .as_array()
            .unwrap();
        assert_eq!(webhooks.len(), 1);
        &webhooks[0]
    }
}

/// `helm template` with `sets`, or helm's error output.
pub fn try_render(sets: &[&str]) -> Result<Rendered, String> {
    try_render_for(sets, None)
}

/// [`render`] for a cluster of Kubernetes `version` (`helm template --kube-version`).
pub fn render_for_kube(sets: &[&str], version: &str) -> Rendered {
    try_render_for(sets, Some(version)).unwrap_or_else(|e| {
        panic!("helm template --kube-version {version} --set {sets:?} failed:\n{e}")
    })
}

fn try_render_for(sets: &[&str], kube_version: Option<&str>) -> Result<Rendered, String> {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        "agentmesh",
        chart.to_str().unwrap(),
        "--namespace",
        NAMESPACE,
        "--include-crds",
    ];
    if let Some(version) = kube_version {
        args.extend(["--kube-version", version]);
    }
    for set in sets {
        args.extend(["--set", set]);
    }
    let out = helm(&args);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    let objects = parse_yaml_stream(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    Ok(Rendered { text, objects })
}

pub fn render(sets: &[&str]) -> Rendered {
    try_render(sets).unwrap_or_else(|e| panic!("helm template --set {sets:?} failed:\n{e}"))
}

/// The documents of a YAML stream. Going through serde_norway's own `Value` makes a
/// duplicate key an error (a template that writes a label twice), which the API server's
/// and kubernetes-validate's parsers would let through, the last one winning.
pub fn parse_yaml_stream(text: &str) -> Result<Vec<Value>, String> {
    let mut objects = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let value = serde_norway::Value::deserialize(document)
            .map_err(|e| format!("the rendered YAML does not parse: {e}"))?;
        if value.is_null() {
            continue;
        }
        objects.push(serde_json::to_value(value).map_err(|e| e.to_string())?);
    }
    Ok(objects)
}

/// Validates every object of `rendered` with kubernetes-validate against Kubernetes
/// 1.35, strictly (an unknown field is an error), and the foreign kinds with
/// [`check_foreign`]. Every line the validator prints must be a pass or the warning for
/// a foreign kind, so a core object it could not find a schema for (a wrong apiVersion)
/// is a failure, not a warning.
pub fn validate(option: &str, rendered: &Rendered) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, &rendered.text).unwrap();
    let out = Command::new(tool("venv/bin/kubernetes-validate"))
        .args(["-k", "1.35.0", "--strict"])
        .arg(&file)
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{option}: kubernetes-validate failed:\n{printed}"
    );
    let mut passed = 0;
    for line in printed.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with("INFO ") && line.contains(" passed for resource ") {
            passed += 1;
        } else if !FOREIGN_KINDS.iter().any(|k| {
            line.starts_with("WARN ")
                && line.contains(&format!(
                    "Couldn't find schema for kind {k} with api version"
                ))
        }) {
            panic!("{option}: kubernetes-validate: {line}\n{printed}");
        }
    }
    let mut native = 0;
    for object in &rendered.objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        if FOREIGN_KINDS.contains(&kind) {
            check_foreign(option, object);
        } else {
            native += 1;
        }
    }
    assert_eq!(
        passed, native,
        "{option}: kubernetes-validate passed {passed} of {native} objects:\n{printed}"
    );
}
