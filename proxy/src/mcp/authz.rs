//! The one MCP authorization decision: may this caller see or use this tool, prompt or
//! resource of this target? Consulted when filtering every merged list and before every
//! routed call, so a denied item is hidden from lists and reported as unknown when
//! called (its existence does not leak).
//!
//! Allow-all for now: per-tool authorization policies plug in here.

use http::HeaderMap;

/// Who is asking. Identity from authentication (JWT claims, API key) joins later.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The client's request headers.
    pub headers: &'a HeaderMap,
}

/// What kind of item a decision is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemKind {
    /// A tool (`tools/list`, `tools/call`).
    Tool,
    /// A prompt (`prompts/list`, `prompts/get`).
    Prompt,
    /// A resource or resource template (by its original URI or URI template).
    Resource,
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Visible and usable.
    Allow,
    /// Hidden from lists; calls answer as for an unknown item.
    Deny,
}

/// Decides whether `caller` may see and use item `name` (original, unprefixed name or
/// URI) of kind `kind` offered by `target`.
pub fn authorize(caller: &Caller<'_>, target: &str, kind: ItemKind, name: &str) -> Decision {
    let _ = (caller, target, kind, name);
    Decision::Allow
}
