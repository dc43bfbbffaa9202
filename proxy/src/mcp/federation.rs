//! What each MCP method does across the targets of a backend: `initialize` opens one
//! upstream session per target and merges what they offer; list methods fan out in
//! parallel and merge pages under a composite cursor; calls route to the target owning
//! the name (or URI) with the prefix stripped. Failing targets are left out or fail the
//! request as the backend's failure mode says. Every request to a target is counted;
//! every tool call is logged.
//!
//! Upstream sessions come from the client's session id, or from the session table when
//! one was opened later; a target that lost its session is re-initialized once,
//! transparently, and the client keeps its session id.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{Value, json};

use super::authz::{self, Caller, Decision, ItemKind};
pub use super::items::ListKind;
use super::items::{merge_offers, rewrite_uris};
use super::jsonrpc::{self, McpError, code};
use super::metrics::{McpMetrics, McpRequest, method_label};
use super::names::{self, Cursor};
use super::relay::{self, ClientStream, Relay};
use super::session::SessionState;
use super::upstream::{Target, TargetError, UpstreamSession};
use super::{FailureMode, McpBackend, Naming, SUPPORTED_VERSIONS};

/// Pages fetched per target when looking for the owner of an unprefixed name.
const MAX_OWNER_PAGES: usize = 20;

/// A client session, opened for one request.
#[derive(Debug, Clone)]
pub struct Session {
    /// The client-facing id.
    pub id: String,
    /// What the id carries.
    pub state: SessionState,
    /// Upstream sessions opened after the id was issued, by target.
    pub later: HashMap<String, UpstreamSession>,
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
        }
    }

    /// The upstream session with `target`, if there is one.
    pub fn upstream(&self, target: &str) -> Option<&UpstreamSession> {
        self.later
            .get(target)
            .or_else(|| self.state.upstreams.iter().find(|u| u.target == target))
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
    /// `initialize`: one upstream session per target, merged capabilities and
    /// instructions. Returns the result and the new client session id.
    pub async fn initialize(&self, params: Option<&Value>) -> Result<(Value, String), McpError> {
        let requested = params
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                McpError::InvalidParams("initialize needs params.protocolVersion".into())
            })?;
        // A version we do not speak gets our latest; the client decides whether to go on.
        let version = SUPPORTED_VERSIONS
            .iter()
            .find(|v| **v == requested)
            .or(SUPPORTED_VERSIONS.last())
            .copied()
            .unwrap_or("2025-06-18");
        let opened = join_all(self.backend.targets.iter().map(|t| async move {
            let start = Instant::now();
            let r = t
                .initialize(version, self.timeout)
                .await
                .map_err(|error| McpError::Target {
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
        }))
        .await;
        let mut upstreams = Vec::new();
        let mut results = Vec::new();
        for (t, r) in self.backend.targets.iter().zip(opened) {
            match self.absorb(t, "initialize", r)? {
                Some((session, result)) => {
                    upstreams.push(session);
                    results.push((t, result));
                }
                None => continue,
            }
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
        let id = self.backend.cipher.seal(&SessionState {
            version: version.to_owned(),
            upstreams,
        });
        Ok((result, id))
    }

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
        let pages = join_all(plan.iter().map(|(t, cursor)| {
            let mut p = params.clone();
            if let (Some(c), Some(obj)) = (cursor, p.as_object_mut()) {
                obj.insert("cursor".into(), json!(c));
            }
            self.call(session, t, kind.method(), Some(p), id, "".into())
        }))
        .await;
        let (field, key) = kind.fields();
        let mut items = Vec::new();
        let mut seen = HashSet::new();
        let mut next = Cursor::default();
        for ((t, _), page) in plan.iter().zip(pages) {
            let page = match page {
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
            let Some(Value::Array(list)) = page.get(field) else {
                continue;
            };
            for mut item in list.iter().cloned() {
                let Some(name) = item.get(key).and_then(Value::as_str).map(str::to_owned) else {
                    continue;
                };
                if authz::authorize(&self.caller, &t.name, kind.item(), &name) == Decision::Deny {
                    continue;
                }
                let exposed = self.expose(t, kind, &name);
                if self.backend.naming == Naming::Plain && self.backend.targets.len() > 1 {
                    let owner = self.backend.state.claim(
                        kind.item(),
                        &name,
                        &t.name,
                        &self.backend.targets,
                    );
                    if !owner || !seen.insert(exposed.clone()) {
                        tracing::debug!(backend = %self.backend.key, target = %t.name, name, "duplicate name hidden: an earlier target owns it");
                        continue;
                    }
                }
                if kind == ListKind::Tools {
                    self.backend.state.learn_tool(&exposed);
                }
                item[key] = json!(exposed);
                items.push(item);
            }
        }
        let mut result = json!({ field: items });
        if let Some(c) = next.encode() {
            result["nextCursor"] = json!(c);
        }
        Ok(result)
    }

    /// A request about one named item, routed to the target that owns it.
    pub async fn route(
        &self,
        session: &Session,
        method: &str,
        id: &Value,
        params: Option<Value>,
    ) -> Result<Value, McpError> {
        const ROUTED: [&str; 6] = [
            "tools/call",
            "prompts/get",
            "resources/read",
            "resources/subscribe",
            "resources/unsubscribe",
            "completion/complete",
        ];
        if !ROUTED.contains(&method) {
            return Err(McpError::MethodNotFound(method.to_owned()));
        }
        let mut params =
            params.ok_or_else(|| McpError::InvalidParams(format!("{method} needs params")))?;
        let (target, kind, shown) = match method {
            "tools/call" | "prompts/get" => {
                let kind = if method == "tools/call" {
                    ListKind::Tools
                } else {
                    ListKind::Prompts
                };
                let shown = str_field(&params, "name")?;
                let (t, original) = self.resolve_name(session, kind, id, &shown).await?;
                params["name"] = json!(original);
                (t, kind, shown)
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                let shown = str_field(&params, "uri")?;
                let (t, original) = self.resolve_uri(session, id, &shown).await?;
                params["uri"] = json!(original);
                (t, ListKind::Resources, shown)
            }
            "completion/complete" => {
                let r = params.get("ref").cloned().unwrap_or_default();
                let (kind, field) = match r.get("type").and_then(Value::as_str) {
                    Some("ref/prompt") => (ListKind::Prompts, "name"),
                    Some("ref/resource") => (ListKind::Resources, "uri"),
                    _ => {
                        return Err(McpError::InvalidParams(
                            "params.ref.type must be ref/prompt or ref/resource".into(),
                        ));
                    }
                };
                let shown = str_field(&r, field)?;
                let (t, original) = match kind {
                    ListKind::Prompts => self.resolve_name(session, kind, id, &shown).await?,
                    _ => self.resolve_uri(session, id, &shown).await?,
                };
                params["ref"][field] = json!(original);
                (t, kind, shown)
            }
            other => return Err(McpError::MethodNotFound(other.to_owned())),
        };
        let tool = if kind == ListKind::Tools && method == "tools/call" {
            self.backend.state.tool_label(&shown)
        } else {
            "".into()
        };
        let start = Instant::now();
        let result = self
            .call(session, &target, method, Some(params), id, tool.clone())
            .await;
        if method == "tools/call" {
            tracing::info!(
                backend = %self.backend.key,
                target = %target.name,
                tool = %shown,
                duration_ms = start.elapsed().as_secs_f64() * 1000.0,
                outcome = outcome_of(&result.as_ref()),
                "mcp tool call"
            );
        }
        let mut result = result?;
        if self.backend.naming == Naming::Prefixed {
            rewrite_uris(&target.name, &mut result);
        }
        Ok(result)
    }

    /// A request every target gets (`logging/setLevel`); answers `{}`.
    pub async fn broadcast(
        &self,
        session: &Session,
        method: &str,
        id: &Value,
        params: Option<Value>,
    ) -> Result<Value, McpError> {
        let replies = join_all(
            self.backend
                .targets
                .iter()
                .map(|t| self.call(session, t, method, params.clone(), id, "".into())),
        )
        .await;
        for (t, r) in self.backend.targets.iter().zip(replies) {
            self.absorb(t, method, r)?;
        }
        Ok(json!({}))
    }

    fn expose(&self, t: &Target, kind: ListKind, name: &str) -> String {
        match (self.backend.naming, kind) {
            (Naming::Plain, _) => name.to_owned(),
            (Naming::Prefixed, ListKind::Tools | ListKind::Prompts) => {
                names::prefixed(&t.name, name)
            }
            (Naming::Prefixed, ListKind::Resources) => names::rewrite_uri(&t.name, name),
            (Naming::Prefixed, ListKind::Templates) => names::rewrite_uri_template(&t.name, name),
        }
    }

    async fn resolve_name(
        &self,
        session: &Session,
        kind: ListKind,
        id: &Value,
        shown: &str,
    ) -> Result<(Arc<Target>, String), McpError> {
        let unknown = || {
            McpError::InvalidParams(format!(
                "unknown {}: {shown}",
                if kind == ListKind::Tools {
                    "tool"
                } else {
                    "prompt"
                }
            ))
        };
        let (target, original) = match self.backend.naming {
            Naming::Prefixed => {
                let (t, n) = names::split_prefixed(shown).ok_or_else(unknown)?;
                (
                    self.backend.target(t).cloned().ok_or_else(unknown)?,
                    n.to_owned(),
                )
            }
            Naming::Plain => (
                self.owner(session, kind, id, shown)
                    .await?
                    .ok_or_else(unknown)?,
                shown.to_owned(),
            ),
        };
        match authz::authorize(&self.caller, &target.name, kind.item(), &original) {
            Decision::Allow => Ok((target, original)),
            Decision::Deny => Err(unknown()),
        }
    }

    async fn resolve_uri(
        &self,
        session: &Session,
        id: &Value,
        shown: &str,
    ) -> Result<(Arc<Target>, String), McpError> {
        let unknown = || McpError::InvalidParams(format!("unknown resource: {shown}"));
        let (target, original) = match self.backend.naming {
            Naming::Prefixed => {
                let (t, uri) = names::split_uri(shown).ok_or_else(unknown)?;
                (self.backend.target(t).cloned().ok_or_else(unknown)?, uri)
            }
            Naming::Plain => {
                let owner = self.owner(session, ListKind::Resources, id, shown).await?;
                // A URI from a template is in no list: without prefixes it goes to the
                // first target.
                let t = owner
                    .or_else(|| self.backend.targets.first().cloned())
                    .ok_or_else(unknown)?;
                (t, shown.to_owned())
            }
        };
        match authz::authorize(&self.caller, &target.name, ItemKind::Resource, &original) {
            Decision::Allow => Ok((target, original)),
            Decision::Deny => Err(unknown()),
        }
    }

    /// Without prefixes: the target owning `name`, listing everything once if needed.
    async fn owner(
        &self,
        session: &Session,
        kind: ListKind,
        id: &Value,
        name: &str,
    ) -> Result<Option<Arc<Target>>, McpError> {
        if let [only] = self.backend.targets.as_slice() {
            return Ok(Some(only.clone()));
        }
        let find = || {
            self.backend
                .state
                .owner(kind.item(), name)
                .and_then(|o| self.backend.target(&o).cloned())
        };
        if let Some(t) = find() {
            return Ok(Some(t));
        }
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_OWNER_PAGES {
            let params = cursor.as_ref().map(|c| json!({ "cursor": c }));
            let page = self.list(session, kind, id, params).await?;
            match page.get("nextCursor").and_then(Value::as_str) {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        Ok(find())
    }

    /// One request to one target: an upstream id of the gateway's own (and the client's
    /// progress token swapped for it, see `relay`), upstream session, one
    /// re-initialization if the target lost it, metrics.
    async fn call(
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
                Some(u) => u.clone(),
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
        let r = t.initialize(&session.state.version, self.timeout).await;
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
        self.metrics
            .record_upstream_init(&self.backend.key, &t.name);
        self.backend
            .state
            .sessions
            .remember(&session.id, up.clone());
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
    fn count_fallback(&self, t: &Target, up: &UpstreamSession) {
        if up.sse != t.configured_sse() {
            self.metrics.record_fallback(
                &self.backend.key,
                &t.name,
                super::remote::transport_name(up.sse),
            );
        }
    }

    fn count(
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

fn outcome_of<T: std::borrow::Borrow<Value>>(r: &Result<T, &McpError>) -> &'static str {
    match r {
        Ok(v) if v.borrow().get("isError") == Some(&Value::Bool(true)) => "tool_error",
        Ok(_) => "ok",
        Err(e) => e.outcome(),
    }
}

fn str_field(v: &Value, field: &str) -> Result<String, McpError> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| McpError::InvalidParams(format!("params.{field} must be a string")))
}
