//! The local config file: parsing (YAML or JSON) and flattening into resources.
//!
//! The file is a nested view of the resource model (binds hold listeners, listeners hold
//! routes, policies may be written inline). [`flatten`] moves every nested resource to
//! the top level, derives its key from the names on its path and fills in its parent
//! reference, so the compiler sees exactly what the controller would send over xDS. This
//! module knows nothing about what the resources mean; `compile` validates them.

use std::path::Path;

use agentmesh_proto::config::v1::{
    Backend, Bind, Listener, LocalConfig, Policy, PolicySpec, PolicyTarget, ProxySettings, Route,
    policy_target,
};

use super::ConfigError;

/// The resources of one configuration, flat, with keys and parent references filled in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// Process-wide settings.
    pub settings: ProxySettings,
    /// Sidecar-mode settings.
    pub sidecar: Option<agentmesh_proto::config::v1::SidecarSettings>,
    /// Binds, without their nested listeners.
    pub binds: Vec<Bind>,
    /// Listeners, each naming its bind, without nested routes or policies.
    pub listeners: Vec<Listener>,
    /// Routes, each naming its listener, without inline policies.
    pub routes: Vec<Route>,
    /// Backends, without inline policies.
    pub backends: Vec<Backend>,
    /// Policies, inline ones included, each with its target.
    pub policies: Vec<Policy>,
}

/// Reads and parses a config file; `.json` files are parsed as JSON, anything else as YAML.
pub fn load(path: &Path) -> Result<LocalConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let mut config = parse(&text, is_json).map_err(|e| e.in_file(path))?;
    if let Some(dir) = path.parent() {
        resolve_paths(&mut config, dir);
    }
    Ok(config)
}

/// Makes relative file paths in the config (certificates, keys, CA bundles) relative to
/// the directory of the config file, so a config works whatever the working directory.
pub fn resolve_paths(config: &mut LocalConfig, dir: &Path) {
    let fix = |p: &mut String| {
        if !p.is_empty() && Path::new(p.as_str()).is_relative() {
            *p = dir.join(p.as_str()).display().to_string();
        }
    };
    for bind in &mut config.binds {
        for listener in &mut bind.listeners {
            for cert in listener
                .tls
                .iter_mut()
                .flat_map(|t| t.certificates.iter_mut())
            {
                fix(&mut cert.cert_file);
                fix(&mut cert.key_file);
            }
        }
    }
    for backend in &mut config.backends {
        if let Some(agentmesh_proto::config::v1::backend::Kind::Host(host)) = &mut backend.kind
            && let Some(tls) = &mut host.tls
        {
            fix(&mut tls.ca_file);
            fix(&mut tls.cert_file);
            fix(&mut tls.key_file);
        }
        if let Some(agentmesh_proto::config::v1::backend::Kind::Mcp(mcp)) = &mut backend.kind
            && let Some(sessions) = &mut mcp.sessions
        {
            fix(&mut sessions.key_file);
        }
    }
    if let Some(sidecar) = &mut config.sidecar {
        if let Some(ca) = &mut sidecar.mesh_ca {
            fix(&mut ca.cert_file);
            fix(&mut ca.key_file);
        }
        for rule in &mut sidecar.egress {
            fix(&mut rule.ca_file);
        }
    }
}

/// Parses config text. Unknown fields, wrong types and malformed values are errors that
/// name the path of the offending field (`binds[0].listeners[1].routes[0].matches`).
pub fn parse(text: &str, json: bool) -> Result<LocalConfig, ConfigError> {
    if json {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| ConfigError::Parse {
            file: None,
            path: e.path().to_string(),
            reason: without_path_prefix(e.into_inner().to_string()),
        })
    } else {
        if text.trim().is_empty() {
            return Ok(LocalConfig::default());
        }
        let de = serde_norway::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Parse {
            file: None,
            path: e.path().to_string(),
            reason: without_path_prefix(e.into_inner().to_string()),
        })
    }
}

/// Drops a leading `some.path[0]: ` from a parser message: the error already carries the
/// (more precise) path of the field.
fn without_path_prefix(reason: String) -> String {
    match reason.split_once(": ") {
        Some((head, rest))
            if !head.is_empty()
                && head
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._[]".contains(c)) =>
        {
            rest.to_string()
        }
        _ => reason,
    }
}

/// Turns the nested file view into flat resources.
pub fn flatten(config: LocalConfig) -> Resources {
    let mut out = Resources {
        settings: config.settings.unwrap_or_default(),
        sidecar: config.sidecar,
        ..Resources::default()
    };
    let inline = |spec: PolicySpec, target: policy_target::Kind, owner: &str| Policy {
        key: format!("{owner}/policy"),
        name: String::new(),
        target: Some(PolicyTarget { kind: Some(target) }),
        spec: Some(spec),
    };
    for mut bind in config.binds {
        if bind.key.is_empty() {
            bind.key = bind.name.clone();
        }
        for mut listener in std::mem::take(&mut bind.listeners) {
            if listener.key.is_empty() {
                listener.key = format!("{}/{}", bind.key, listener.name);
            }
            listener.bind_key = bind.key.clone();
            for mut route in std::mem::take(&mut listener.routes) {
                if route.key.is_empty() {
                    route.key = format!("{}/{}", listener.key, route.name);
                }
                route.listener_key = listener.key.clone();
                if let Some(spec) = route.policies.take() {
                    let target = policy_target::Kind::Route(route.key.clone());
                    out.policies.push(inline(spec, target, &route.key));
                }
                out.routes.push(route);
            }
            if let Some(spec) = listener.policies.take() {
                let target = policy_target::Kind::Listener(listener.key.clone());
                out.policies.push(inline(spec, target, &listener.key));
            }
            out.listeners.push(listener);
        }
        out.binds.push(bind);
    }
    for mut backend in config.backends {
        if backend.key.is_empty() {
            backend.key = backend.name.clone();
        }
        if let Some(spec) = backend.policies.take() {
            let target = policy_target::Kind::Backend(backend.key.clone());
            out.policies.push(inline(spec, target, &backend.key));
        }
        out.backends.push(backend);
    }
    for mut policy in config.policies {
        if policy.key.is_empty() {
            policy.key = policy.name.clone();
        }
        out.policies.push(policy);
    }
    out
}

/// Rebuilds the nested file view from flat resources (for `config_dump`).
pub fn nest(resources: &Resources) -> LocalConfig {
    let mut binds: Vec<Bind> = resources.binds.clone();
    let inline_spec = |kind: &policy_target::Kind| {
        resources
            .policies
            .iter()
            .find(|p| {
                p.name.is_empty() && p.target.as_ref().and_then(|t| t.kind.as_ref()) == Some(kind)
            })
            .and_then(|p| p.spec.clone())
    };
    for bind in &mut binds {
        for listener in resources
            .listeners
            .iter()
            .filter(|l| l.bind_key == bind.key)
        {
            let mut listener = listener.clone();
            for route in resources
                .routes
                .iter()
                .filter(|r| r.listener_key == listener.key)
            {
                let mut route = route.clone();
                route.policies = inline_spec(&policy_target::Kind::Route(route.key.clone()));
                listener.routes.push(route);
            }
            listener.policies = inline_spec(&policy_target::Kind::Listener(listener.key.clone()));
            bind.listeners.push(listener);
        }
    }
    let backends = resources
        .backends
        .iter()
        .map(|b| {
            let mut b = b.clone();
            b.policies = inline_spec(&policy_target::Kind::Backend(b.key.clone()));
            b
        })
        .collect();
    LocalConfig {
        binds,
        backends,
        policies: resources
            .policies
            .iter()
            .filter(|p| !p.name.is_empty())
            .cloned()
            .collect(),
        settings: Some(resources.settings),
        sidecar: resources.sidecar.clone(),
    }
}
