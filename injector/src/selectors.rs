//! The webhook's selectors as the injector means them: which namespaces and pods the API
//! server sends at all. The chart's MutatingWebhookConfiguration must say the same; its
//! test compares the rendered object with `agentmesh-injector selectors`.
//!
//! The injector checks the same conditions again on each pod ([`crate::inject`]), so a
//! drifted configuration sends too much, never injects too much.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use serde::Serialize;

use crate::settings::{INJECT_LABEL, SYSTEM_NAMESPACES, Settings};

/// Kubernetes' label carrying each namespace's own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The selectors of the MutatingWebhookConfiguration's webhook.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSelectors {
    /// Opted-in namespaces, minus the excluded ones.
    pub namespace_selector: LabelSelector,
    /// Pods not opted out.
    pub object_selector: LabelSelector,
    /// The namespaces never injected: Kubernetes' own, then the installation's, in the
    /// order the chart lists them.
    pub excluded_namespaces: Vec<String>,
}

/// The selectors for these settings.
pub fn webhook_selectors(settings: &Settings) -> WebhookSelectors {
    let mut excluded: Vec<String> = SYSTEM_NAMESPACES.iter().map(|s| s.to_string()).collect();
    for ns in &settings.excluded_namespaces {
        if !excluded.contains(ns) {
            excluded.push(ns.clone());
        }
    }
    let requirement = |key: &str, operator: &str, values: Vec<String>| LabelSelectorRequirement {
        key: key.into(),
        operator: operator.into(),
        values: Some(values),
    };
    WebhookSelectors {
        namespace_selector: LabelSelector {
            match_expressions: Some(vec![
                requirement(INJECT_LABEL, "In", vec!["enabled".into()]),
                requirement(NAMESPACE_NAME_LABEL, "NotIn", excluded.clone()),
            ]),
            match_labels: None,
        },
        object_selector: LabelSelector {
            match_expressions: Some(vec![requirement(
                INJECT_LABEL,
                "NotIn",
                vec!["disabled".into()],
            )]),
            match_labels: None,
        },
        excluded_namespaces: excluded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_match_the_chart_shape() {
        let mut settings = Settings::for_controller_namespace("mesh");
        settings.excluded_namespaces.push("legacy".into());
        let json = serde_json::to_value(webhook_selectors(&settings)).expect("serializes");
        assert_eq!(
            json["namespaceSelector"],
            json!({"matchExpressions": [
                {"key": "agentmesh.dev/inject", "operator": "In", "values": ["enabled"]},
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                 "values": ["kube-system", "kube-public", "kube-node-lease", "legacy"]},
            ]})
        );
        assert_eq!(
            json["objectSelector"],
            json!({"matchExpressions": [
                {"key": "agentmesh.dev/inject", "operator": "NotIn", "values": ["disabled"]},
            ]})
        );
    }
}
