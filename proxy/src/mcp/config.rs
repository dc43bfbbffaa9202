//! Compiles an `mcp` backend resource into an [`McpBackend`]: validates target names and
//! URLs, builds one pooled upstream client per target, loads the session key.
//!
//! Errors are `(field, reason)` pairs with the field relative to the backend's `mcp`
//! block; `config::compile` names the resource.

use std::sync::Arc;
use std::time::Duration;

use agentmesh_proto::config::v1 as pb;
use http::HeaderValue;
use http::uri::{PathAndQuery, Scheme, Uri};

use super::session::{self, SessionCipher};
use super::upstream::Target;
use super::{BackendState, FailureMode, McpBackend, Naming, names};
use crate::http::upstream::UpstreamPool;

/// Idle timeout of client sessions when none is configured.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A problem with one field: `(field, reason)`.
pub type FieldProblem = (String, String);

/// Compiles backend `key`'s `mcp` block. Target clients come from `upstreams`, keyed
/// `<backend>/<target>`.
pub fn compile(
    key: &str,
    spec: &pb::McpBackend,
    upstreams: &UpstreamPool,
) -> Result<McpBackend, Vec<FieldProblem>> {
    let mut problems = Vec::new();
    if spec.targets.is_empty() {
        problems.push((
            "targets".into(),
            "an mcp backend needs at least one target".into(),
        ));
    }
    let mut targets: Vec<Arc<Target>> = Vec::new();
    for (i, t) in spec.targets.iter().enumerate() {
        let field = |f: &str| format!("targets[{i}].{f}");
        if !names::valid_target_name(&t.name) {
            problems.push((
                field("name"),
                format!("{:?} must be 1-63 characters among a-z, 0-9 and -", t.name),
            ));
            continue;
        }
        if targets.iter().any(|x| *x.name == *t.name) {
            problems.push((
                field("name"),
                format!("{:?} is used by another target", t.name),
            ));
            continue;
        }
        match target(key, t, upstreams) {
            Ok(target) => targets.push(Arc::new(target)),
            Err(reason) => problems.push((field("url"), reason)),
        }
    }
    let naming = match pb::McpPrefixMode::try_from(spec.prefix_mode) {
        Ok(pb::McpPrefixMode::Always) => Naming::Prefixed,
        Ok(pb::McpPrefixMode::Never) => Naming::Plain,
        Ok(pb::McpPrefixMode::WhenMultiple) if spec.targets.len() > 1 => Naming::Prefixed,
        Ok(pb::McpPrefixMode::WhenMultiple) => Naming::Plain,
        Err(_) => {
            problems.push((
                "prefixMode".into(),
                format!("unknown value {}", spec.prefix_mode),
            ));
            Naming::Prefixed
        }
    };
    let failure_mode = match pb::McpFailureMode::try_from(spec.failure_mode) {
        Ok(pb::McpFailureMode::FailClosed) => FailureMode::Closed,
        Ok(pb::McpFailureMode::FailOpen) => FailureMode::Open,
        Err(_) => {
            problems.push((
                "failureMode".into(),
                format!("unknown value {}", spec.failure_mode),
            ));
            FailureMode::Closed
        }
    };
    let sessions = spec.sessions.clone().unwrap_or_default();
    let key_bytes = if sessions.key_file.is_empty() {
        Some(session::generated_key())
    } else {
        session::read_key_file(&sessions.key_file)
            .map_err(|e| problems.push(("sessions.keyFile".into(), e)))
            .ok()
    };
    let idle = match sessions.idle_timeout.map(Duration::try_from) {
        None => DEFAULT_IDLE_TIMEOUT,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(_) => {
            problems.push((
                "sessions.idleTimeout".into(),
                "must be a positive duration such as \"1800s\"".into(),
            ));
            DEFAULT_IDLE_TIMEOUT
        }
    };
    match key_bytes {
        Some(k) if problems.is_empty() => Ok(McpBackend {
            key: key.into(),
            targets,
            naming,
            failure_mode,
            cipher: SessionCipher::new(&k, key),
            state: BackendState::for_backend(key, idle),
        }),
        _ => Err(problems),
    }
}

fn target(backend: &str, t: &pb::McpTarget, upstreams: &UpstreamPool) -> Result<Target, String> {
    let uri: Uri = t
        .url
        .parse()
        .map_err(|_| format!("{:?} is not a URL", t.url))?;
    let tls = match uri.scheme() {
        Some(s) if *s == Scheme::HTTP => None,
        Some(s) if *s == Scheme::HTTPS => Some(pb::UpstreamTls::default()),
        _ => return Err(format!("{:?} must be an http:// or https:// URL", t.url)),
    };
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty() && !a.as_str().contains('@'))
        .ok_or_else(|| format!("{:?} must name a host (and no user info)", t.url))?;
    let port = authority
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let address = format!("{}:{port}", authority.host());
    let spec = pb::HostBackend {
        address,
        protocol: pb::UpstreamProtocol::Auto as i32,
        tls,
    };
    let client = upstreams
        .client(&format!("{backend}/{}", t.name), &spec)
        .map_err(|e| e.to_string())?;
    let host = HeaderValue::from_str(authority.as_str())
        .map_err(|_| format!("{:?} has an invalid host", t.url))?;
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Ok(Target::new(&t.name, &t.url, client, host, path))
}
