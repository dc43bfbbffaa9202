//! The `agentmesh-injector` binary as a user runs it: `inject -f` on a file and on stdin,
//! clear errors with exit code 1, `selectors` as JSON, and `--help` for every flag.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde::Deserialize;
use serde_json::Value;

fn injector(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentmesh-injector"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    if let Some(text) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        pipe.write_all(text.as_bytes()).expect("stdin");
    }
    child.wait_with_output().expect("exits")
}

fn documents(yaml: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(yaml);
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("YAML output"))
        .collect()
}

const MANIFESTS: &str = "\
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: memory, namespace: agents}
spec:
  serviceName: memory
  selector: {matchLabels: {app: memory}}
  template:
    metadata:
      labels: {app: memory}
      annotations: {agentmesh.dev/native-sidecar: 'false'}
    spec:
      containers: [{name: memory, image: example.com/memory:1}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: node-tool}
spec:
  selector: {matchLabels: {app: node-tool}}
  template:
    metadata: {labels: {app: node-tool}}
    spec:
      hostNetwork: true
      containers: [{name: tool, image: example.com/tool:1}]
---
apiVersion: v1
kind: Secret
metadata: {name: s}
stringData: {k: v}
";

#[test]
fn inject_file_injects_templates_and_reports_each_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.yaml");
    std::fs::write(&path, MANIFESTS).expect("write");
    let out = injector(
        &[
            "inject",
            "-f",
            path.to_str().expect("utf-8"),
            "--proxy-image",
            "registry.local/agentmesh-proxy:dev",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = documents(&out.stdout);
    assert_eq!(docs.len(), 3);
    let spec = &docs[0]["spec"]["template"]["spec"];
    assert_eq!(spec["containers"][0]["name"], "agentmesh-proxy");
    assert_eq!(
        spec["containers"][0]["image"],
        "registry.local/agentmesh-proxy:dev"
    );
    assert_eq!(spec["containers"][1]["name"], "memory");
    assert_eq!(spec["initContainers"][0]["name"], "agentmesh-init");
    assert!(docs[1]["spec"]["template"]["spec"]["initContainers"].is_null());
    assert_eq!(docs[2]["stringData"]["k"], "v");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("document 1 (StatefulSet memory): injected (classic sidecar)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("document 2 (DaemonSet node-tool): agentmesh: sidecar not injected: the pod uses hostNetwork"),
        "{stderr}"
    );

    // Injecting the output again changes nothing.
    let again = injector(
        &["inject", "-f", "-"],
        Some(&String::from_utf8_lossy(&out.stdout)),
    );
    assert!(again.status.success());
    assert_eq!(documents(&again.stdout), docs);
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    let out = injector(
        &["inject", "-f", "-"],
        Some(
            "kind: Pod\napiVersion: v1\nmetadata: {name: p, annotations: {agentmesh.dev/exclude-inbound-ports: http}}\nspec: {containers: [{name: a}]}\n",
        ),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stdin: document 1 (Pod p): annotation agentmesh.dev/exclude-inbound-ports: invalid value 'http'"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    let out = injector(
        &["inject", "-f", "-"],
        Some(
            "kind: CronJob\napiVersion: batch/v1\nmetadata: {name: c}\nspec: {jobTemplate: {spec: {}}}\n",
        ),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "document 1 (CronJob c): spec.jobTemplate.spec.template: missing or not a mapping"
        ),
        "{stderr}"
    );

    let out = injector(&["inject", "-f", "/nonexistent/pods.yaml"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/pods.yaml"));
}

#[test]
fn selectors_print_the_webhook_configuration_selectors() {
    let out = injector(&["selectors", "--excluded-namespaces", "legacy"], None);
    assert!(out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        json["excludedNamespaces"],
        serde_json::json!(["kube-system", "kube-public", "kube-node-lease", "legacy"])
    );
    assert_eq!(
        json["objectSelector"]["matchExpressions"][0]["values"][0],
        "disabled"
    );
}

#[test]
fn help_documents_every_flag() {
    for sub in ["inject", "serve", "selectors"] {
        let out = injector(&[sub, "--help"], None);
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        // In long help, every flag line is followed by its description.
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim_start().starts_with('-') {
                let next = lines.get(i + 1).map_or("", |l| l.trim());
                assert!(
                    !next.is_empty() && !next.starts_with('-'),
                    "{sub}: undocumented flag: {line}"
                );
            }
        }
        for flag in ["--proxy-image", "--native-sidecar", "--sidecar-xds-address"] {
            assert!(help.contains(flag), "{sub} --help lacks {flag}");
        }
    }
}
