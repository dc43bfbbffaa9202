//! Server-side apply of arbitrary objects (the gateway Deployments and Services the
//! controller renders), with field manager `agentmesh-controller`.
//!
//! Apply is declarative: the object sent is the whole intent of this field manager, so
//! applying the same rendering twice changes nothing, and fields set by others (an HPA's
//! `replicas`, say) are left alone. Conflicts with other managers are forced: the
//! controller owns what it renders.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::Scope;

use super::FIELD_MANAGER;

/// Why an object could not be applied; each names the object.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The object lacks `apiVersion`, `kind` or `metadata.name`.
    #[error("cannot apply {object}: field {field} is required")]
    Incomplete {
        /// What the object is, as far as it says.
        object: String,
        /// The missing field.
        field: &'static str,
    },
    /// The API server does not serve the kind.
    #[error("cannot apply {object}: the API server does not serve {api_version} {kind}: {source}")]
    UnknownKind {
        /// The object.
        object: String,
        /// Its `apiVersion`.
        api_version: String,
        /// Its `kind`.
        kind: String,
        /// What discovery said.
        source: kube::Error,
    },
    /// The API server refused the apply.
    #[error("cannot apply {object}: {source}")]
    Refused {
        /// The object.
        object: String,
        /// What the API server said.
        source: kube::Error,
    },
}

/// Applies `object` (a complete manifest: `apiVersion`, `kind`, `metadata.name`, and
/// `metadata.namespace` for namespaced kinds, else `default`). The kind is resolved by
/// discovery; returns the object as stored.
pub async fn apply(
    client: &kube::Client,
    object: &serde_json::Value,
) -> Result<DynamicObject, ApplyError> {
    let text = |field: &str| object.get(field).and_then(|v| v.as_str()).unwrap_or("");
    let name = object["metadata"]["name"].as_str().unwrap_or("");
    let described = format!("{} {:?}", text("kind"), name);
    for (field, value) in [
        ("apiVersion", text("apiVersion")),
        ("kind", text("kind")),
        ("metadata.name", name),
    ] {
        if value.is_empty() {
            return Err(ApplyError::Incomplete {
                object: described,
                field,
            });
        }
    }
    let (group, version) = text("apiVersion")
        .rsplit_once('/')
        .unwrap_or(("", text("apiVersion")));
    let gvk = GroupVersionKind::gvk(group, version, text("kind"));
    let (resource, capabilities) =
        kube::discovery::pinned_kind(client, &gvk)
            .await
            .map_err(|source| ApplyError::UnknownKind {
                object: described.clone(),
                api_version: text("apiVersion").into(),
                kind: text("kind").into(),
                source,
            })?;
    apply_as(
        client,
        &resource,
        capabilities.scope == Scope::Namespaced,
        object,
    )
    .await
}

/// Applies `object` as a `resource` already known (no discovery round trip).
pub async fn apply_as(
    client: &kube::Client,
    resource: &ApiResource,
    namespaced: bool,
    object: &serde_json::Value,
) -> Result<DynamicObject, ApplyError> {
    let name = object["metadata"]["name"].as_str().unwrap_or("");
    let api: Api<DynamicObject> = if namespaced {
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        Api::namespaced_with(client.clone(), namespace, resource)
    } else {
        Api::all_with(client.clone(), resource)
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &params, &Patch::Apply(object))
        .await
        .map_err(|source| ApplyError::Refused {
            object: format!("{} {name:?}", resource.kind),
            source,
        })
}
