//! RBAC: the controller is granted exactly what its code reads and writes.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helm::{NAMESPACE, render};

/// One permission: API group, resource (with subresource), verb, and the names it is
/// limited to (empty: any).
type Grant = (String, String, String, Vec<String>);

fn grants(role: &Value) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        let strings = |field: &str| -> Vec<String> {
            rule[field]
                .as_array()
                .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
                .unwrap_or_default()
        };
        for group in strings("apiGroups") {
            for resource in strings("resources") {
                for verb in strings("verbs") {
                    assert!(
                        group != "*" && resource != "*" && verb != "*",
                        "wildcard in {rule}"
                    );
                    out.insert((
                        group.clone(),
                        resource.clone(),
                        verb,
                        strings("resourceNames"),
                    ));
                }
            }
        }
    }
    out
}

fn grant(group: &str, resource: &str, verb: &str, names: &[&str]) -> Grant {
    (
        group.into(),
        resource.into(),
        verb.into(),
        names.iter().map(|n| n.to_string()).collect(),
    )
}

/// The ConfigMap the controller publishes the mesh CA in: the injector's default, which
/// the chart does not change.
fn mesh_ca_configmap() -> String {
    match agentmesh_injector::settings::MeshCaSource::default() {
        agentmesh_injector::settings::MeshCaSource::ConfigMap { name, .. } => name,
        other => panic!("the injector mounts the mesh CA from {other:?}"),
    }
}

/// What the controller needs cluster-wide, from its own code.
fn cluster_grants_needed(controller_certificate: bool, mesh_ca: bool) -> BTreeSet<Grant> {
    use agentmesh_controller::kubernetes::{StatusShape, kinds};
    let mut needed = BTreeSet::new();
    // The source's reflectors list and watch every kind, in every namespace.
    for kind in kinds() {
        let group = &kind.resource.group;
        let plural = &kind.resource.plural;
        needed.insert(grant(group, plural, "list", &[]));
        needed.insert(grant(group, plural, "watch", &[]));
        // The status writer patches the status subresource of the kinds it reports on.
        if kind.status != StatusShape::None {
            needed.insert(grant(group, &format!("{plural}/status"), "patch", &[]));
        }
    }
    // Gateway provisioning: server-side apply of Deployments and Services (create when
    // absent), owned by the Gateway with blockOwnerDeletion.
    for (group, resource) in [("apps", "deployments"), ("", "services")] {
        needed.insert(grant(group, resource, "create", &[]));
        needed.insert(grant(group, resource, "patch", &[]));
    }
    needed.insert(grant(
        "gateway.networking.k8s.io",
        "gateways/finalizers",
        "update",
        &[],
    ));
    // Proxies' tokens.
    needed.insert(grant(
        "authentication.k8s.io",
        "tokenreviews",
        "create",
        &[],
    ));
    // The webhook certificate keeper (kubernetes/webhook_cert): the caBundle of our own
    // configuration, read, watched by name and JSON-patched.
    if controller_certificate {
        for verb in ["get", "list", "watch", "patch"] {
            needed.insert(grant(
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
                verb,
                &["agentmesh-sidecar-injector"],
            ));
        }
    }
    // The mesh CA's publisher (kubernetes/mesh_ca): its ConfigMap in every labelled
    // namespace, created, listed and watched by name (the namespaces are listed and
    // watched above), and replaced.
    if mesh_ca {
        let name = mesh_ca_configmap();
        needed.insert(grant("", "configmaps", "create", &[]));
        for verb in ["list", "watch", "update"] {
            needed.insert(grant("", "configmaps", verb, &[&name]));
        }
    }
    needed
}

#[test]
fn rbac_grants_exactly_what_the_controller_reads_and_writes() {
    use agentmesh_controller::kubernetes::leader::LEASE_NAME;
    use agentmesh_controller::kubernetes::mesh_ca::DEFAULT_SECRET;
    // (option, --set values, the controller generates the webhook certificate, the
    // mesh CA root's Secret if any, and whether the controller may create it)
    for (option, sets, controller_certificate, mesh_ca, generate) in [
        ("default values", &[][..], true, Some(DEFAULT_SECRET), true),
        (
            "cert-manager",
            &["webhook.certificate.source=cert-manager"][..],
            false,
            Some(DEFAULT_SECRET),
            true,
        ),
        (
            "webhook disabled",
            &["webhook.enabled=false"][..],
            false,
            Some(DEFAULT_SECRET),
            true,
        ),
        (
            "the operator's mesh CA root, cert-manager",
            &[
                "meshCA.generate=false",
                "meshCA.secretName=corp-mesh-ca",
                "webhook.certificate.source=cert-manager",
            ][..],
            false,
            Some("corp-mesh-ca"),
            false,
        ),
        (
            "no mesh CA",
            &["meshCA.enabled=false"][..],
            true,
            None,
            false,
        ),
    ] {
        let rendered = render(sets);
        // The chart names the Secret the controller reads, and lets it generate one
        // only when asked.
        assert_eq!(rendered.flag("--mesh-ca-root-secret"), mesh_ca, "{option}");
        if mesh_ca.is_some() {
            let expected = if generate { "true" } else { "false" };
            assert_eq!(
                rendered.flag("--mesh-ca-generate"),
                Some(expected),
                "{option}"
            );
        }
        let cluster = grants(rendered.one("ClusterRole"));
        let needed = cluster_grants_needed(controller_certificate, mesh_ca.is_some());
        let extra: Vec<_> = cluster.difference(&needed).collect();
        let missing: Vec<_> = needed.difference(&cluster).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "{option}: ClusterRole grants more: {extra:?}; lacks: {missing:?}"
        );
        let namespaced = grants(rendered.one("Role"));
        let mut needed = BTreeSet::from([
            grant("coordination.k8s.io", "leases", "create", &[]),
            grant("coordination.k8s.io", "leases", "get", &[LEASE_NAME]),
            grant("coordination.k8s.io", "leases", "update", &[LEASE_NAME]),
        ]);
        if controller_certificate {
            needed.insert(grant("", "secrets", "create", &[]));
            // The certificate Secret: created, then read, watched by name and replaced.
            for verb in ["get", "list", "watch", "update"] {
                needed.insert(grant("", "secrets", verb, &["agentmesh-webhook-cert"]));
            }
        }
        // The mesh CA root's Secret: read and watched by name; created only when the
        // controller generates it; never replaced.
        if let Some(secret) = mesh_ca {
            if generate {
                needed.insert(grant("", "secrets", "create", &[]));
            }
            for verb in ["get", "list", "watch"] {
                needed.insert(grant("", "secrets", verb, &[secret]));
            }
        }
        assert_eq!(namespaced, needed, "{option}: Role");
        // Both are bound to the controller's service account, and only to it.
        let account =
            rendered.one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"].clone();
        assert_eq!(rendered.one("ServiceAccount")["metadata"]["name"], account);
        for (binding, role) in [
            ("ClusterRoleBinding", "ClusterRole"),
            ("RoleBinding", "Role"),
        ] {
            let binding = rendered.one(binding);
            assert_eq!(binding["roleRef"]["kind"], role);
            assert_eq!(
                binding["roleRef"]["name"],
                rendered.one(role)["metadata"]["name"]
            );
            assert_eq!(
                binding["subjects"],
                json!([{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}])
            );
        }
        // The Role lives where the Lease does: the controller's namespace.
        assert_eq!(rendered.one("Role")["metadata"]["namespace"], NAMESPACE);
    }
}
