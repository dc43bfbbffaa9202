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

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use serde_json::{Value, json};

use super::authz::{self, Caller, Decision};
use super::envelope;
use super::items;
pub use super::items::ListKind;
use super::jsonrpc::{self, McpError, code};
use super::metrics::{McpMetrics, McpRequest, method_label};
use super::names::{self, Cursor};
use super::relay::{self, ClientStream, Relay};
use super::session::SessionState;
use super::upstream::{RawResult, ReplyForm, Target, TargetError, UpstreamSession};
use super::{FailureMode, McpBackend, Naming, SUPPORTED_VERSIONS};

/// Most `input_required` rounds one request goes through before it fails.
const MAX_INPUT_ROUNDS: usize = 8;

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

/// A merged list result, serialized once (see [`Ctx::list`]).
#[derive(Debug, Clone)]
pub struct MergedList {
    /// The result object's JSON text.
    pub json: Vec<u8>,
    /// The composite cursor to the next page, also inside `json`.
    pub next_cursor: Option<String>,
}

impl MergedList {
    /// Adds fields to the result object (names not already in it).
    pub fn append_fields(&mut self, fields: &[(&str, &Value)]) {
        if self.json.last() != Some(&b'}') {
            return;
        }
        self.json.pop();
        for (k, v) in fields {
            self.json.push(b',');
            items::write_json_str(&mut self.json, k);
            self.json.push(b':');
            // Writing a value into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut self.json, v);
        }
        self.json.push(b'}');
    }

    /// As a tree, for the paths that send results as messages (legacy SSE, relayed
    /// streams); the streamable-HTTP answer writes `json` as it is.
    pub fn into_value(self) -> Value {
        // Written by `Ctx::list` from checked JSON: it parses.
        serde_json::from_slice(&self.json).unwrap_or_default()
    }
}

/// What a request of a session returns: a tree, or a merged list already serialized.
#[derive(Debug)]
pub enum Served {
    /// Any result but a list.
    Tree(Value),
    /// A merged list.
    List(MergedList),
}

impl Served {
    /// As a tree (see [`MergedList::into_value`]).
    pub fn into_value(self) -> Value {
        match self {
            Served::Tree(v) => v,
            Served::List(l) => l.into_value(),
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
    ) -> Result<Served, McpError> {
        match ListKind::of(method) {
            Some(kind) => self.list(session, kind, id, params).await.map(Served::List),
            None if method == "logging/setLevel" => self
                .broadcast(session, method, id, params)
                .await
                .map(Served::Tree),
            None => self
                .route(session, method, id, params)
                .await
                .map(Served::Tree),
        }
    }

    /// A list method, fanned out to every target (or, on a later page, to those the
    /// cursor names) and merged.
    ///
    /// Items are never parsed into trees: each target's result arrives as JSON text
    /// ([`RawResult`]), each item is copied into the merged answer as written, with only
    /// the field naming it rewritten (when prefixed), and the answer is written once.
    pub async fn list(
        &self,
        session: &Session,
        kind: ListKind,
        id: &Value,
        params: Option<Value>,
    ) -> Result<MergedList, McpError> {
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
        // Asked slowest first (by their recent list times), so the slowest target's
        // wait starts before the others' requests are written; merged in target order
        // as pages arrive: by the time the slowest target answers, the pages of the
        // others are merged (and their bodies freed), so only its own page is left.
        let mut send_order: Vec<usize> = (0..plan.len()).collect();
        send_order.sort_by_key(|&i| std::cmp::Reverse(plan[i].0.list_time()));
        let started = Instant::now();
        let mut asks = send_order.iter().map(|&i| {
            let (t, cursor) = &plan[i];
            let mut p = params.clone();
            if let (Some(c), Some(obj)) = (cursor, p.as_object_mut()) {
                obj.insert("cursor".into(), Value::String(c.clone()));
            }
            async move {
                let page = self
                    .call_as::<RawResult>(session, t, kind.method(), Some(p), id, "".into())
                    .await;
                t.record_list_time(started.elapsed());
                (i, page)
            }
        });
        let mut arrived: Vec<Option<Result<RawResult, McpError>>> =
            std::iter::repeat_with(|| None).take(plan.len()).collect();
        let mut pages = FuturesUnordered::new();
        if let Some(slowest) = asks.next() {
            pages.push(slowest);
            if plan.len() > 1 {
                // The slowest target's request is written before the others' are
                // prepared: polled once, it hands the request to its connection, whose
                // task runs at the yield.
                if let Some(Some((i, page))) = pages.next().now_or_never() {
                    arrived[i] = Some(page);
                }
                tokio::task::yield_now().await;
            }
        }
        pages.extend(asks);
        let mut merged = 0;
        let (field, key) = kind.fields();
        let mut out = Vec::with_capacity(4096);
        out.push(b'{');
        items::write_json_str(&mut out, field);
        out.extend_from_slice(b":[");
        let mut first = true;
        let mut seen = HashSet::new();
        let mut next = Cursor::default();
        let dedup = self.backend.naming == Naming::Plain && self.backend.targets.len() > 1;
        while merged < plan.len() {
            if arrived[merged].is_none() {
                let Some((i, page)) = pages.next().await else {
                    break;
                };
                arrived[i] = Some(page);
                continue;
            }
            let (t, _) = &plan[merged];
            let Some(page) = arrived[merged].take() else {
                break;
            };
            merged += 1;
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
            let read = match items::read_page(&page.0, field) {
                Ok(read) => read,
                Err(e) => {
                    let error =
                        TargetError::Protocol(format!("invalid {} result: {e}", kind.method()));
                    let failed = McpError::Target {
                        target: t.name.clone(),
                        error,
                    };
                    self.absorb::<()>(t, kind.method(), Err(failed))?;
                    continue;
                }
            };
            if let Some(c) = read.next_cursor {
                next.targets.insert(t.name.to_string(), c);
            }
            // Reused for every item of the page (it borrows from the page).
            let mut fields = Vec::new();
            for item in read.items.into_iter().flatten() {
                if !items::item_fields(item, &mut fields) {
                    continue;
                }
                let Some(name) = fields
                    .iter()
                    .rev()
                    .find(|(k, _)| k == key)
                    .and_then(|(_, v)| items::raw_str(v))
                else {
                    continue;
                };
                if authz::authorize(&self.caller, &t.name, kind.item(), &name) == Decision::Deny {
                    continue;
                }
                let exposed = self.expose(t, kind, &name);
                if dedup {
                    let owner = self.backend.state.claim(
                        kind.item(),
                        &exposed,
                        &t.name,
                        &self.backend.targets,
                    );
                    if !owner || !seen.insert(exposed.to_string()) {
                        tracing::debug!(backend = %self.backend.key, target = %t.name, name = %exposed, "duplicate name hidden: an earlier target owns it");
                        continue;
                    }
                }
                if kind == ListKind::Tools {
                    self.backend.state.learn_tool(&exposed);
                }
                if !first {
                    out.push(b',');
                }
                first = false;
                match &exposed {
                    // Unchanged: the item as the target wrote it.
                    Cow::Borrowed(_) => out.extend_from_slice(item.get().as_bytes()),
                    Cow::Owned(new) => items::write_item_with(&mut out, &fields, key, new),
                }
            }
        }
        out.push(b']');
        let next_cursor = next.encode();
        if let Some(c) = &next_cursor {
            out.extend_from_slice(b",\"nextCursor\":");
            items::write_json_str(&mut out, c);
        }
        out.push(b'}');
        Ok(MergedList {
            json: out,
            next_cursor,
        })
    }

    /// The client-facing name of item `name` of `t` (borrowed when unchanged).
    fn expose<'n>(&self, t: &Target, kind: ListKind, name: &'n str) -> Cow<'n, str> {
        match (self.backend.naming, kind) {
            (Naming::Plain, _) => Cow::Borrowed(name),
            (Naming::Prefixed, ListKind::Tools | ListKind::Prompts) => {
                Cow::Owned(names::prefixed(&t.name, name))
            }
            (Naming::Prefixed, ListKind::Resources) => {
                Cow::Owned(names::rewrite_uri(&t.name, name))
            }
            (Naming::Prefixed, ListKind::Templates) => {
                Cow::Owned(names::rewrite_uri_template(&t.name, name))
            }
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
        // Kept to retry with, when a 2026-07-28 target (or one not opened yet) may ask
        // for input and the client can be asked.
        let may_ask = self.relay.is_some()
            && envelope::may_require_input(method)
            && session
                .upstream(&t.name)
                .is_none_or(|up| envelope::is_modern_version(&up.version));
        let base = may_ask.then(|| params.clone());
        let mut result = self
            .call_as::<Value>(session, t, method, params, id, tool.clone())
            .await?;
        let Some(base) = base else {
            return Ok(result);
        };
        for _ in 0..MAX_INPUT_ROUNDS {
            if !envelope::is_input_required(&result) {
                return Ok(result);
            }
            let responses = self.ask_client(t, &result).await?;
            let mut params = base.clone().unwrap_or_else(|| json!({}));
            if let Some(p) = params.as_object_mut() {
                p.insert("inputResponses".into(), Value::Object(responses));
                if let Some(state) = result.get_mut("requestState").map(Value::take) {
                    p.insert("requestState".into(), state);
                }
            }
            result = self
                .call_as::<Value>(session, t, method, Some(params), id, tool.clone())
                .await?;
        }
        if !envelope::is_input_required(&result) {
            return Ok(result);
        }
        Err(McpError::Target {
            target: t.name.clone(),
            error: TargetError::Protocol(format!(
                "still asked for input after {MAX_INPUT_ROUNDS} rounds"
            )),
        })
    }

    /// Puts the input requests of an `input_required` result to the client, as server
    /// requests on its response stream, and gathers the answers as `inputResponses`.
    /// A client's error answer fails the request with that error.
    async fn ask_client(
        &self,
        t: &Arc<Target>,
        pending: &Value,
    ) -> Result<serde_json::Map<String, Value>, McpError> {
        let mut responses = serde_json::Map::new();
        let Some(to) = &self.relay else {
            return Ok(responses);
        };
        let requests = pending.get("inputRequests").and_then(Value::as_object);
        for (key, request) in requests.into_iter().flatten() {
            let question = self.backend.state.asking.ask(&t.name);
            let mut msg = serde_json::Map::new();
            msg.insert("jsonrpc".into(), json!("2.0"));
            msg.insert("id".into(), question.id.clone());
            for field in ["method", "params"] {
                if let Some(v) = request.get(field) {
                    msg.insert(field.into(), v.clone());
                }
            }
            let gone = || McpError::Target {
                target: t.name.clone(),
                error: TargetError::Protocol(
                    "the client's stream closed before it answered".into(),
                ),
            };
            to.send(Value::Object(msg)).map_err(|_| gone())?;
            let mut question = question;
            let answer = tokio::time::timeout(self.timeout, &mut question.answer)
                .await
                .map_err(|_| McpError::Target {
                    target: t.name.clone(),
                    error: TargetError::Timeout(self.timeout),
                })?
                .map_err(|_| gone())?;
            match (answer.get("result"), answer.get("error")) {
                (Some(r), _) => {
                    responses.insert(key.clone(), r.clone());
                }
                (None, Some(e)) => {
                    return Err(McpError::TargetRpc {
                        target: t.name.clone(),
                        error: e.clone(),
                    });
                }
                (None, None) => {
                    return Err(McpError::InvalidRequest(
                        "a response needs a \"result\" or an \"error\"".into(),
                    ));
                }
            }
        }
        Ok(responses)
    }

    /// As [`Ctx::call`], with the result in form `R`.
    pub(super) async fn call_as<R: ReplyForm>(
        &self,
        session: &Session,
        t: &Arc<Target>,
        method: &str,
        params: Option<Value>,
        id: &Value,
        tool: Arc<str>,
    ) -> Result<R, McpError> {
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
                match t.request_as::<R>(&up, &msg, &upstream_id, self.timeout, relay.as_ref()).await {
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
        let outcome = match &result {
            Ok(r) if r.is_tool_error() => "tool_error",
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.count(t, method, tool, outcome, start);
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
