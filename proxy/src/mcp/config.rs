//! Compiles an `mcp` backend resource into an [`McpBackend`]: validates target names,
//! URLs and stdio commands, builds one pooled upstream client per HTTP target, loads the
//! session key.
//!
//! Errors are `(field, reason)` pairs with the field relative to the backend's `mcp`
//! block; `config::compile` names the resource.

use std::sync::Arc;
use std::time::Duration;

use agentmesh_proto::config::v1 as pb;
use http::HeaderValue;
use http::uri::{PathAndQuery, Scheme, Uri};

use super::remote::{HttpAddress, RemoteTarget};
use super::session::{self, SessionCipher};
use super::stdio::{StdioMode, StdioSpec, StdioTarget};
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
    let idle = idle_timeout(spec, &mut problems);
    // Taken before validation ends, so targets can hold its process pool; a config that
    // fails leaves the live state untouched.
    let state = BackendState::for_backend(key, idle);
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
        match &t.transport {
            Some(pb::mcp_target::Transport::Url(url)) => {
                match http_address(key, &t.name, url, upstreams) {
                    Ok(addr) => targets.push(Arc::new(Target::http(RemoteTarget::new(
                        &t.name,
                        addr,
                        false,
                        state.sse.clone(),
                    )))),
                    Err(reason) => problems.push((field("url"), reason)),
                }
            }
            Some(pb::mcp_target::Transport::Sse(url)) => {
                match http_address(key, &t.name, url, upstreams) {
                    Ok(addr) => targets.push(Arc::new(Target::http(RemoteTarget::new(
                        &t.name,
                        addr,
                        true,
                        state.sse.clone(),
                    )))),
                    Err(reason) => problems.push((field("sse"), reason)),
                }
            }
            Some(pb::mcp_target::Transport::Stdio(stdio)) => match stdio_target(stdio) {
                Ok(spec) => targets.push(Arc::new(Target::stdio(StdioTarget::new(
                    &t.name,
                    spec,
                    state.stdio.clone(),
                )))),
                Err((f, reason)) => problems.push((field(&format!("stdio.{f}")), reason)),
            },
            None => problems.push((
                field("url"),
                "a target needs a url (streamable HTTP), sse (legacy HTTP+SSE) or stdio (a command)"
                    .into(),
            )),
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
    match key_bytes {
        Some(k) if problems.is_empty() => {
            state.set_idle_timeout(idle);
            Ok(McpBackend {
                key: key.into(),
                targets,
                naming,
                failure_mode,
                cipher: SessionCipher::new(&k, key),
                stateless: sessions.stateless,
                allowed_origins: spec
                    .allowed_origins
                    .iter()
                    .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                    .collect(),
                state,
            })
        }
        _ => Err(problems),
    }
}

fn idle_timeout(spec: &pb::McpBackend, problems: &mut Vec<FieldProblem>) -> Duration {
    let sessions = spec.sessions.clone().unwrap_or_default();
    match sessions.idle_timeout.map(Duration::try_from) {
        None => DEFAULT_IDLE_TIMEOUT,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(_) => {
            problems.push((
                "sessions.idleTimeout".into(),
                "must be a positive duration such as \"1800s\"".into(),
            ));
            DEFAULT_IDLE_TIMEOUT
        }
    }
}

fn stdio_target(s: &pb::McpStdio) -> Result<StdioSpec, (&'static str, String)> {
    if s.command.trim().is_empty() {
        return Err(("command", "a stdio target needs a command".into()));
    }
    if let Some(k) = s
        .env
        .keys()
        .find(|k| k.is_empty() || k.contains(['=', '\0']))
    {
        return Err(("env", format!("{k:?} is not an environment variable name")));
    }
    let mode = match pb::McpStdioMode::try_from(s.mode) {
        Ok(pb::McpStdioMode::PerSession) => StdioMode::PerSession,
        Ok(pb::McpStdioMode::Shared) => StdioMode::Shared,
        Err(_) => return Err(("mode", format!("unknown value {}", s.mode))),
    };
    let mut env: Vec<(String, String)> =
        s.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    env.sort();
    Ok(StdioSpec {
        command: s.command.clone(),
        args: s.args.clone(),
        env,
        mode,
    })
}

fn http_address(
    backend: &str,
    name: &str,
    url: &str,
    upstreams: &UpstreamPool,
) -> Result<HttpAddress, String> {
    let uri: Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    let tls = match uri.scheme() {
        Some(s) if *s == Scheme::HTTP => None,
        Some(s) if *s == Scheme::HTTPS => Some(pb::UpstreamTls::default()),
        _ => return Err(format!("{:?} must be an http:// or https:// URL", url)),
    };
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty() && !a.as_str().contains('@'))
        .ok_or_else(|| format!("{:?} must name a host (and no user info)", url))?;
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
        .client(&format!("{backend}/{}", name), &spec)
        .map_err(|e| e.to_string())?;
    let host = HeaderValue::from_str(authority.as_str())
        .map_err(|_| format!("{:?} has an invalid host", url))?;
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Ok(HttpAddress {
        url: url.to_owned(),
        client,
        scheme: uri.scheme().cloned().unwrap_or(Scheme::HTTP),
        authority: authority.clone(),
        host,
        path,
    })
}
