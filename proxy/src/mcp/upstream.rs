//! The gateway's client side towards one target, whatever the transport: what a target
//! is ([`Target`]), the upstream session the client's session id remembers for it
//! ([`UpstreamSession`]), and how a target can fail ([`TargetError`]).
//!
//! The transports live beside it: `remote` (an HTTP server of either transport, with the
//! fallback between them) over `streamable` (streamable HTTP) and `sse` (legacy
//! HTTP+SSE), and `stdio` (a child process). This module must not know about client
//! sessions, names or federation: callers decide what to send.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::jsonrpc;
use super::relay::Relay;
use super::remote::RemoteTarget;
use super::stdio::StdioTarget;
use super::streamable::EventStream;
use crate::http::upstream::UpstreamError;

/// Header carrying a streamable-HTTP session id.
pub const SESSION_HEADER: &str = "mcp-session-id";
/// Header carrying the negotiated protocol version (2025-06-18 and later).
pub const VERSION_HEADER: &str = "mcp-protocol-version";

/// Why a target gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// No response: connect failure, reset, malformed HTTP.
    #[error(transparent)]
    Unavailable(#[from] UpstreamError),
    /// No response within the time limit.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The target does not know the session (restarted, expired, process gone):
    /// re-initialize.
    #[error("the target no longer knows the session")]
    SessionGone,
    /// An HTTP status other than the expected ones.
    #[error("answered HTTP {0}")]
    Status(StatusCode),
    /// A body that is not the JSON-RPC response expected.
    #[error("invalid answer: {0}")]
    Protocol(String),
    /// A stdio target's command could not be started.
    #[error("could not start the command: {0}")]
    Spawn(std::io::Error),
    /// A stdio target's process exited (or closed its stdout) before answering.
    #[error("the process exited")]
    Exited,
    /// A legacy SSE target closed its event stream before answering.
    #[error("the event stream closed")]
    StreamClosed,
}

impl TargetError {
    /// A short description for the client, without addresses, commands or OS errors.
    pub fn summary(&self) -> String {
        match self {
            Self::Unavailable(_) => "is unavailable".into(),
            Self::Timeout(t) => format!("did not answer within {t:?}"),
            Self::SessionGone => "lost the session".into(),
            Self::Status(s) => format!("answered HTTP {}", s.as_u16()),
            Self::Protocol(_) => "sent an invalid answer".into(),
            Self::Spawn(_) => "could not be started".into(),
            Self::Exited => "exited".into(),
            Self::StreamClosed => "closed its event stream".into(),
        }
    }
}

/// What a target answered to a request: its result, or its JSON-RPC error object.
pub type Reply = Result<Value, Value>;

/// The JSON text of a target's result, as the target sent it (a slice of the body it
/// arrived in, not a copy): for results the gateway copies pieces of without building a
/// tree (merged lists). Checked JSON; not unwrapped from the 2026-07-28 envelope, so a
/// reader takes only the fields it knows.
#[derive(Debug, Clone)]
pub struct RawResult(pub Bytes);

/// One JSON-RPC message from a target, read in the form the caller wants its reply in.
pub enum Taken<R> {
    /// The reply to the request: its result, or its JSON-RPC error object.
    Reply(Result<R, Value>),
    /// Another message (progress, logs, a server request), for the relay.
    Other(Value),
    /// Not JSON.
    NotJson(serde_json::Error),
}

/// The form a caller wants a target's result in: a tree ([`Value`]) or the JSON text
/// ([`RawResult`]). The transports read replies through it.
pub trait ReplyForm: Sized + Send + 'static {
    /// Reads one message, the reply to `id` or another one.
    fn take(msg: Bytes, id: &Value) -> Taken<Self>;
    /// A result a transport had to parse anyway (stdio, legacy SSE), in this form.
    fn from_value(v: Value) -> Self;
    /// Whether the result is a tool's own error (`isError`), for metrics.
    fn is_tool_error(&self) -> bool;
    /// Makes a 2026-07-28 result read like one of the session style, where the form
    /// allows (see [`super::envelope::unwrap_result`]).
    fn unwrap_modern(&mut self);
}

impl ReplyForm for Value {
    fn take(msg: Bytes, id: &Value) -> Taken<Value> {
        match serde_json::from_slice(&msg) {
            Ok(v) => match take_reply(v, id) {
                Ok(reply) => Taken::Reply(reply),
                Err(other) => Taken::Other(other),
            },
            Err(e) => Taken::NotJson(e),
        }
    }

    fn from_value(v: Value) -> Value {
        v
    }

    fn is_tool_error(&self) -> bool {
        self.get("isError") == Some(&Value::Bool(true))
    }

    fn unwrap_modern(&mut self) {
        super::envelope::unwrap_result(self);
    }
}

/// What [`RawResult::take`] reads of a message: its id, result (unparsed) and error.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    id: Option<Value>,
    #[serde(borrow, default)]
    method: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    error: Option<Value>,
}

impl ReplyForm for RawResult {
    fn take(msg: Bytes, id: &Value) -> Taken<RawResult> {
        let reply = match serde_json::from_slice::<Envelope<'_>>(&msg) {
            Ok(env) if env.method.is_none() && env.id.as_ref() == Some(id) => {
                match (env.result, env.error) {
                    (Some(r), _) => Some(Ok(msg.slice_ref(r.get().as_bytes()))),
                    (None, Some(e)) => Some(Err(e)),
                    (None, None) => None,
                }
            }
            Ok(_) => None,
            // Not JSON, or JSON that is no object of this shape: read as a tree below.
            Err(_) => None,
        };
        match reply {
            Some(Ok(bytes)) => Taken::Reply(Ok(RawResult(bytes))),
            Some(Err(e)) => Taken::Reply(Err(e)),
            None => match serde_json::from_slice(&msg) {
                Ok(v) => Taken::Other(v),
                Err(e) => Taken::NotJson(e),
            },
        }
    }

    fn from_value(v: Value) -> RawResult {
        RawResult(Bytes::from(serde_json::to_vec(&v).unwrap_or_default()))
    }

    fn is_tool_error(&self) -> bool {
        false
    }

    // Left whole: readers take only the fields they know.
    fn unwrap_modern(&mut self) {}
}

/// The upstream session with one target, as stored in the client's session id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UpstreamSession {
    /// The target's name.
    #[serde(rename = "n")]
    pub target: String,
    /// The target's session id (for a per-session stdio target, the key of its
    /// process in this proxy); none for a stateless or shared target.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The protocol version the target negotiated.
    #[serde(rename = "v")]
    pub version: String,
    /// Whether the session runs over the legacy HTTP+SSE transport (an event stream this
    /// proxy holds, `id` naming it) rather than streamable HTTP or stdio.
    #[serde(rename = "l", default, skip_serializing_if = "std::ops::Not::not")]
    pub sse: bool,
}

/// One upstream MCP server.
#[derive(Debug)]
pub struct Target {
    /// The target's name (config).
    pub name: Arc<str>,
    /// Where it is, for logs: the URL, or `stdio:<command>`.
    pub url: String,
    transport: Transport,
    /// How long its list pages took lately (microseconds, smoothed): a fan-out asks the
    /// slowest targets first.
    list_micros: AtomicU64,
}

#[derive(Debug)]
enum Transport {
    Http(Box<RemoteTarget>),
    Stdio(StdioTarget),
}

impl Target {
    /// A target reached over HTTP (streamable or legacy SSE).
    pub fn http(http: RemoteTarget) -> Target {
        Target {
            name: http.name().clone(),
            url: http.url().to_owned(),
            transport: Transport::Http(Box::new(http)),
            list_micros: AtomicU64::new(0),
        }
    }

    /// How long its list pages took lately (see [`Target::record_list_time`]).
    pub fn list_time(&self) -> Duration {
        Duration::from_micros(self.list_micros.load(Ordering::Relaxed))
    }

    /// Folds in how long one list page took (a moving average, new pages weighing 1/4).
    pub fn record_list_time(&self, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let old = self.list_micros.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 4 + sample / 4
        };
        self.list_micros.store(new, Ordering::Relaxed);
    }

    /// Whether the target is configured as a legacy SSE server (`sse`), so that a
    /// session opened over the other transport is a fallback.
    pub fn configured_sse(&self) -> bool {
        match &self.transport {
            Transport::Http(t) => t.configured_sse(),
            Transport::Stdio(_) => false,
        }
    }

    /// A target run as a child process.
    pub fn stdio(stdio: StdioTarget) -> Target {
        Target {
            name: stdio.name().clone(),
            url: format!("stdio:{}", stdio.command()),
            transport: Transport::Stdio(stdio),
            list_micros: AtomicU64::new(0),
        }
    }

    /// Opens a session: `initialize` with the gateway's own client identity, then
    /// `notifications/initialized`. Returns the session and the target's initialize result.
    pub async fn initialize(
        &self,
        version: &str,
        timeout: Duration,
    ) -> Result<(UpstreamSession, Value), TargetError> {
        match &self.transport {
            Transport::Http(t) => t.initialize(version, timeout).await,
            Transport::Stdio(t) => t.initialize(version, timeout).await,
        }
    }

    /// Opens a session for one request of stateless mode: a session of the 2026-07-28
    /// style (no handshake, nothing to end) when an HTTP target speaks it, else like
    /// [`Target::initialize`].
    pub async fn open_stateless(
        &self,
        version: &str,
        timeout: Duration,
    ) -> Result<(UpstreamSession, Value), TargetError> {
        match &self.transport {
            Transport::Http(t) => t.open_stateless(version, timeout).await,
            Transport::Stdio(t) => t.initialize(version, timeout).await,
        }
    }

    /// Sends a request in `session` and waits for the response to `id`; what the target
    /// sends meanwhile (progress, logs, server requests) goes to `relay`.
    pub async fn request(
        &self,
        session: &UpstreamSession,
        msg: &Value,
        id: &Value,
        timeout: Duration,
        relay: Option<&Relay>,
    ) -> Result<Reply, TargetError> {
        self.request_as(session, msg, id, timeout, relay).await
    }

    /// As [`Target::request`], with the result in form `R`.
    pub async fn request_as<R: ReplyForm>(
        &self,
        session: &UpstreamSession,
        msg: &Value,
        id: &Value,
        timeout: Duration,
        relay: Option<&Relay>,
    ) -> Result<Result<R, Value>, TargetError> {
        match &self.transport {
            Transport::Http(t) => t.request_as(session, msg, id, timeout, relay).await,
            Transport::Stdio(t) => Ok(t
                .request(session, msg, timeout, relay)
                .await?
                .map(R::from_value)),
        }
    }

    /// Sends a notification in `session`.
    pub async fn notify(
        &self,
        session: &UpstreamSession,
        msg: &Value,
        timeout: Duration,
    ) -> Result<(), TargetError> {
        match &self.transport {
            Transport::Http(t) => t.notify(session, msg, timeout).await,
            Transport::Stdio(t) => t.notify(session, msg).await,
        }
    }

    /// Opens the target's server-to-client stream for `session`, if it offers one.
    pub async fn open_stream(
        &self,
        session: &UpstreamSession,
        timeout: Duration,
    ) -> Result<Option<EventStream>, TargetError> {
        match &self.transport {
            Transport::Http(t) => t.open_stream(session, timeout).await,
            Transport::Stdio(t) => t.open_stream(session).map(Some),
        }
    }

    /// Ends `session` on the target (HTTP `DELETE`; a per-session process is killed).
    pub async fn end(
        &self,
        session: &UpstreamSession,
        timeout: Duration,
    ) -> Result<(), TargetError> {
        match &self.transport {
            Transport::Http(t) => t.end(session, timeout).await,
            Transport::Stdio(t) => {
                t.end(session).await;
                Ok(())
            }
        }
    }
}

/// The `initialize` request the gateway sends, with its own client identity. It offers
/// what it can relay to clients (sampling, elicitation, roots); a client without the
/// capability answers the relayed request with an error, which the target gets.
pub fn initialize_request(id: &Value, version: &str) -> Value {
    let params = json!({
        "protocolVersion": version,
        "capabilities": { "sampling": {}, "elicitation": {}, "roots": { "listChanged": true } },
        "clientInfo": { "name": "agentmesh", "version": env!("CARGO_PKG_VERSION") },
    });
    jsonrpc::request(id, "initialize", Some(params))
}

/// The version a target's initialize result names (`asked` when it names none).
pub fn negotiated_version(result: &Value, asked: &str) -> String {
    result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or(asked)
        .to_owned()
}

/// `fut`, or [`TargetError::Timeout`] after `limit`.
pub async fn within<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, TargetError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| TargetError::Timeout(limit))
}

/// The response to `id` in a JSON-RPC message, if it is one.
pub fn reply_from(msg: &Value, id: &Value) -> Option<Reply> {
    if msg.get("id") != Some(id) {
        return None;
    }
    if let Some(r) = msg.get("result") {
        return Some(Ok(r.clone()));
    }
    msg.get("error").map(|e| Err(e.clone()))
}

/// As [`reply_from`], taking the message: the result is moved out instead of copied (a
/// long list costs as much to copy as to parse). Gives the message back when it is not
/// the response to `id`.
pub fn take_reply(mut msg: Value, id: &Value) -> Result<Reply, Value> {
    if msg.get("id") == Some(id) {
        if let Some(r) = msg.get_mut("result") {
            return Ok(Ok(r.take()));
        }
        if let Some(e) = msg.get_mut("error") {
            return Ok(Err(e.take()));
        }
    }
    Err(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reply_matches_only_our_id() {
        let id = json!(3);
        assert_eq!(
            reply_from(&json!({"id": 3, "result": {"ok": true}}), &id),
            Some(Ok(json!({"ok": true})))
        );
        assert_eq!(reply_from(&json!({"id": 4, "result": {}}), &id), None);
        assert_eq!(
            reply_from(&json!({"method": "notifications/progress"}), &id),
            None
        );
        assert_eq!(
            reply_from(&json!({"id": 3, "error": {"code": -1}}), &id),
            Some(Err(json!({"code": -1})))
        );
    }

    #[test]
    fn taken_reply_matches_only_our_id_and_gives_back_the_rest() {
        let id = json!(3);
        assert_eq!(
            take_reply(json!({"id": 3, "result": {"ok": true}}), &id),
            Ok(Ok(json!({"ok": true})))
        );
        assert_eq!(
            take_reply(json!({"id": 3, "error": {"code": -1}}), &id),
            Ok(Err(json!({"code": -1})))
        );
        // A request from the server that happens to reuse our id is not the reply.
        let request = json!({"id": 3, "method": "sampling/createMessage"});
        assert_eq!(take_reply(request.clone(), &id), Err(request));
        let other = json!({"id": 4, "result": {}});
        assert_eq!(take_reply(other.clone(), &id), Err(other));
    }
}
