//! `agentmesh-injector inject`: injects the pods and pod templates of a multi-document
//! YAML file (Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs,
//! and `List`s of them) with the webhook's own code, and passes other kinds through.
//!
//! Errors name the document (its position, kind and name) and the field. The output is
//! the documents as YAML, keys sorted (comments in the input are not kept).

use serde::Deserialize;
use serde_json::Value;

use crate::inject::{Decision, InjectError, PodContext};
use crate::review::Injector;

/// Why a file cannot be injected.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A document is not YAML (or not a mapping with string keys).
    #[error("document {index}: not valid YAML: {message}")]
    Yaml {
        /// The document's position, from 1.
        index: usize,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A document's field is missing or of the wrong type.
    #[error("document {index} ({what}): {field}: {message}")]
    Field {
        /// The document's position, from 1.
        index: usize,
        /// `Kind name`.
        what: String,
        /// The field, like `spec.template`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The pod or template cannot be injected (a bad annotation, say).
    #[error("document {index} ({what}){}: {source}", in_field(.field))]
    Inject {
        /// The document's position, from 1.
        index: usize,
        /// `Kind name`.
        what: String,
        /// Where the pod template is, like `spec.template`; empty for a Pod.
        field: String,
        /// Why.
        source: InjectError,
    },
}

/// The result of injecting a file.
#[derive(Debug, Default)]
pub struct Injected {
    /// The documents, as YAML separated by `---`.
    pub yaml: String,
    /// One line per pod or template seen: injected, skipped (why), warnings.
    pub notes: Vec<String>,
}

fn in_field(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!(", {field}")
    }
}

/// Where a kind keeps its pod template (`[]` for a Pod itself).
pub fn pod_path(api_version: &str, kind: &str) -> Option<&'static [&'static str]> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    match (group, kind) {
        ("", "Pod") => Some(&[]),
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch", "Job")
        | ("", "ReplicationController") => Some(&["spec", "template"]),
        ("batch", "CronJob") => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// Injects every pod and pod template in `input`. `namespace` applies to documents
/// without one (namespace labels are unknown here: every namespace counts as opted in,
/// except the excluded ones).
pub fn inject_yaml(
    input: &str,
    injector: &Injector,
    namespace: &str,
) -> Result<Injected, ManifestError> {
    let mut out = Injected::default();
    let mut documents = Vec::new();
    for (i, document) in serde_norway::Deserializer::from_str(input).enumerate() {
        let index = i + 1;
        let value = Value::deserialize(document).map_err(|e| ManifestError::Yaml {
            index,
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue; // an empty document, like a trailing `---`
        }
        documents.push(inject_document(
            value,
            index,
            injector,
            namespace,
            &mut out.notes,
        )?);
    }
    for (i, document) in documents.iter().enumerate() {
        if i > 0 {
            out.yaml.push_str("---\n");
        }
        let yaml = serde_norway::to_string(document).map_err(|e| ManifestError::Yaml {
            index: i + 1,
            message: e.to_string(),
        })?;
        out.yaml.push_str(&yaml);
    }
    Ok(out)
}

fn inject_document(
    mut value: Value,
    index: usize,
    injector: &Injector,
    namespace: &str,
    notes: &mut Vec<String>,
) -> Result<Value, ManifestError> {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_string();
    let Some(object) = value.as_object() else {
        return Err(ManifestError::Field {
            index,
            what: "?".into(),
            field: "(document)".into(),
            message: "expected a Kubernetes object (a mapping)".into(),
        });
    };
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let api_version = text(&value, "apiVersion");
    let metadata = value.get("metadata").cloned().unwrap_or(Value::Null);
    let name = match text(&metadata, "name") {
        n if n.is_empty() => text(&metadata, "generateName"),
        n => n,
    };
    let what = format!("{kind} {name}").trim().to_string();
    let field_error = |field: &str, message: &str| ManifestError::Field {
        index,
        what: what.clone(),
        field: field.into(),
        message: message.into(),
    };
    if kind.is_empty() {
        return Err(field_error("kind", "missing"));
    }
    if kind == "List" {
        let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) else {
            return Err(field_error("items", "a List needs a list of items"));
        };
        for item in items.iter_mut() {
            *item = inject_document(item.take(), index, injector, namespace, notes)?;
        }
        return Ok(value);
    }
    let Some(path) = pod_path(&api_version, &kind) else {
        return Ok(value); // not a workload: unchanged
    };
    let field = path.join(".");
    let ns = match text(&metadata, "namespace") {
        n if n.is_empty() => namespace.to_string(),
        n => n,
    };
    let mut pod = &mut value;
    for (depth, key) in path.iter().enumerate() {
        pod = match pod.get_mut(*key) {
            Some(next) if next.is_object() => next,
            _ => {
                return Err(field_error(
                    &path[..=depth].join("."),
                    "missing or not a mapping",
                ));
            }
        };
    }
    let context = PodContext {
        namespace: ns,
        namespace_labels: None,
    };
    match injector.inject(pod, &context) {
        Ok(Decision::Inject(injection)) => {
            notes.push(format!(
                "document {index} ({what}): injected ({} sidecar)",
                injection.sidecar.as_str()
            ));
            for warning in &injection.warnings {
                notes.push(format!("document {index} ({what}): warning: {warning}"));
            }
            *pod = injection.pod;
        }
        Ok(Decision::Skip(reason)) => {
            notes.push(format!("document {index} ({what}): {reason}"));
        }
        Err(source) => {
            return Err(ManifestError::Inject {
                index,
                what,
                field,
                source,
            });
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    fn injector() -> Injector {
        Injector::new(Settings::for_controller_namespace("agentmesh-system"))
    }

    #[test]
    fn workloads_are_injected_and_other_kinds_pass_through() {
        let input = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: c}
data: {a: b}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: app:1}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: '@daily'
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: job, image: job:1}]
---
";
        let out = inject_yaml(input, &injector(), "agents").expect("injects");
        let docs: Vec<Value> = serde_norway::Deserializer::from_str(&out.yaml)
            .map(|d| Value::deserialize(d).expect("yaml"))
            .collect();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0]["data"]["a"], "b");
        let init = |v: &Value| v["initContainers"][1]["name"].clone();
        assert_eq!(
            init(&docs[1]["spec"]["template"]["spec"]),
            "agentmesh-proxy"
        );
        assert_eq!(
            init(&docs[2]["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
            "agentmesh-proxy"
        );
        assert_eq!(out.notes.len(), 2, "{:?}", out.notes);
    }

    #[test]
    fn errors_name_the_document_and_field() {
        let input = "kind: Pod\napiVersion: v1\nmetadata: {name: a}\nspec: {containers: []}\n---\n\
                     kind: Deployment\napiVersion: apps/v1\nmetadata: {name: web}\nspec: {}\n";
        let e = inject_yaml(input, &injector(), "agents").expect_err("no template");
        assert_eq!(
            e.to_string(),
            "document 2 (Deployment web): spec.template: missing or not a mapping"
        );

        let input = "kind: Pod\napiVersion: v1\nmetadata:\n  name: a\n  annotations: {agentmesh.dev/exclude-outbound-ports: '0'}\nspec: {containers: [{name: app}]}\n";
        let e = inject_yaml(input, &injector(), "agents").expect_err("bad annotation");
        assert!(
            e.to_string()
                .starts_with("document 1 (Pod a): annotation agentmesh.dev/exclude-outbound-ports"),
            "{e}"
        );

        let e = inject_yaml("a: [", &injector(), "agents").expect_err("bad yaml");
        assert!(
            e.to_string().starts_with("document 1: not valid YAML"),
            "{e}"
        );
    }
}
