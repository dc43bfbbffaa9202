//! The Helm chart `charts/agentmesh`, rendered by the real `helm` and checked by
//! `kubernetes-validate --strict` against Kubernetes 1.35's schemas, for the default
//! values and for each documented option; and what the chart says, checked against the
//! code it deploys: the controller's flags, the kinds it watches and writes (RBAC), its
//! Lease, the GatewayClass controller name, the CRDs, and the injector's selectors.
//!
//! helm and kubernetes-validate come from `scripts/install-chart-deps.sh` (which
//! `scripts/test.sh` runs) into `target/tools/`; a missing tool fails the test, naming
//! the script.
//!
//! - `helm.rs`: running helm and kubernetes-validate; `foreign.rs`: the GatewayClass and
//!   cert-manager objects Kubernetes' schemas do not cover.
//! - here: the chart as a whole (lint, every option validated, values documented, CRDs)
//!   and the controller's Deployment; `rbac.rs`; `webhook.rs` (its selectors against the
//!   injector's own, from the `agentmesh-injector` library).
#![allow(clippy::unwrap_used)]

mod foreign;
mod helm;
mod rbac;
mod webhook;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::{Value, json};

use helm::{
    Rendered, chart_dir, helm, parse_yaml_stream, render, render_for_kube, try_render, validate,
};

/// Every documented option of values.yaml, as `--set` arguments, with its name.
const OPTIONS: &[(&str, &[&str])] = &[
    ("default values", &[]),
    (
        "cert-manager with a self-signed Issuer",
        &["webhook.certificate.source=cert-manager"],
    ),
    (
        "cert-manager with the user's ClusterIssuer",
        &[
            "webhook.certificate.source=cert-manager",
            "webhook.certificate.certManager.issuerRef.kind=ClusterIssuer",
            "webhook.certificate.certManager.issuerRef.name=corp-ca",
            "webhook.certificate.certManager.issuerRef.group=cert-manager.io",
        ],
    ),
    ("failurePolicy Ignore", &["webhook.failurePolicy=Ignore"]),
    ("classic sidecars", &["injection.nativeSidecar=false"]),
    (
        "image overrides",
        &[
            "image.registry=registry.example.com/mirror",
            "image.tag=1.2.3",
            "image.pullPolicy=Always",
            "image.pullSecrets={regcred}",
            "controller.image.repository=registry.example.com/custom/controller",
            "proxy.image.tag=1.2.4-debug",
        ],
    ),
    ("webhook disabled", &["webhook.enabled=false"]),
    (
        "the operator's mesh CA root",
        &["meshCA.generate=false", "meshCA.secretName=corp-mesh-ca"],
    ),
    ("no mesh CA", &["meshCA.enabled=false"]),
    ("no GatewayClass", &["gatewayClass.enabled=false"]),
    (
        "one replica without a disruption budget",
        &[
            "controller.replicas=1",
            "controller.podDisruptionBudget.enabled=false",
        ],
    ),
    (
        "scheduling, IPv6, extra namespaces and arguments",
        &[
            "controller.xds.bindAddress=[::]",
            "controller.nodeSelector.kubernetes\\.io/os=linux",
            "controller.tolerations[0].key=dedicated",
            "controller.tolerations[0].operator=Exists",
            "controller.priorityClassName=system-cluster-critical",
            "controller.podAnnotations.example\\.com/team=platform",
            "controller.podLabels.team=platform",
            "controller.extraArgs={--leader-election-namespace=agentmesh-leases}",
            "controller.logLevel=debug",
            "webhook.excludedNamespaces={batch,legacy}",
            "webhook.timeoutSeconds=5",
            "gateway.serviceType=ClusterIP",
            "gatewayClass.name=agents",
        ],
    ),
];

// ---------------------------------------------------------------------------------
// The chart as a whole.

#[test]
fn chart_lints_clean() {
    let out = helm(&["lint", "--strict", chart_dir().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "helm lint --strict:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_documented_option_renders_objects_kubernetes_1_35_accepts() {
    for (option, sets) in OPTIONS {
        let rendered = render(sets);
        validate(option, &rendered);
        // Whatever the option, our pods stay ours and locked down.
        controller_is_locked_down(option, &rendered);
        everything_is_labelled_part_of_agentmesh(option, &rendered);
    }
}

fn controller_is_locked_down(option: &str, rendered: &Rendered) {
    let pod = &rendered.one("Deployment")["spec"]["template"];
    assert_eq!(
        pod["metadata"]["labels"]["agentmesh.dev/inject"], "disabled",
        "{option}: the webhook would inject the controller"
    );
    let spec = &pod["spec"];
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{option}");
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let security = &rendered.controller()["securityContext"];
    assert_eq!(security["runAsNonRoot"], true, "{option}");
    assert_eq!(security["readOnlyRootFilesystem"], true, "{option}");
    assert_eq!(security["allowPrivilegeEscalation"], false, "{option}");
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{option}");
    assert!(security["capabilities"].get("add").is_none(), "{option}");
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
}

fn everything_is_labelled_part_of_agentmesh(option: &str, rendered: &Rendered) {
    for object in &rendered.objects {
        // CRDs are printed by the controller, not templated.
        if object["kind"] == "CustomResourceDefinition" {
            continue;
        }
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/part-of"], "agentmesh",
            "{option}: {} {} lacks the part-of label",
            object["kind"], object["metadata"]["name"]
        );
    }
}

#[test]
fn values_schema_rejects_unknown_and_mistyped_values() {
    for (set, complaint) in [
        (
            "controller.replica=3",
            "additional properties 'replica' not allowed",
        ),
        ("controller.replicas=two", "/controller/replicas"),
        ("webhook.failurePolicy=Never", "/webhook/failurePolicy"),
        ("webhook.timeoutSeconds=31", "/webhook/timeoutSeconds"),
        (
            "webhook.certificate.source=vault",
            "/webhook/certificate/source",
        ),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        (
            "controller.leaderElection.leaseDuration=15",
            "/controller/leaderElection",
        ),
        ("gateway.serviceType=External", "/gateway/serviceType"),
        ("injection.nativeSidecar=maybe", "/injection/nativeSidecar"),
        ("unknown=1", "additional properties 'unknown' not allowed"),
    ] {
        match try_render(&[set]) {
            Ok(_) => panic!("--set {set} was accepted"),
            Err(e) => assert!(e.contains(complaint), "--set {set}: {e}"),
        }
    }
}

/// The values of values.schema.json (paths like `controller.xds.port`), each with its
/// description; `global` (Helm's own) is left out.
fn schema_leaves() -> BTreeMap<String, String> {
    fn walk(prefix: &str, schema: &Value, out: &mut BTreeMap<String, String>) {
        for (name, property) in schema["properties"].as_object().unwrap() {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            if path == "global" {
                continue;
            }
            // A section (every property required, nothing else allowed) holds values; an
            // object with optional properties (an issuerRef) is one value.
            let properties = property["properties"].as_object().map_or(0, |p| p.len());
            let required = property["required"].as_array().map_or(0, |r| r.len());
            if properties > 0 && required == properties && property["additionalProperties"] == false
            {
                walk(&path, property, out);
            } else {
                let description = property["description"].as_str().unwrap_or_default();
                out.insert(path, description.to_string());
            }
        }
    }
    let text = std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    let mut out = BTreeMap::new();
    walk("", &schema, &mut out);
    out
}

#[test]
fn every_value_is_documented_in_values_yaml_its_schema_and_the_readme() {
    let leaves = schema_leaves();
    for (path, description) in &leaves {
        assert!(
            !description.is_empty(),
            "values.schema.json: {path} has no description"
        );
    }
    // values.yaml: every leaf has a default and a comment right above it.
    let values = std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut in_values = BTreeSet::new();
    let mut previous = "";
    for line in values.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let key = trimmed
            .split_once(':')
            .map(|(k, _)| k)
            .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric()));
        if let (Some(key), false) = (key, trimmed.starts_with('#')) {
            stack.retain(|(i, _)| *i < indent);
            stack.push((indent, key.to_string()));
            let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
            let inside_a_leaf = (1..path.len()).any(|n| leaves.contains_key(&path[..n].join(".")));
            let path = path.join(".");
            if !inside_a_leaf && leaves.contains_key(&path) {
                assert!(
                    previous.trim_start().starts_with('#'),
                    "values.yaml: {path} has no comment above it"
                );
                in_values.insert(path);
            }
        }
        if !trimmed.is_empty() {
            previous = line;
        }
    }
    let in_schema: BTreeSet<String> = leaves.keys().cloned().collect();
    assert_eq!(
        in_values, in_schema,
        "values.yaml and values.schema.json differ"
    );
    // The README's values table: one row per value.
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    let in_readme: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| {
            l.strip_prefix("| `")?
                .split_once('`')
                .map(|(p, _)| p.to_string())
        })
        .collect();
    assert_eq!(
        in_readme, in_schema,
        "the README's values table and values.schema.json differ"
    );
}

#[test]
fn chart_crds_are_the_ones_the_controller_prints() {
    let out = Command::new(env!("CARGO_BIN_EXE_agentmesh-controller"))
        .arg("crds")
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = parse_yaml_stream(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let rendered = render(&[]);
    let crds: Vec<Value> = rendered
        .all("CustomResourceDefinition")
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(crds, printed);
}

// ---------------------------------------------------------------------------------
// The controller.

#[test]
fn controller_runs_two_replicas_with_probes_and_a_disruption_budget() {
    let rendered = render(&[]);
    let deployment = rendered.one("Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (k, v) in selector.as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "the Deployment does not select its pods");
    }
    let pdb = rendered.one("PodDisruptionBudget");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], selector);
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let container = rendered.controller();
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        assert_eq!(container[probe]["tcpSocket"]["port"], "grpc-xds", "{probe}");
    }
    // Kubernetes mode, every replica serving xDS on the contract port to the cluster.
    let args = rendered.args();
    assert_eq!(args[..2], ["serve", "--kubernetes"]);
    assert_eq!(rendered.flag("--xds-addr"), Some("0.0.0.0:16010"));
    assert_eq!(
        rendered.flag("--gateway-xds-address"),
        Some("http://agentmesh-controller.agentmesh-system.svc:16010")
    );
    // Leader election reads its namespace and identity from the downward API.
    let env: BTreeMap<&str, &str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let path = e["valueFrom"]["fieldRef"]["fieldPath"].as_str().unwrap();
            (e["name"].as_str().unwrap(), path)
        })
        .collect();
    assert_eq!(env["POD_NAMESPACE"], "metadata.namespace");
    assert_eq!(env["POD_NAME"], "metadata.name");
    let service = rendered.one("Service");
    assert_eq!(service["metadata"]["name"], "agentmesh-controller");
    let port = |name: &str| {
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no Service port {name}"))
    };
    assert_eq!(port("grpc-xds")["port"], 16010);
    assert_eq!(port("https-webhook")["port"], 443);
    let container_port = |name: &str| {
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["containerPort"].clone())
    };
    assert_eq!(container_port("grpc-xds"), Some(json!(16010)));
    assert_eq!(container_port("https-webhook"), Some(json!(16443)));
    for (k, v) in selector.as_object().unwrap() {
        assert_eq!(&service["spec"]["selector"][k], v);
    }
}

#[test]
fn one_replica_renders_without_a_disruption_budget_when_asked() {
    let rendered = render(&[
        "controller.replicas=1",
        "controller.podDisruptionBudget.enabled=false",
    ]);
    assert_eq!(rendered.one("Deployment")["spec"]["replicas"], 1);
    assert!(rendered.all("PodDisruptionBudget").is_empty());
}

/// Every `--flag` the chart passes to `agentmesh-controller` is one it accepts, with a
/// value it accepts.
#[test]
fn controller_flags_in_the_chart_are_flags_the_controller_accepts() {
    let out = Command::new(env!("CARGO_BIN_EXE_agentmesh-controller"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let known: BTreeSet<&str> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .collect();
    let no_cluster = tempfile::tempdir().unwrap();
    for (option, sets) in OPTIONS {
        let rendered = render(sets);
        let mut accepted = Vec::new();
        for arg in rendered.args() {
            let flag = arg.split_once('=').map_or(arg, |(f, _)| f);
            assert!(
                !flag.starts_with("--") || known.contains(flag),
                "{option}: the chart passes {flag}, which `agentmesh-controller serve` does not accept"
            );
            accepted.push(arg);
        }
        // The values parse too (durations, addresses, enums): started with the chart's
        // arguments and environment outside a cluster, the controller gets as far as
        // looking for the cluster. clap exits 2 on a bad argument.
        let out = Command::new(env!("CARGO_BIN_EXE_agentmesh-controller"))
            .args(&accepted)
            .env_clear()
            .env("HOME", no_cluster.path())
            .env("POD_NAMESPACE", "agentmesh-system")
            .env("POD_NAME", "agentmesh-controller-0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() == Some(1) && stderr.contains("no Kubernetes configuration"),
            "{option}: `agentmesh-controller {}` did not start: {stderr}",
            accepted.join(" ")
        );
    }
}

#[test]
fn image_values_override_every_image() {
    let rendered = render(&[]);
    assert_eq!(
        rendered.controller()["image"],
        "ghcr.io/agentmesh/agentmesh-controller:0.1.0"
    );
    assert_eq!(
        rendered.flag("--gateway-image"),
        Some("ghcr.io/agentmesh/agentmesh-proxy:0.1.0")
    );
    let rendered = render(OPTIONS.iter().find(|o| o.0 == "image overrides").unwrap().1);
    assert_eq!(
        rendered.controller()["image"],
        "registry.example.com/custom/controller:1.2.3"
    );
    assert_eq!(rendered.controller()["imagePullPolicy"], "Always");
    let proxy = "registry.example.com/mirror/agentmesh-proxy:1.2.4-debug";
    // Gateways and sidecars run the same proxy image.
    assert_eq!(rendered.flag("--gateway-image"), Some(proxy));
    assert_eq!(rendered.flag("--proxy-image"), Some(proxy));
    assert_eq!(
        rendered.flag("--init-image"),
        Some("registry.example.com/mirror/agentmesh-init:1.2.3")
    );
    assert_eq!(rendered.flag("--image-pull-policy"), Some("Always"));
    let pod = &rendered.one("Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
}

#[test]
fn classic_sidecar_option_reaches_the_injector() {
    // `auto` (the default): native sidecars from Kubernetes 1.29 on, classic before.
    for (version, native) in [
        ("1.27.9", "false"),
        ("1.28.15", "false"),
        ("1.29.0", "true"),
        ("1.33.2", "true"),
    ] {
        assert_eq!(
            render_for_kube(&[], version).flag("--native-sidecar"),
            Some(native),
            "Kubernetes {version}"
        );
    }
    // An explicit value wins over the cluster's version.
    let classic = render_for_kube(&["injection.nativeSidecar=false"], "1.33.2");
    assert_eq!(classic.flag("--native-sidecar"), Some("false"));
    let native = render_for_kube(&["injection.nativeSidecar=true"], "1.28.15");
    assert_eq!(native.flag("--native-sidecar"), Some("true"));
}

#[test]
fn gateway_class_names_the_agentmesh_controller() {
    let rendered = render(&[]);
    let class = rendered.one("GatewayClass");
    assert_eq!(class["metadata"]["name"], "agentmesh");
    assert_eq!(
        class["spec"]["controllerName"],
        agentmesh_controller::objects::CONTROLLER_NAME
    );
    assert!(
        render(&["gatewayClass.enabled=false"])
            .all("GatewayClass")
            .is_empty()
    );
}
