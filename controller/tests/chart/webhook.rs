//! The webhook configuration: how the API server calls the controller, which pods it
//! sends (checked against the injector's own selectors), and its certificate.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::OPTIONS;
use crate::helm::{NAMESPACE, render};

/// The selectors the injector applies to a Pod CREATE before it injects anything.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InjectorSelectors {
    /// Namespaces whose pods are injected (a LabelSelector on namespace labels).
    namespace_selector: Value,
    /// Pods that are injected (a LabelSelector on pod labels).
    object_selector: Value,
    /// Namespaces never injected, whatever their labels.
    excluded_namespaces: Vec<String>,
}

/// The injector's own selectors (`agentmesh_injector::selectors`, what
/// `agentmesh-injector selectors` prints), for an installation that also excludes
/// `extra_excluded` namespaces.
fn injector_selectors(extra_excluded: &[&str]) -> InjectorSelectors {
    let mut settings = agentmesh_injector::Settings::for_controller_namespace(NAMESPACE);
    settings
        .excluded_namespaces
        .extend(extra_excluded.iter().map(|n| n.to_string()));
    let printed =
        serde_json::to_value(agentmesh_injector::selectors::webhook_selectors(&settings)).unwrap();
    serde_json::from_value(printed).unwrap()
}

#[test]
fn webhook_calls_the_controller_for_pod_create_and_fails_closed_by_default() {
    let rendered = render(&[]);
    let webhook = rendered.webhook();
    assert_eq!(webhook["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(webhook["sideEffects"], "None");
    assert_eq!(webhook["reinvocationPolicy"], "IfNeeded");
    assert_eq!(webhook["failurePolicy"], "Fail");
    assert_eq!(webhook["timeoutSeconds"], 10);
    assert_eq!(
        webhook["rules"],
        json!([{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                "resources": ["pods"], "scope": "Namespaced"}])
    );
    // It reaches the controller's Service on the port that leads to the webhook.
    let service = rendered.one("Service");
    let target = &webhook["clientConfig"]["service"];
    assert_eq!(target["name"], service["metadata"]["name"]);
    assert_eq!(target["namespace"], NAMESPACE);
    assert_eq!(target["path"], "/inject");
    let port = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == target["port"])
        .expect("the webhook's port is not a port of the Service");
    assert_eq!(port["targetPort"], "https-webhook");
    assert_eq!(rendered.flag("--webhook-addr"), Some("0.0.0.0:16443"));
    // The caBundle is the controller's to fill in: a chart upgrade must not reset it.
    assert!(webhook["clientConfig"].get("caBundle").is_none());

    let ignore = render(&["webhook.failurePolicy=Ignore", "webhook.timeoutSeconds=3"]);
    assert_eq!(ignore.webhook()["failurePolicy"], "Ignore");
    assert_eq!(ignore.webhook()["timeoutSeconds"], 3);
}

#[test]
fn webhook_disabled_renders_no_webhook_nor_its_port() {
    let rendered = render(&["webhook.enabled=false"]);
    assert!(rendered.all("MutatingWebhookConfiguration").is_empty());
    assert!(rendered.flag("--webhook-addr").is_none());
    assert!(!rendered.text.contains("https-webhook"));
}

/// Whether a LabelSelector (matchLabels and matchExpressions) selects `labels`.
fn selects(selector: &Value, labels: &BTreeMap<&str, &str>) -> bool {
    let match_labels = selector["matchLabels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let labels_match = match_labels
        .iter()
        .all(|(k, v)| labels.get(k.as_str()).copied() == v.as_str());
    let expressions = selector["matchExpressions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    labels_match
        && expressions.iter().all(|e| {
            let value = labels.get(e["key"].as_str().unwrap()).copied();
            let values: Vec<&str> = e["values"]
                .as_array()
                .map(|v| v.iter().map(|s| s.as_str().unwrap()).collect())
                .unwrap_or_default();
            match e["operator"].as_str().unwrap() {
                "In" => value.is_some_and(|v| values.contains(&v)),
                "NotIn" => value.is_none_or(|v| !values.contains(&v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                other => panic!("unknown selector operator {other}"),
            }
        })
}

/// The webhook configuration sends the API server's Pod CREATEs to the injector for
/// exactly the pods the injector would inject: the same decision for every namespace
/// and pod below, where a namespace carries the `kubernetes.io/metadata.name` label
/// the API server sets on every namespace.
#[test]
fn webhook_selects_exactly_the_pods_the_injector_injects() {
    let namespaces: &[(&str, &[(&str, &str)])] = &[
        ("agents", &[("agentmesh.dev/inject", "enabled")]),
        ("plain", &[]),
        ("opted-out", &[("agentmesh.dev/inject", "disabled")]),
        ("typo", &[("agentmesh.dev/inject", "true")]),
        ("kube-system", &[("agentmesh.dev/inject", "enabled")]),
        ("kube-public", &[("agentmesh.dev/inject", "enabled")]),
        ("kube-node-lease", &[("agentmesh.dev/inject", "enabled")]),
        ("batch", &[("agentmesh.dev/inject", "enabled")]),
    ];
    let pods: &[&[(&str, &str)]] = &[
        &[],
        &[("app", "agent")],
        &[("agentmesh.dev/inject", "disabled")],
        &[("agentmesh.dev/inject", "enabled")],
        &[
            ("app.kubernetes.io/part-of", "agentmesh"),
            ("agentmesh.dev/inject", "disabled"),
        ],
    ];
    for (option, sets, extra_excluded) in [
        ("default values", &[][..], &[][..]),
        (
            "extra excluded namespaces",
            &["webhook.excludedNamespaces={batch}"][..],
            &["batch"][..],
        ),
    ] {
        let injector = injector_selectors(extra_excluded);
        let rendered = render(sets);
        let webhook = rendered.webhook();
        // The same selectors, written the same way...
        assert_eq!(
            webhook["namespaceSelector"], injector.namespace_selector,
            "{option}"
        );
        assert_eq!(
            webhook["objectSelector"], injector.object_selector,
            "{option}"
        );
        // ...and the same decision for every case below.
        let mut injected = 0;
        for (namespace, namespace_labels) in namespaces {
            let mut ns_labels: BTreeMap<&str, &str> = namespace_labels.iter().copied().collect();
            ns_labels.insert("kubernetes.io/metadata.name", namespace);
            for pod in pods {
                let pod_labels: BTreeMap<&str, &str> = pod.iter().copied().collect();
                let called = selects(&webhook["namespaceSelector"], &ns_labels)
                    && selects(&webhook["objectSelector"], &pod_labels);
                let excluded = injector.excluded_namespaces.iter().any(|n| n == namespace);
                let injects = !excluded
                    && selects(&injector.namespace_selector, &ns_labels)
                    && selects(&injector.object_selector, &pod_labels);
                assert_eq!(
                    called, injects,
                    "{option}: namespace {namespace} {namespace_labels:?}, pod {pod:?}: \
                     the API server calls the webhook: {called}, the injector injects: {injects}"
                );
                injected += usize::from(injects);
            }
        }
        assert!(injected > 0, "{option}: no case is injected at all");
    }
}

// ---------------------------------------------------------------------------------
// The webhook's certificate.

#[test]
fn controller_certificate_source_lets_the_controller_manage_secret_and_ca_bundle() {
    let rendered = render(&[]);
    assert!(rendered.all("Certificate").is_empty() && rendered.all("Issuer").is_empty());
    let configuration = rendered.one("MutatingWebhookConfiguration");
    assert!(configuration["metadata"].get("annotations").is_none());
    assert_eq!(
        rendered.flag("--webhook-cert-secret"),
        Some("agentmesh-webhook-cert")
    );
    assert_eq!(
        rendered.flag("--webhook-configuration"),
        configuration["metadata"]["name"].as_str()
    );
    assert_eq!(
        rendered.flag("--webhook-service"),
        rendered.one("Service")["metadata"]["name"].as_str()
    );
    // The controller reads and writes the Secret through the API, and writes the files
    // its webhook server reads into a writable in-memory volume, where it is told.
    let pod = &rendered.one("Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0]["emptyDir"]["medium"], "Memory");
    let mount = &rendered.controller()["volumeMounts"][0];
    assert_eq!(mount["name"], pod["volumes"][0]["name"]);
    assert!(mount.get("readOnly").is_none());
    assert_eq!(
        rendered.flag("--webhook-generated-cert-dir"),
        mount["mountPath"].as_str()
    );
    assert!(rendered.flag("--webhook-cert-dir").is_none());
}

#[test]
fn cert_manager_source_issues_the_certificate_and_injects_its_ca() {
    let rendered = render(&["webhook.certificate.source=cert-manager"]);
    let certificate = rendered.one("Certificate");
    let issuer = rendered.one("Issuer");
    assert_eq!(issuer["spec"], json!({"selfSigned": {}}));
    assert_eq!(
        certificate["spec"]["issuerRef"],
        json!({"kind": "Issuer", "name": issuer["metadata"]["name"], "group": "cert-manager.io"})
    );
    assert_eq!(
        certificate["spec"]["dnsNames"],
        json!([
            "agentmesh-controller.agentmesh-system.svc",
            "agentmesh-controller.agentmesh-system.svc.cluster.local",
            "agentmesh-controller.agentmesh-system"
        ])
    );
    // cainjector finds the Certificate from the webhook configuration's annotation.
    let annotation = &rendered.one("MutatingWebhookConfiguration")["metadata"]["annotations"]["cert-manager.io/inject-ca-from"];
    assert_eq!(
        annotation.as_str(),
        Some(
            format!(
                "{NAMESPACE}/{}",
                certificate["metadata"]["name"].as_str().unwrap()
            )
            .as_str()
        )
    );
    // The controller serves the Secret cert-manager writes, mounted where it is told.
    let secret = certificate["spec"]["secretName"].as_str().unwrap();
    let pod = &rendered.one("Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], secret);
    let mount = &rendered.controller()["volumeMounts"][0];
    assert_eq!(mount["name"], pod["volumes"][0]["name"]);
    assert_eq!(mount["readOnly"], true);
    assert_eq!(
        rendered.flag("--webhook-cert-dir"),
        mount["mountPath"].as_str()
    );
    assert!(rendered.flag("--webhook-cert-secret").is_none());

    // The user's issuer: no Issuer of ours.
    let option = OPTIONS
        .iter()
        .find(|o| o.0 == "cert-manager with the user's ClusterIssuer")
        .unwrap();
    let rendered = render(option.1);
    assert!(rendered.all("Issuer").is_empty());
    assert_eq!(
        rendered.one("Certificate")["spec"]["issuerRef"],
        json!({"kind": "ClusterIssuer", "name": "corp-ca", "group": "cert-manager.io"})
    );
}

/// The names an API server may dial a webhook's `clientConfig.service` by: `.svc`
/// (what it uses), the cluster-domain form, and `<service>.<namespace>`.
fn names_the_api_server_may_use(webhook: &Value) -> Vec<String> {
    let service = &webhook["clientConfig"]["service"];
    let (name, namespace) = (
        service["name"].as_str().unwrap(),
        service["namespace"].as_str().unwrap(),
    );
    vec![
        format!("{name}.{namespace}.svc"),
        format!("{name}.{namespace}.svc.cluster.local"),
        format!("{name}.{namespace}"),
    ]
}

/// Whichever source issues the webhook's certificate, it is valid for every name the
/// API server may call the webhook's Service by: cert-manager's Certificate lists them,
/// and the controller generates its certificate for the Service and namespace the
/// chart passes it (its `service_names`).
#[test]
fn the_webhook_certificate_covers_every_name_the_api_server_may_use_in_both_modes() {
    let mut modes = std::collections::BTreeSet::new();
    for (option, sets) in OPTIONS
        .iter()
        .filter(|(_, sets)| !sets.contains(&"webhook.enabled=false"))
    {
        let rendered = render(sets);
        let wanted = names_the_api_server_may_use(rendered.webhook());
        let generated = rendered.flag("--webhook-cert-secret").is_some();
        modes.insert(generated);
        let certified: Vec<String> = if generated {
            let service = rendered.flag("--webhook-service").unwrap();
            // --webhook-namespace is the pod's namespace (POD_NAMESPACE), the
            // release's.
            assert!(rendered.flag("--webhook-namespace").is_none(), "{option}");
            agentmesh_controller::kubernetes::webhook_cert::issue::service_names(service, NAMESPACE)
        } else {
            serde_json::from_value(rendered.one("Certificate")["spec"]["dnsNames"].clone()).unwrap()
        };
        for name in &wanted {
            assert!(
                certified.contains(name),
                "{option}: the certificate does not cover {name}: {certified:?}"
            );
        }
    }
    assert_eq!(modes.len(), 2, "both certificate sources are rendered");
}
