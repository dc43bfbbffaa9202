//! Pod volumes as local directories, filled the way the kubelet fills them.
//!
//! Supported: `emptyDir`, `configMap`, `secret`, and `projected` with
//! `serviceAccountToken`, `configMap` and `secret` sources. The objects and tokens come
//! from [`ApiObjects`], what the test's "API server" holds; a token is issued only for an
//! audience the test registered (in folder mode the controller accepts one shared token,
//! so a test registers that token for the audience the controller is meant to check).
//! Any other volume kind or source is refused, naming it.
//!
//! This module writes files under the pod's directory; mounting them into containers is
//! [`super::container`]'s job.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{KeyToPath, Pod, Volume};

use super::KubeletError;

/// What the API server holds for the kubelet: ConfigMaps and Secrets by namespace and
/// name, and the token it issues for each audience (TokenRequest).
#[derive(Debug, Clone, Default)]
pub struct ApiObjects {
    config_maps: BTreeMap<(String, String), BTreeMap<String, String>>,
    secrets: BTreeMap<(String, String), BTreeMap<String, String>>,
    tokens: BTreeMap<String, String>,
}

impl ApiObjects {
    /// Adds a ConfigMap.
    pub fn config_map(mut self, namespace: &str, name: &str, data: &[(&str, &str)]) -> Self {
        self.config_maps
            .insert((namespace.into(), name.into()), to_map(data));
        self
    }

    /// Adds a Secret (values as text).
    pub fn secret(mut self, namespace: &str, name: &str, data: &[(&str, &str)]) -> Self {
        self.secrets
            .insert((namespace.into(), name.into()), to_map(data));
        self
    }

    /// The token projected service-account tokens with `audience` receive.
    pub fn token(mut self, audience: &str, token: &str) -> Self {
        self.tokens.insert(audience.into(), token.into());
        self
    }

    /// One key of a ConfigMap or Secret, for `configMapKeyRef` / `secretKeyRef`.
    pub(super) fn key(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Option<&str> {
        self.object(kind, namespace, name)?
            .get(key)
            .map(String::as_str)
    }

    fn object(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> Option<&BTreeMap<String, String>> {
        let map = match kind {
            ObjectKind::ConfigMap => &self.config_maps,
            ObjectKind::Secret => &self.secrets,
        };
        map.get(&(namespace.to_string(), name.to_string()))
    }
}

fn to_map(data: &[(&str, &str)]) -> BTreeMap<String, String> {
    data.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A ConfigMap or a Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ObjectKind {
    /// `ConfigMap`.
    ConfigMap,
    /// `Secret`.
    Secret,
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ObjectKind::ConfigMap => "ConfigMap",
            ObjectKind::Secret => "Secret",
        })
    }
}

/// Kubernetes' default file mode of configMap, secret and projected volumes.
const DEFAULT_MODE: u32 = 0o644;

/// Creates every volume of `pod` under `dir` (one directory per volume) and returns
/// their paths by volume name.
pub(super) fn prepare(
    pod: &Pod,
    api: &ApiObjects,
    dir: &Path,
) -> Result<BTreeMap<String, PathBuf>, KubeletError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = BTreeMap::new();
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    for volume in volumes {
        let path = dir.join(&volume.name);
        mkdir(&path, 0o755)?;
        fill(volume, namespace, api, &path)?;
        out.insert(volume.name.clone(), path);
    }
    Ok(out)
}

fn fill(
    volume: &Volume,
    namespace: &str,
    api: &ApiObjects,
    path: &Path,
) -> Result<(), KubeletError> {
    let unsupported = |what: String| KubeletError::Unsupported {
        at: format!("volume {}", volume.name),
        what,
    };
    if volume.empty_dir.is_some() {
        // World-writable, as the kubelet makes an emptyDir.
        return set_mode(path, 0o777);
    }
    if let Some(cm) = &volume.config_map {
        let optional = cm.optional.unwrap_or(false);
        let mode = mode(cm.default_mode);
        return write_object(
            api,
            ObjectKind::ConfigMap,
            namespace,
            &cm.name,
            cm.items.as_deref(),
            optional,
            mode,
            path,
        );
    }
    if let Some(secret) = &volume.secret {
        let name = secret
            .secret_name
            .as_deref()
            .ok_or_else(|| unsupported("a secret volume without secretName".into()))?;
        let optional = secret.optional.unwrap_or(false);
        let mode = mode(secret.default_mode);
        return write_object(
            api,
            ObjectKind::Secret,
            namespace,
            name,
            secret.items.as_deref(),
            optional,
            mode,
            path,
        );
    }
    if let Some(projected) = &volume.projected {
        let mode = mode(projected.default_mode);
        for source in projected.sources.as_deref().unwrap_or_default() {
            if let Some(token) = &source.service_account_token {
                let audience = token.audience.as_deref().ok_or_else(|| {
                    unsupported(
                        "a serviceAccountToken without audience (the API server's own)".into(),
                    )
                })?;
                let value = api
                    .tokens
                    .get(audience)
                    .ok_or_else(|| KubeletError::NoToken {
                        volume: volume.name.clone(),
                        audience: audience.to_string(),
                    })?;
                write_file(&path.join(&token.path), value, mode)?;
            } else if let Some(cm) = &source.config_map {
                write_object(
                    api,
                    ObjectKind::ConfigMap,
                    namespace,
                    &cm.name,
                    cm.items.as_deref(),
                    cm.optional.unwrap_or(false),
                    mode,
                    path,
                )?;
            } else if let Some(secret) = &source.secret {
                write_object(
                    api,
                    ObjectKind::Secret,
                    namespace,
                    &secret.name,
                    secret.items.as_deref(),
                    secret.optional.unwrap_or(false),
                    mode,
                    path,
                )?;
            } else {
                return Err(unsupported(
                    "a projected source other than serviceAccountToken, configMap or secret".into(),
                ));
            }
        }
        return Ok(());
    }
    Err(unsupported(
        "a volume kind other than emptyDir, configMap, secret or projected".into(),
    ))
}

fn mode(m: Option<i32>) -> u32 {
    m.and_then(|m| u32::try_from(m).ok())
        .unwrap_or(DEFAULT_MODE)
}

#[allow(clippy::too_many_arguments)]
fn write_object(
    api: &ApiObjects,
    kind: ObjectKind,
    namespace: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: bool,
    mode: u32,
    dir: &Path,
) -> Result<(), KubeletError> {
    let Some(data) = api.object(kind, namespace, name) else {
        return if optional {
            Ok(())
        } else {
            Err(KubeletError::MissingObject {
                kind: kind.to_string(),
                name: format!("{namespace}/{name}"),
                key: None,
            })
        };
    };
    match items {
        None => {
            for (key, value) in data {
                write_file(&dir.join(key), value, mode)?;
            }
        }
        Some(items) => {
            for item in items {
                let value = data
                    .get(&item.key)
                    .ok_or_else(|| KubeletError::MissingObject {
                        kind: kind.to_string(),
                        name: format!("{namespace}/{name}"),
                        key: Some(item.key.clone()),
                    })?;
                let item_mode = item
                    .mode
                    .and_then(|m| u32::try_from(m).ok())
                    .unwrap_or(mode);
                write_file(&dir.join(&item.path), value, item_mode)?;
            }
        }
    }
    Ok(())
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> KubeletError {
    move |source| KubeletError::Io { what, source }
}

fn mkdir(path: &Path, mode: u32) -> Result<(), KubeletError> {
    std::fs::create_dir_all(path).map_err(io(format!("create {}", path.display())))?;
    set_mode(path, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), KubeletError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("chmod {}", path.display())))
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), KubeletError> {
    if let Some(parent) = path.parent() {
        mkdir(parent, 0o755)?;
    }
    std::fs::write(path, text).map_err(io(format!("write {}", path.display())))?;
    set_mode(path, mode)
}
