//! `initialize` across the targets of a backend: one upstream session per target at a
//! protocol version every target speaks, and the merged offer.
//!
//! Version narrowing: a client asks for version R. Every target is initialized at R; a
//! target answering another version does not speak R (the specification has a server
//! answer the version it prefers instead). The gateway then tries the oldest version a
//! target answered that is older than the one tried (or, when every answer is newer,
//! the newest answered), initializing again only the targets not at it, until all
//! agree or no untried version is left. The client gets R when every target speaks it,
//! else the newest version they share (and decides, as the specification says, whether
//! to go on with it). Sessions opened at a version not kept are ended. Targets of the
//! 2026-07-28 style have no handshake version: the gateway speaks that style to them
//! whatever the client negotiated, so they take no part.
//!
//! A requested version the gateway does not speak, or targets that share none, get the
//! error the specification's lifecycle shows: `-32602` "Unsupported protocol version"
//! with `data.supported` and `data.requested`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::join_all;
use serde_json::{Value, json};

use super::envelope::is_modern_version;
use super::federation::{Ctx, outcome_of};
use super::items::merge_offers;
use super::jsonrpc::McpError;
use super::session::SessionState;
use super::upstream::{Target, UpstreamSession};
use super::{McpBackend, SUPPORTED_VERSIONS};

/// What one target's `initialize` gave: its session and result, or why it failed.
type Opened = Result<(UpstreamSession, Value), McpError>;

impl Ctx<'_> {
    /// `initialize`: one upstream session per target at a version they all speak,
    /// merged capabilities and instructions. Returns the result and the new client
    /// session id.
    pub async fn initialize(&self, params: Option<&Value>) -> Result<(Value, String), McpError> {
        let (result, state) = self.handshake(params).await?;
        Ok((result, self.backend.cipher.seal(&state)))
    }

    /// `initialize` without issuing a session id: the result and what the id would
    /// carry (the negotiated version and the upstream sessions opened).
    pub async fn handshake(
        &self,
        params: Option<&Value>,
    ) -> Result<(Value, SessionState), McpError> {
        let requested = params
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                McpError::InvalidParams("initialize needs params.protocolVersion".into())
            })?;
        let Some(&requested) = SUPPORTED_VERSIONS.iter().find(|v| **v == requested) else {
            return Err(McpError::NoCommonVersion {
                requested: requested.to_owned(),
                supported: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
                detail: "the gateway does not speak it".into(),
            });
        };
        let (version, opened) = self.narrow(requested).await;
        let mut upstreams = Vec::new();
        let mut results = Vec::new();
        let mut disagree = Vec::new();
        let mut failed = None;
        for (t, r) in self.backend.targets.iter().zip(opened) {
            match self.absorb(t, "initialize", r) {
                Ok(Some((up, result))) => {
                    if !is_modern_version(&up.version) && up.version != version {
                        disagree.push(format!("{} answers {}", t.name, up.version));
                    }
                    upstreams.push(up);
                    results.push((t, result));
                }
                Ok(None) => continue,
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            // Fail closed: the sessions the other targets opened are not used.
            end_sessions(self.backend, upstreams, self.timeout);
            return Err(e);
        }
        if !disagree.is_empty() {
            tracing::warn!(backend = %self.backend.key, requested, targets = %disagree.join(", "), "MCP targets share no protocol version");
            end_sessions(self.backend, upstreams, self.timeout);
            return Err(McpError::NoCommonVersion {
                requested: requested.to_owned(),
                supported: Vec::new(),
                detail: format!("the targets share none ({})", disagree.join(", ")),
            });
        }
        if version != requested {
            tracing::info!(backend = %self.backend.key, requested, negotiated = version, "protocol version narrowed to one every target speaks");
        }
        for (t, r) in &results {
            self.backend.state.remember_offer(&t.name, r);
        }
        let (caps, instructions) = merge_offers(&self.backend.targets, &results);
        let mut result = json!({
            "protocolVersion": version,
            "capabilities": caps,
            "serverInfo": { "name": &*self.backend.key, "version": env!("CARGO_PKG_VERSION") },
        });
        if let Some(text) = instructions {
            result["instructions"] = json!(text);
        }
        let state = SessionState {
            version: version.to_owned(),
            upstreams,
        };
        Ok((result, state))
    }

    /// Initializes every target, narrowing the version as the module comment says.
    /// Returns the version last tried and each target's outcome, in target order.
    async fn narrow(&self, requested: &'static str) -> (&'static str, Vec<Opened>) {
        let targets = &self.backend.targets;
        let mut opened: Vec<Option<Opened>> = targets.iter().map(|_| None).collect();
        let mut version = requested;
        let mut tried = HashSet::new();
        let mut abandoned = Vec::new();
        // Each round tries a new version; there are only so many.
        for _ in 0..=SUPPORTED_VERSIONS.len() {
            tried.insert(version);
            let todo: Vec<usize> = (0..targets.len())
                .filter(|&i| match &opened[i] {
                    None => true,
                    Some(Ok((up, _))) => !is_modern_version(&up.version) && up.version != version,
                    Some(Err(_)) => false,
                })
                .collect();
            if todo.is_empty() {
                break;
            }
            let round = join_all(todo.iter().map(|&i| self.open(&targets[i], version))).await;
            for (&i, r) in todo.iter().zip(round) {
                if let Some(Ok((old, _))) = opened[i].replace(r) {
                    abandoned.push(old);
                }
            }
            let answers: Vec<&'static str> = opened
                .iter()
                .filter_map(|o| match o {
                    Some(Ok((up, _))) if !is_modern_version(&up.version) => SUPPORTED_VERSIONS
                        .iter()
                        .find(|v| **v == up.version)
                        .copied(),
                    _ => None,
                })
                .filter(|v| *v != version)
                .collect();
            match next_version(version, &answers, &tried) {
                Some(v) => version = v,
                None => break,
            }
        }
        end_sessions(self.backend, abandoned, self.timeout);
        (version, opened.into_iter().flatten().collect())
    }

    /// One target's `initialize` at `version`, counted.
    async fn open(&self, t: &Arc<Target>, version: &str) -> Opened {
        let start = Instant::now();
        let r = if self.backend.stateless {
            t.open_stateless(version, self.timeout).await
        } else {
            t.initialize(version, self.timeout).await
        };
        let r = r.map_err(|error| McpError::Target {
            target: t.name.clone(),
            error,
        });
        if let Ok((up, _)) = &r {
            self.count_fallback(t, up);
        }
        self.count(
            t,
            "initialize",
            "".into(),
            outcome_of(&r.as_ref().map(|(_, v)| v)),
            start,
        );
        r
    }
}

/// The version to try after `tried_now`, given the versions targets answered instead
/// (`answers`, all other than `tried_now`): the oldest one older than `tried_now`, else
/// the newest one; `None` when there is none or it was tried already.
fn next_version(
    tried_now: &str,
    answers: &[&'static str],
    tried: &HashSet<&'static str>,
) -> Option<&'static str> {
    // Versions are dates: their order is the string order.
    let older = answers.iter().filter(|v| **v < tried_now).min();
    older
        .or_else(|| answers.iter().max())
        .copied()
        .filter(|v| !tried.contains(v))
}

/// Ends upstream sessions the gateway will not use, in the background.
pub(super) fn end_sessions(
    backend: &McpBackend,
    sessions: Vec<UpstreamSession>,
    timeout: std::time::Duration,
) {
    let ending: Vec<(Arc<Target>, UpstreamSession)> = sessions
        .into_iter()
        .filter_map(|up| Some((backend.target(&up.target)?.clone(), up)))
        .collect();
    if ending.is_empty() {
        return;
    }
    tokio::spawn(async move {
        join_all(ending.iter().map(|(t, up)| async move {
            if let Err(e) = t.end(up, timeout).await {
                tracing::debug!(target = %t.name, error = %e, "upstream session not ended");
            }
        }))
        .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_goes_down_to_the_oldest_answer_then_gives_up_on_a_cycle() {
        let none = HashSet::new();
        // Two targets answered older versions: the oldest is the only one both may speak.
        assert_eq!(
            next_version("2025-11-25", &["2025-03-26", "2024-11-05"], &none),
            Some("2024-11-05")
        );
        // Every answer newer (the client asked an old version): try the newest.
        assert_eq!(
            next_version("2024-11-05", &["2025-06-18", "2025-11-25"], &none),
            Some("2025-11-25")
        );
        // Agreement, or a version tried already: stop.
        assert_eq!(next_version("2025-06-18", &[], &none), None);
        let tried = HashSet::from(["2024-11-05", "2025-11-25"]);
        assert_eq!(next_version("2024-11-05", &["2025-11-25"], &tried), None);
    }
}
