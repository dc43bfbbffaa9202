//! What each MCP method does across the targets of a backend, and what every request
//! to a target goes through: list methods fan out in parallel and merge pages under a
//! composite cursor; each request to a target gets an upstream id of the gateway's own,
//! its upstream session, one transparent re-initialization when the target lost it,
//! and is counted. Failing targets are left out or fail the request as the backend's
//! failure mode says.
//!
//! Beside it: `handshake` (`initialize`, version narrowing across targets) and
//! `routing` (requests about one item, routed to the target owning it).
//!
//! Upstream sessions come from the client's session id, or from the session table when
//! one was opened later (or, in stateless mode, from the request itself); a target
//! that lost its session is re-initialized once, transparently, and the client keeps
//! its session id.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use serde_json::{Value, json};

use super::authz::{self, Caller, Decision};
pub use super::items::ListKind;
use super::jsonrpc::{self, McpError, code};
use super::metrics::{McpMetrics, McpRequest, method_label};
use super::names::{self, Cursor};
use super::relay::{self, ClientStream, Relay};
use super::session::SessionState;
use super::upstream::{Target, TargetError, UpstreamSession};
use super::{FailureMode, McpBackend, Naming, SUPPORTED_VERSIONS};

/// A client session, opened for one request.
#[derive(Debug, Clone)]
pub struct Session {
    /// The client-facing id.
    pub id: String,
    /// What the id carries.
    pub state: SessionState,
    /// Upstream sessions opened after the id was issued, by target.
    pub later: HashMap<String, UpstreamSession>,
    /// Stateless mode: the upstream sessions opened for this one request, to end after
    /// it ([`Session::finish`]); none is remembered anywhere else.
    pub scratch: Option<Arc<Mutex<Vec<UpstreamSession>>>>,
}

impl Session {
    /// A session the gateway holds itself for clients without sessions (2026-07-28
    /// style): no upstream sessions in its id, every one opened later, at the newest
    /// session-style version.
    pub fn held(id: String, later: HashMap<String, UpstreamSession>) -> Session {
        Session {
            id,
            state: SessionState {
                version: SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1].to_owned(),
                upstreams: Vec::new(),
            },
            later,
            scratch: None,
        }
    }

    /// A session for one request of stateless mode: upstream sessions opened at
    /// `version` as the request needs them, and ended by [`Session::finish`].
    pub fn stateless(version: &str) -> Session {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Session {
            id: format!("stateless:{}", NEXT.fetch_add(1, Ordering::Relaxed)),
            state: SessionState {
                version: version.to_owned(),
                upstreams: Vec::new(),
            },
            later: HashMap::new(),
            scratch: Some(Arc::default()),
        }
    }

    /// The upstream session with `target`, if there is one.
    pub fn upstream(&self, target: &str) -> Option<UpstreamSession> {
        if let Some(scratch) = &self.scratch {
            let opened = scratch.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(up) = opened.iter().rev().find(|u| u.target == target) {
                return Some(up.clone());
            }
        }
        self.later
            .get(target)
            .or_else(|| self.state.upstreams.iter().find(|u| u.target == target))
            .cloned()
    }

    /// Stateless mode: ends, in the background, the upstream sessions this request
    /// opened. Nothing to do for other sessions.
    pub fn finish(&self, backend: &McpBackend, timeout: Duration) {
        if let Some(scratch) = &self.scratch {
            let opened =
                std::mem::take(&mut *scratch.lock().unwrap_or_else(PoisonError::into_inner));
            super::handshake::end_sessions(backend, opened, timeout);
        }
    }
}

/// Everything one MCP request needs.
pub struct Ctx<'a> {
    /// The backend.
    pub backend: &'a Arc<McpBackend>,
    /// Where to count.
    pub metrics: &'a McpMetrics,
    /// Who asks.
    pub caller: Caller<'a>,
    /// Time limit of each request to a target.
    pub timeout: Duration,
    /// The client's response stream, when it takes messages besides the response
    /// (progress, logs, server-to-client requests).
    pub relay: Option<ClientStream>,
}

impl Ctx<'_> {
    /// Any request of a session but `initialize` and `ping`: a list, a broadcast or a
    /// routed request.
    pub async fn serve(
        &self,
        session: &Session,
        method: &str,
        id: &Value,
        params: Option<Value>,
    ) -> Result<Value, McpError> {
        match ListKind::of(method) {
            Some(kind) => self.list(session, kind, id, params).await,
            None if method == "logging/setLevel" => {
                self.broadcast(session, method, id, params).await
            }
            None => self.route(session, method, id, params).await,
        }
    }

    /// A list method, fanned out to every target (or, on a later page, to those the
    /// cursor names) and merged.
    pub async fn list(
        &self,
        session: &Session,
        kind: ListKind,
        id: &Value,
        params: Option<Value>,
    ) -> Result<Value, McpError> {
        let mut params = params.unwrap_or_else(|| json!({}));
        let plan: Vec<(&Arc<Target>, Option<String>)> = match params
            .as_object_mut()
            .and_then(|p| p.remove("cursor"))
        {
            None | Some(Value::Null) => self.backend.targets.iter().map(|t| (t, None)).collect(),
            Some(Value::String(c)) => {
                let cursor = Cursor::decode(&c)
                    .ok_or_else(|| McpError::InvalidParams("invalid cursor".into()))?;
                self.backend
                    .targets
                    .iter()
                    .filter_map(|t| Some((t, Some(cursor.targets.get(&*t.name)?.clone()))))
                    .collect()
            }
            Some(_) => return Err(McpError::InvalidParams("cursor must be a string".into())),
        };
        // Pages are merged as they arrive, in target order: by the time the slowest
        // target answers, the pages of the others are merged (and their leftovers
        // freed), so only its own page is left to do.
        let mut pages: FuturesOrdered<_> = plan
            .iter()
            .map(|(t, cursor)| {
                let mut p = params.clone();
                if let (Some(c), Some(obj)) = (cursor, p.as_object_mut()) {
                    obj.insert("cursor".into(), Value::String(c.clone()));
                }
                self.call(session, t, kind.method(), Some(p), id, "".into())
            })
            .collect();
        let (field, key) = kind.fields();
        let mut items = Vec::new();
        let mut seen = HashSet::new();
        let mut next = Cursor::default();
        let dedup = self.backend.naming == Naming::Plain && self.backend.targets.len() > 1;
        let mut order = plan.iter();
        while let Some(page) = pages.next().await {
            let Some((t, _)) = order.next() else { break };
            let mut page = match page {
                // A target without this feature has nothing to add.
                Err(McpError::TargetRpc { error, .. })
                    if error.get("code").and_then(Value::as_i64)
                        == Some(code::METHOD_NOT_FOUND) =>
                {
                    continue;
                }
                other => match self.absorb(t, kind.method(), other)? {
                    Some(page) => page,
                    None => continue,
                },
            };
            if let Some(c) = page.get("nextCursor").and_then(Value::as_str) {
                next.targets.insert(t.name.to_string(), c.to_owned());
            }
            // Taken out of the page, not cloned: the page is dropped right after.
            let Some(Value::Array(list)) = page.get_mut(field).map(Value::take) else {
                continue;
            };
            items.reserve(list.len());
            for mut item in list {
                // The name is taken out of the item and put back (rewritten when
                // prefixed): no copy of it in the plain case.
                let Some(slot) = item.get_mut(key) else {
                    continue;
                };
                let Value::String(name) = slot.take() else {
                    continue;
                };
                if authz::authorize(&self.caller, &t.name, kind.item(), &name) == Decision::Deny {
                    continue;
                }
                let exposed = self.expose(t, kind, name);
                if dedup {
                    let owner = self.backend.state.claim(
                        kind.item(),
                        &exposed,
                        &t.name,
                        &self.backend.targets,
                    );
                    if !owner || !seen.insert(exposed.clone()) {
                        tracing::debug!(backend = %self.backend.key, target = %t.name, name = exposed, "duplicate name hidden: an earlier target owns it");
                        continue;
                    }
                }
                if kind == ListKind::Tools {
                    self.backend.state.learn_tool(&exposed);
                }
                item[key] = Value::String(exposed);
                items.push(item);
            }
        }
        // Moved in, not through `json!`, which would deep-copy every item.
        let mut result = serde_json::Map::new();
        result.insert(field.into(), Value::Array(items));
        if let Some(c) = next.encode() {
            result.insert("nextCursor".into(), Value::String(c));
        }
        Ok(Value::Object(result))
    }

    /// The client-facing name of item `name` of `t`.
    fn expose(&self, t: &Target, kind: ListKind, name: String) -> String {
        match (self.backend.naming, kind) {
            (Naming::Plain, _) => name,
            (Naming::Prefixed, ListKind::Tools | ListKind::Prompts) => {
                names::prefixed(&t.name, &name)
            }
            (Naming::Prefixed, ListKind::Resources) => names::rewrite_uri(&t.name, &name),
            (Naming::Prefixed, ListKind::Templates) => names::rewrite_uri_template(&t.name, &name),
        }
    }

    /// One request to one target: an upstream id of the gateway's own (and the client's
    /// progress token swapped for it, see `relay`), upstream session, one
    /// re-initialization if the target lost it, metrics.
    pub(super) async fn call(
        &self,
        session: &Session,
        t: &Arc<Target>,
        method: &str,
        params: Option<Value>,
        id: &Value,
        tool: Arc<str>,
    ) -> Result<Value, McpError> {
        let start = Instant::now();
        let upstream_id = relay::next_upstream_id();
        let mut params = params;
        let token = relay::swap_progress_token(&mut params, &upstream_id);
        let msg = jsonrpc::request(&upstream_id, method, params);
        let relay = self.relay.as_ref().map(|to| {
            Relay::new(
                t.name.clone(),
                token.map(|c| (upstream_id.clone(), c)),
                self.backend.naming == Naming::Prefixed,
                to.clone(),
            )
        });
        let _inflight = self
            .backend
            .state
            .inflight
            .begin(&session.id, id, &t.name, &upstream_id);
        let result = async {
            let mut up = match session.upstream(&t.name) {
                Some(u) => u,
                None => self.reopen(session, t).await?,
            };
            let mut retried = false;
            loop {
                let err = |error| McpError::Target { target: t.name.clone(), error };
                match t.request(&up, &msg, &upstream_id, self.timeout, relay.as_ref()).await {
                    Ok(Ok(v)) => return Ok(v),
                    Ok(Err(error)) => return Err(McpError::TargetRpc { target: t.name.clone(), error }),
                    Err(TargetError::SessionGone) if !retried => {
                        tracing::info!(backend = %self.backend.key, target = %t.name, "upstream session lost; re-initializing");
                        retried = true;
                        up = self.reopen(session, t).await?;
                    }
                    Err(e) => return Err(err(e)),
                }
            }
        }
        .await;
        self.count(t, method, tool, outcome_of(&result.as_ref()), start);
        result
    }

    /// Opens a new upstream session for the client's session and remembers it.
    pub async fn reopen(
        &self,
        session: &Session,
        t: &Arc<Target>,
    ) -> Result<UpstreamSession, McpError> {
        let start = Instant::now();
        let r = match session.scratch {
            Some(_) => t.open_stateless(&session.state.version, self.timeout).await,
            None => t.initialize(&session.state.version, self.timeout).await,
        };
        self.count(
            t,
            "initialize",
            "".into(),
            if r.is_ok() { "ok" } else { "upstream_failed" },
            start,
        );
        let (up, offer) = r.map_err(|error| McpError::Target {
            target: t.name.clone(),
            error,
        })?;
        self.count_fallback(t, &up);
        self.backend.state.remember_offer(&t.name, &offer);
        match &session.scratch {
            // Stateless: for this request only, and not a re-initialization.
            Some(scratch) => scratch
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(up.clone()),
            None => {
                self.metrics
                    .record_upstream_init(&self.backend.key, &t.name);
                self.backend
                    .state
                    .sessions
                    .remember(&session.id, up.clone());
            }
        }
        Ok(up)
    }

    /// Applies the failure mode to one target's answer in a fan-out: `Ok(None)` leaves
    /// the target out.
    pub fn absorb<T>(
        &self,
        t: &Arc<Target>,
        method: &str,
        r: Result<T, McpError>,
    ) -> Result<Option<T>, McpError> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if self.backend.failure_mode == FailureMode::Open => {
                tracing::warn!(backend = %self.backend.key, target = %t.name, method, error = %e, "target left out of the answer (failOpen)");
                self.count(
                    t,
                    method_label(method),
                    "".into(),
                    "failed_open",
                    Instant::now(),
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Counts an upstream session opened over the other transport than configured.
    pub(super) fn count_fallback(&self, t: &Target, up: &UpstreamSession) {
        if up.sse != t.configured_sse() {
            self.metrics.record_fallback(
                &self.backend.key,
                &t.name,
                super::remote::transport_name(up.sse),
            );
        }
    }

    pub(super) fn count(
        &self,
        t: &Arc<Target>,
        method: &str,
        tool: Arc<str>,
        outcome: &'static str,
        start: Instant,
    ) {
        self.metrics.record(
            &McpRequest {
                backend: &self.backend.key,
                method: method_label(method),
                target: &t.name,
                tool,
                outcome,
            },
            start.elapsed(),
        );
    }
}

pub(super) fn outcome_of<T: std::borrow::Borrow<Value>>(r: &Result<T, &McpError>) -> &'static str {
    match r {
        Ok(v) if v.borrow().get("isError") == Some(&Value::Bool(true)) => "tool_error",
        Ok(_) => "ok",
        Err(e) => e.outcome(),
    }
}
