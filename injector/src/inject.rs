//! Injection of one pod: decides whether to inject (or why not), then writes the changes
//! as an RFC 6902 JSON Patch against the pod exactly as it was received, and applies that
//! patch to get the injected pod. The patch is the single source of truth: the pod the
//! CLI prints is the pod the API server gets.
//!
//! Every operation is an `add` of our own objects or fields; the user's containers, their
//! order and their fields are never replaced. Fields this crate's Kubernetes types do not
//! know survive too, since the patch works on the raw JSON. This module must not know
//! about AdmissionReview or HTTP ([`crate::review`] does).

use std::collections::BTreeMap;
use std::fmt;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;
use serde_json::Value;

use crate::annotations::{self, AnnotationError, EgressTls, PodOptions, SidecarKind};
use crate::containers::{
    self, CA_VOLUME, INIT_CONTAINER, INIT_RUN_VOLUME, PROXY_CONTAINER, TOKEN_VOLUME, ca_env,
    ca_mount,
};
use crate::settings::{INJECT_LABEL, PART_OF_LABEL, PART_OF_VALUE, SYSTEM_NAMESPACES, Settings};

/// Where the pod is created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodContext {
    /// The pod's namespace (the request's, since a pod being created may not carry one).
    pub namespace: String,
    /// The namespace's labels when known: then a namespace without
    /// `agentmesh.dev/inject=enabled` is skipped. The webhook's namespaceSelector already
    /// does that, so callers may leave it `None`; the CLI does.
    pub namespace_labels: Option<BTreeMap<String, String>>,
}

/// Why a pod is left as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The pod carries `agentmesh.dev/status`: injected before (a reinvocation).
    AlreadyInjected {
        /// The version that injected it, as recorded.
        status: String,
    },
    /// The pod has an agentmesh container or volume but no status annotation.
    HasAgentmeshParts {
        /// The container or volume found.
        name: String,
    },
    /// The pod is labelled `agentmesh.dev/inject=disabled`.
    OptedOut,
    /// The pod is one of agentmesh's own (`app.kubernetes.io/part-of=agentmesh`).
    OwnComponent,
    /// The pod uses the node's network: capture rules would apply to the whole node.
    HostNetwork,
    /// The pod runs on Windows (`spec.os.name`), which has no iptables.
    NotLinux(String),
    /// The namespace is a Kubernetes system namespace.
    SystemNamespace(String),
    /// The namespace is excluded by the installation.
    ExcludedNamespace(String),
    /// The namespace is not labelled `agentmesh.dev/inject=enabled`.
    NamespaceNotEnabled(String),
}

impl SkipReason {
    /// A short, fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SkipReason::AlreadyInjected { .. } => "already_injected",
            SkipReason::HasAgentmeshParts { .. } => "has_agentmesh_parts",
            SkipReason::OptedOut => "opted_out",
            SkipReason::OwnComponent => "own_component",
            SkipReason::HostNetwork => "host_network",
            SkipReason::NotLinux(_) => "not_linux",
            SkipReason::SystemNamespace(_) => "system_namespace",
            SkipReason::ExcludedNamespace(_) => "excluded_namespace",
            SkipReason::NamespaceNotEnabled(_) => "namespace_not_enabled",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("agentmesh: sidecar not injected: ")?;
        match self {
            SkipReason::AlreadyInjected { status } => {
                write!(f, "already injected ({} is {status})", annotations::STATUS)
            }
            SkipReason::HasAgentmeshParts { name } => write!(
                f,
                "the pod already has '{name}' but no {} annotation",
                annotations::STATUS
            ),
            SkipReason::OptedOut => write!(f, "the pod is labelled {INJECT_LABEL}=disabled"),
            SkipReason::OwnComponent => write!(
                f,
                "the pod is an agentmesh component ({PART_OF_LABEL}={PART_OF_VALUE})"
            ),
            SkipReason::HostNetwork => f.write_str(
                "the pod uses hostNetwork; capture rules would redirect the node's traffic",
            ),
            SkipReason::NotLinux(os) => {
                write!(f, "the pod runs on {os}; capture needs Linux iptables")
            }
            SkipReason::SystemNamespace(ns) => write!(f, "{ns} is a Kubernetes system namespace"),
            SkipReason::ExcludedNamespace(ns) => {
                write!(f, "namespace {ns} is excluded by the installation")
            }
            SkipReason::NamespaceNotEnabled(ns) => {
                write!(f, "namespace {ns} is not labelled {INJECT_LABEL}=enabled")
            }
        }
    }
}

/// A pod that was injected.
#[derive(Clone, Debug, PartialEq)]
pub struct Injection {
    /// The patch from the pod as received to [`Injection::pod`].
    pub patch: Patch,
    /// The injected pod: the patch applied to the pod as received.
    pub pod: Value,
    /// Native or classic sidecar.
    pub sidecar: SidecarKind,
    /// Things the user should know (unknown annotations, fallbacks).
    pub warnings: Vec<String>,
}

/// What happens to a pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Injected.
    Inject(Injection),
    /// Left alone, for this reason.
    Skip(SkipReason),
}

/// Why a pod cannot be injected.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// An annotation has an unusable value.
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    /// The object is not a pod (or a pod template) Kubernetes would accept.
    #[error("not a valid pod: {0}")]
    NotAPod(String),
    /// Our own patch did not apply: a bug, reported rather than half-applied.
    #[error("internal error: the injection patch does not apply to the pod: {0}")]
    Patch(#[from] json_patch::PatchError),
}

/// The status annotation's value: what was injected, and by which version.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    version: &'a str,
    sidecar: &'static str,
    init_containers: Vec<&'static str>,
    containers: Vec<&'static str>,
    volumes: Vec<&'static str>,
}

/// Decides and, when it applies, injects `pod` (a Pod, or a pod template: an object with
/// `metadata` and `spec`).
pub fn inject_pod(
    pod: &Value,
    context: &PodContext,
    settings: &Settings,
) -> Result<Decision, InjectError> {
    let typed: Pod =
        serde_json::from_value(pod.clone()).map_err(|e| InjectError::NotAPod(e.to_string()))?;
    let spec = typed
        .spec
        .as_ref()
        .ok_or_else(|| InjectError::NotAPod("it has no spec".into()))?;
    let labels = typed.metadata.labels.clone().unwrap_or_default();
    let pod_annotations = typed.metadata.annotations.clone().unwrap_or_default();

    if let Some(reason) = skip_reason(&typed, &labels, &pod_annotations, context, settings) {
        return Ok(Decision::Skip(reason));
    }
    let options = PodOptions::from_annotations(&pod_annotations, settings)?;
    let mut warnings = options.warnings.clone();
    let mut patch = PatchBuilder::default();
    let user_containers = &spec.containers;

    // App containers first, while their indexes are still the user's.
    let mut volumes = vec![
        (TOKEN_VOLUME, containers::token_volume(settings)),
        (INIT_RUN_VOLUME, containers::init_run_volume()),
    ];
    if options.egress_tls == EgressTls::Intercept {
        volumes.push((CA_VOLUME, containers::ca_volume(settings)));
        for (i, container) in user_containers.iter().enumerate() {
            let base = ["spec", "containers", &i.to_string()];
            // The mesh CA, so the app trusts the proxy's certificates for intercepted TLS.
            patch.append(
                &base,
                "volumeMounts",
                container.volume_mounts.is_some(),
                ca_mount(),
            )?;
            let existing = container.env.clone().unwrap_or_default();
            for name in containers::CA_ENV {
                if existing.iter().any(|e| e.name == name) {
                    warnings.push(format!(
                        "container {} sets {name} itself: it must trust the mesh CA ({}/{}) for intercepted TLS to work",
                        container.name,
                        containers::CA_DIR,
                        containers::CA_FILE
                    ));
                }
            }
            let mut has_env = container.env.is_some();
            for var in ca_env(&existing) {
                patch.append(&base, "env", has_env, var)?;
                has_env = true;
            }
        }
    }

    let init = containers::init_container(&options, settings);
    let proxy = containers::proxy_container(&options, settings);
    let has_init_containers = spec.init_containers.is_some();
    let (init_containers, regular) = match options.sidecar {
        SidecarKind::Native => {
            // agentmesh-init first, then the proxy: the user's init containers run with
            // capture on and the proxy already serving, like the app.
            if has_init_containers {
                patch.insert(&["spec"], "initContainers", true, 0, init)?;
                patch.insert(&["spec"], "initContainers", true, 1, proxy)?;
            } else {
                patch.add(&["spec", "initContainers"], to_json([init, proxy])?);
            }
            (vec![INIT_CONTAINER, PROXY_CONTAINER], vec![])
        }
        SidecarKind::Classic => {
            // Last among init containers: without a running proxy, the user's init
            // containers must not be captured, or their connections would be refused.
            patch.append(&["spec"], "initContainers", has_init_containers, init)?;
            // First among containers: the kubelet starts containers in order and waits for
            // each postStart hook, so the app starts after the proxy is ready.
            patch.insert(&["spec"], "containers", true, 0, proxy)?;
            if spec
                .restart_policy
                .as_deref()
                .is_some_and(|p| p != "Always")
            {
                warnings.push(
                    "a classic sidecar keeps running after the app exits: this pod (restartPolicy \
                     not Always) will not complete; use a native sidecar (Kubernetes >= 1.29)"
                        .into(),
                );
            }
            (vec![INIT_CONTAINER], vec![PROXY_CONTAINER])
        }
    };
    let mut volume_names = Vec::new();
    let mut has_volumes = spec.volumes.is_some();
    for (name, volume) in volumes {
        volume_names.push(name);
        patch.append(&["spec"], "volumes", has_volumes, volume)?;
        has_volumes = true;
    }

    // Annotations last: the status records what was injected, so a reinvocation or a
    // second `inject` run leaves the pod alone.
    let status = Status {
        version: &settings.version,
        sidecar: options.sidecar.as_str(),
        init_containers,
        containers: regular,
        volumes: volume_names,
    };
    let status = serde_json::to_string(&status).map_err(|e| InjectError::NotAPod(e.to_string()))?;
    let has_metadata = pod.get("metadata").is_some_and(Value::is_object);
    let mut has_annotations = typed.metadata.annotations.is_some();
    if !has_metadata {
        patch.add(&["metadata"], Value::Object(Default::default()));
    }
    patch.put(
        &["metadata"],
        "annotations",
        has_annotations,
        annotations::STATUS,
        status,
    );
    has_annotations = true;
    if options.sidecar == SidecarKind::Classic
        && !pod_annotations.contains_key(annotations::DEFAULT_CONTAINER)
        && let Some(first) = user_containers.first()
    {
        // `kubectl logs` and `exec` keep going to the app, not to the proxy now first.
        patch.put(
            &["metadata"],
            "annotations",
            has_annotations,
            annotations::DEFAULT_CONTAINER,
            first.name.clone(),
        );
    }

    let patch = Patch(patch.ops);
    let mut injected = pod.clone();
    json_patch::patch(&mut injected, &patch)?;
    Ok(Decision::Inject(Injection {
        patch,
        pod: injected,
        sidecar: options.sidecar,
        warnings,
    }))
}

fn skip_reason(
    pod: &Pod,
    labels: &BTreeMap<String, String>,
    pod_annotations: &BTreeMap<String, String>,
    context: &PodContext,
    settings: &Settings,
) -> Option<SkipReason> {
    if let Some(status) = pod_annotations.get(annotations::STATUS) {
        return Some(SkipReason::AlreadyInjected {
            status: status.clone(),
        });
    }
    let spec = pod.spec.as_ref()?;
    let ours = [INIT_CONTAINER, PROXY_CONTAINER, TOKEN_VOLUME, CA_VOLUME];
    let names = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(|c| c.name.as_str())
        .chain(spec.volumes.iter().flatten().map(|v| v.name.as_str()));
    for name in names {
        if ours.contains(&name) {
            return Some(SkipReason::HasAgentmeshParts { name: name.into() });
        }
    }
    if labels.get(INJECT_LABEL).map(String::as_str) == Some("disabled") {
        return Some(SkipReason::OptedOut);
    }
    if labels.get(PART_OF_LABEL).map(String::as_str) == Some(PART_OF_VALUE) {
        return Some(SkipReason::OwnComponent);
    }
    if spec.host_network == Some(true) {
        return Some(SkipReason::HostNetwork);
    }
    if let Some(os) = spec.os.as_ref().filter(|os| os.name != "linux") {
        return Some(SkipReason::NotLinux(os.name.clone()));
    }
    let ns = &context.namespace;
    if SYSTEM_NAMESPACES.contains(&ns.as_str()) {
        return Some(SkipReason::SystemNamespace(ns.clone()));
    }
    if settings.is_excluded_namespace(ns) {
        return Some(SkipReason::ExcludedNamespace(ns.clone()));
    }
    if let Some(ns_labels) = &context.namespace_labels
        && ns_labels.get(INJECT_LABEL).map(String::as_str) != Some("enabled")
    {
        return Some(SkipReason::NamespaceNotEnabled(ns.clone()));
    }
    None
}

/// Collects `add` operations, creating a missing list or map with its first item.
#[derive(Default)]
struct PatchBuilder {
    ops: Vec<PatchOperation>,
}

impl PatchBuilder {
    fn add(&mut self, path: &[&str], value: Value) {
        self.ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(path.iter().copied()),
            value,
        }));
    }

    /// Appends `item` to the list `base/field`, creating it when `exists` is false.
    fn append(
        &mut self,
        base: &[&str],
        field: &str,
        exists: bool,
        item: impl Serialize,
    ) -> Result<(), InjectError> {
        self.insert_at(base, field, exists, "-", item)
    }

    /// Inserts `item` at `index` of the list `base/field` (shifting what follows).
    fn insert(
        &mut self,
        base: &[&str],
        field: &str,
        exists: bool,
        index: usize,
        item: impl Serialize,
    ) -> Result<(), InjectError> {
        self.insert_at(base, field, exists, &index.to_string(), item)
    }

    fn insert_at(
        &mut self,
        base: &[&str],
        field: &str,
        exists: bool,
        index: &str,
        item: impl Serialize,
    ) -> Result<(), InjectError> {
        let value = to_json(item)?;
        let mut path = base.to_vec();
        path.push(field);
        if exists {
            path.push(index);
            self.add(&path, value);
        } else {
            self.add(&path, Value::Array(vec![value]));
        }
        Ok(())
    }

    /// Sets `key` in the map `base/field`, creating it when `exists` is false.
    fn put(&mut self, base: &[&str], field: &str, exists: bool, key: &str, value: String) {
        let mut path = base.to_vec();
        path.push(field);
        if exists {
            path.push(key);
            self.add(&path, Value::String(value));
        } else {
            let mut map = serde_json::Map::new();
            map.insert(key.into(), Value::String(value));
            self.add(&path, Value::Object(map));
        }
    }
}

fn to_json(item: impl Serialize) -> Result<Value, InjectError> {
    serde_json::to_value(item).map_err(|e| InjectError::NotAPod(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> Settings {
        Settings::for_controller_namespace("agentmesh-system")
    }

    fn context() -> PodContext {
        PodContext {
            namespace: "agents".into(),
            namespace_labels: None,
        }
    }

    fn injected(pod: Value) -> Injection {
        match inject_pod(&pod, &context(), &settings()) {
            Ok(Decision::Inject(i)) => i,
            other => panic!("not injected: {other:?}"),
        }
    }

    #[test]
    fn annotation_keys_with_slashes_are_escaped_in_the_patch() {
        let pod = json!({"metadata": {"annotations": {"a": "b"}}, "spec": {"containers": [{"name": "app"}]}});
        let i = injected(pod);
        let text = serde_json::to_string(&i.patch).expect("serializes");
        assert!(
            text.contains("/metadata/annotations/agentmesh.dev~1status"),
            "{text}"
        );
        assert_eq!(i.pod["metadata"]["annotations"]["a"], "b");
    }

    #[test]
    fn injecting_the_injected_pod_changes_nothing() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app"}]}});
        let once = injected(pod);
        assert!(matches!(
            inject_pod(&once.pod, &context(), &settings()),
            Ok(Decision::Skip(SkipReason::AlreadyInjected { .. }))
        ));
    }

    #[test]
    fn namespace_labels_when_known_must_opt_in() {
        let pod = json!({"metadata": {}, "spec": {"containers": [{"name": "app"}]}});
        let mut ctx = context();
        ctx.namespace_labels = Some(BTreeMap::new());
        assert_eq!(
            inject_pod(&pod, &ctx, &settings()).ok(),
            Some(Decision::Skip(SkipReason::NamespaceNotEnabled(
                "agents".into()
            )))
        );
        ctx.namespace_labels = Some(BTreeMap::from([(INJECT_LABEL.into(), "enabled".into())]));
        assert!(matches!(
            inject_pod(&pod, &ctx, &settings()),
            Ok(Decision::Inject(_))
        ));
    }

    #[test]
    fn a_template_without_metadata_gets_one() {
        let i = injected(json!({"spec": {"containers": [{"name": "app"}]}}));
        assert!(i.pod["metadata"]["annotations"]["agentmesh.dev/status"].is_string());
        let i = injected(json!({"metadata": null, "spec": {"containers": [{"name": "app"}]}}));
        assert!(i.pod["metadata"]["annotations"]["agentmesh.dev/status"].is_string());
    }

    #[test]
    fn a_pod_without_spec_is_an_error() {
        let err = inject_pod(&json!({"metadata": {}}), &context(), &settings());
        assert!(matches!(err, Err(InjectError::NotAPod(_))));
    }
}
