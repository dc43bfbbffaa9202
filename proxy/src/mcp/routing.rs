//! Requests about one named item, routed to the target that owns it: `tools/call`,
//! `prompts/get`, `resources/read`, `resources/subscribe`/`unsubscribe` and
//! `completion/complete` have the prefix stripped (or, without prefixes, the owner
//! looked up) and the resource URIs in the answer rewritten; `logging/setLevel` goes to
//! every target. Authorization is asked once per (caller, target, item) before routing,
//! and a denied item is reported as unknown. Every tool call is logged.
//!
//! The fan-out of list methods, upstream sessions, failure modes and metrics are in
//! `federation`.

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::join_all;
use serde_json::{Value, json};

use super::Naming;
use super::authz::{self, Decision, ItemKind};
use super::federation::{Ctx, ListKind, Session, outcome_of};
use super::items::rewrite_uris;
use super::jsonrpc::{McpError, code};
use super::names;
use super::upstream::Target;

/// Pages fetched per target when looking for the owner of an unprefixed name.
const MAX_OWNER_PAGES: usize = 20;

impl Ctx<'_> {
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

    /// A request every target gets (`logging/setLevel`); answers `{}`. A target without
    /// the method (a 2026-07-28 target has no `logging/setLevel`) has nothing to do.
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
            match r {
                Err(McpError::TargetRpc { error, .. })
                    if error.get("code").and_then(Value::as_i64)
                        == Some(code::METHOD_NOT_FOUND) => {}
                other => {
                    self.absorb(t, method, other)?;
                }
            }
        }
        Ok(json!({}))
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
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        Ok(find())
    }
}

fn str_field(v: &Value, field: &str) -> Result<String, McpError> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| McpError::InvalidParams(format!("params.{field} must be a string")))
}
