//! The MCP gateway: a backend kind that serves MCP (streamable HTTP) to clients and
//! federates the tools, prompts and resources of several upstream MCP servers
//! ("targets") into one virtual server.
//!
//! - `server`: the downstream HTTP side (POST/GET/DELETE, Accept and Content-Type rules,
//!   JSON or SSE answers, session header).
//! - `modern`: requests of the 2026-07-28 style (`server/discover`, per-request `_meta`,
//!   routing headers, no session), served over gateway-held upstream sessions.
//! - `handshake`: `initialize` across targets, narrowing the protocol version to one
//!   every target speaks.
//! - `envelope`: the 2026-07-28 per-request envelope and routing headers, both ways.
//! - `federation`: what each MCP method does across targets: list methods fanned out and
//!   merged, upstream sessions, failure modes, metrics; `routing`: requests about one
//!   item routed to its owner, and the tool-call log line.
//! - `items`: list kinds and the URIs inside results.
//! - `names`: prefixes, URI rewriting and the composite cursor (pure).
//! - `session`: the encrypted, self-describing client session id and idle expiry.
//! - `legacy`: the downstream legacy HTTP+SSE transport (2024-11-05 clients): the event
//!   stream, its POST endpoint, over the same sessions and federation.
//! - `upstream`: a target whatever its transport, its upstream session and errors;
//!   `remote` (HTTP, with the fallback between) over `streamable` (streamable HTTP) and
//!   `sse` (legacy HTTP+SSE), and `stdio` (a child process) are the transports.
//! - `relay`: messages outside request/response pairs (progress, logs, server-to-client
//!   requests, cancellation) and how their ids and tokens are mapped.
//! - `stream`: SSE answers to the client: streamed responses and the GET stream.
//! - `authz`: the single authorization hook.
//! - `config`: the `mcp` backend resource → [`McpBackend`].
//!
//! Nothing here knows about listeners, routes or how the request arrived; the HTTP
//! pipeline hands over a request that already passed routing and policies.

pub mod authz;
pub mod config;
pub mod envelope;
pub mod federation;
pub mod handshake;
pub mod inbox;
pub mod items;
pub mod jsonrpc;
pub mod legacy;
pub mod metrics;
pub mod modern;
pub mod names;
pub mod relay;
pub mod remote;
pub mod routing;
pub mod server;
pub mod session;
pub mod sse;
pub mod stdio;
pub mod stream;
pub mod streamable;
pub mod upstream;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use self::legacy::LegacyStreams;
pub use self::server::serve;
use self::session::{SessionCipher, SessionTable};
use self::sse::SsePool;
use self::stdio::StdioPool;
use self::upstream::Target;

/// Protocol versions of the session style the gateway speaks, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// Protocol versions of the 2026-07-28 style (`server/discover`, no sessions).
pub const MODERN_VERSIONS: [&str; 1] = ["2026-07-28"];

/// Every protocol version the gateway speaks, oldest first: what an unsupported
/// version error lists.
pub fn all_versions() -> Vec<&'static str> {
    SUPPORTED_VERSIONS
        .iter()
        .chain(MODERN_VERSIONS.iter())
        .copied()
        .collect()
}

/// How names are prefixed, resolved from `prefixMode` and the number of targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// `<target>_<name>` and `agentmesh://<target>/...` URIs.
    Prefixed,
    /// Names and URIs as the targets give them.
    Plain,
}

/// What a fanned-out request does when a target fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// The request fails.
    Closed,
    /// The target is left out, with a log line and a metric.
    Open,
}

/// A compiled `mcp` backend.
#[derive(Debug)]
pub struct McpBackend {
    /// Backend key.
    pub key: Arc<str>,
    /// Targets in config order.
    pub targets: Vec<Arc<Target>>,
    /// Prefixing.
    pub naming: Naming,
    /// Failure mode of fanned-out requests.
    pub failure_mode: FailureMode,
    /// Session id encryption.
    pub cipher: SessionCipher,
    /// Stateless mode: no client session kept; each request opens (and ends) the
    /// upstream sessions it needs.
    pub stateless: bool,
    /// Browser origins allowed besides loopback (lowercase; `*` for any).
    pub allowed_origins: Vec<String>,
    /// State kept across requests and config reloads.
    pub state: Arc<BackendState>,
}

impl McpBackend {
    /// The target named `name`.
    pub fn target(&self, name: &str) -> Option<&Arc<Target>> {
        self.targets.iter().find(|t| &*t.name == name)
    }
}

/// Most tool names remembered per backend for metric labels.
const MAX_KNOWN_TOOLS: usize = 1024;
/// Most owners remembered per backend for unprefixed names.
const MAX_OWNERS: usize = 8192;

/// What a backend remembers across requests, kept across config reloads (by backend
/// key) as long as some config uses it.
#[derive(Debug)]
pub struct BackendState {
    /// Sessions seen by this process.
    pub sessions: SessionTable,
    /// Processes of the stdio targets.
    pub stdio: Arc<StdioPool>,
    /// Event streams of upstream sessions over legacy HTTP+SSE.
    pub sse: Arc<SsePool>,
    /// Event streams of clients of the legacy HTTP+SSE transport.
    pub legacy: LegacyStreams,
    /// Client-facing tool names the targets listed: the only tool label values.
    known_tools: Mutex<HashSet<Arc<str>>>,
    /// Without prefixes: which target owns a name (first in config order wins).
    owners: Mutex<HashMap<(authz::ItemKind, String), Arc<str>>>,
    /// The last initialize result of each target (capabilities, instructions), what
    /// `server/discover` merges.
    offers: Mutex<HashMap<Arc<str>, serde_json::Value>>,
    /// Upstream requests in flight, for cancellation.
    pub inflight: relay::InFlight,
    /// Input requests of 2026-07-28 targets put to clients, awaiting their answers.
    pub asking: relay::Asking,
}

impl BackendState {
    /// The state of backend `key`: the live one if a config still holds it, else new
    /// (expiring idle sessions after `idle`). A live state keeps its idle timeout until
    /// [`BackendState::set_idle_timeout`].
    pub fn for_backend(key: &str, idle: std::time::Duration) -> Arc<BackendState> {
        static ALL: OnceLock<Mutex<HashMap<String, Weak<BackendState>>>> = OnceLock::new();
        let mut all = ALL
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        all.retain(|_, w| w.strong_count() > 0);
        if let Some(state) = all.get(key).and_then(Weak::upgrade) {
            return state;
        }
        let state = Arc::new(BackendState {
            sessions: SessionTable::new(idle),
            stdio: Arc::new(StdioPool::new(idle)),
            sse: Arc::default(),
            legacy: LegacyStreams::default(),
            known_tools: Mutex::default(),
            owners: Mutex::default(),
            offers: Mutex::default(),
            inflight: relay::InFlight::default(),
            asking: relay::Asking::default(),
        });
        all.insert(key.to_owned(), Arc::downgrade(&state));
        state
    }

    /// Changes how long sessions (and per-session processes) may stay idle.
    pub fn set_idle_timeout(&self, idle: std::time::Duration) {
        self.sessions.set_idle_timeout(idle);
        self.stdio.set_idle_timeout(idle);
    }

    /// Remembers what `target` answered to `initialize`.
    pub fn remember_offer(&self, target: &Arc<str>, result: &serde_json::Value) {
        let mut offers = self.offers.lock().unwrap_or_else(PoisonError::into_inner);
        offers.insert(target.clone(), result.clone());
    }

    /// What `target` last answered to `initialize`, if it was asked.
    pub fn offer(&self, target: &str) -> Option<serde_json::Value> {
        let offers = self.offers.lock().unwrap_or_else(PoisonError::into_inner);
        offers.get(target).cloned()
    }

    /// Remembers a listed tool name, for metric labels.
    pub fn learn_tool(&self, name: &str) {
        let mut known = self
            .known_tools
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if known.len() < MAX_KNOWN_TOOLS && !known.contains(name) {
            known.insert(name.into());
        }
    }

    /// The metric label for a called tool: its name when a target listed it, else `other`.
    pub fn tool_label(&self, name: &str) -> Arc<str> {
        let known = self
            .known_tools
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        known.get(name).cloned().unwrap_or_else(|| "other".into())
    }

    /// Records that `target` owns `name` unless an earlier target (lower `rank` in
    /// `order`) already does. Returns whether `target` is the owner.
    pub fn claim(
        &self,
        kind: authz::ItemKind,
        name: &str,
        target: &Arc<str>,
        order: &[Arc<Target>],
    ) -> bool {
        let rank = |t: &str| {
            order
                .iter()
                .position(|x| &*x.name == t)
                .unwrap_or(usize::MAX)
        };
        let mut owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (kind, name.to_owned());
        match owners.get(&key) {
            Some(owner) if rank(owner) < rank(target) && rank(owner) != usize::MAX => false,
            _ => {
                if owners.len() < MAX_OWNERS || owners.contains_key(&key) {
                    owners.insert(key, target.clone());
                }
                true
            }
        }
    }

    /// The known owner of an unprefixed name.
    pub fn owner(&self, kind: authz::ItemKind, name: &str) -> Option<Arc<str>> {
        let owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        owners.get(&(kind, name.to_owned())).cloned()
    }
}
