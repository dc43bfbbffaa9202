//! The downstream legacy HTTP+SSE transport (protocol 2024-11-05), for clients that
//! predate streamable HTTP.
//!
//! - A `GET` without `Mcp-Session-Id` that accepts `text/event-stream` opens an event
//!   stream ([`open`]). Its first event, `endpoint`, names where to POST messages: the
//!   same path with `?sessionId=<key>`, the key naming the stream in this process.
//! - Each `POST` there ([`post`]) carries one JSON-RPC message and gets 202 Accepted at
//!   once; the answer (and progress, logs, server-to-client requests) comes on the
//!   stream as `message` events. An unknown key is 404, a body that is not JSON-RPC 400,
//!   a body that is not JSON 415, each with a JSON-RPC error naming the problem.
//! - `initialize` opens a client session exactly as on streamable HTTP (the encrypted
//!   session id, kept with the stream); every later message is served by the same
//!   federation code under that session. After `initialize` the targets'
//!   server-to-client streams are relayed onto the event stream too.
//! - Only the caller who opened the stream may use it: a POST whose `Authorization`
//!   differs from the GET's is answered as if the key were unknown.
//! - The session lives as long as the stream: a keep-alive comment every
//!   [`KEEPALIVE`] keeps it from expiring, and closing the stream ends it and its
//!   upstream sessions, as a DELETE would.
//!
//! The stream is held by this process, so the POSTs of a legacy client must reach the
//! replica holding its stream (the transport's nature). In stateless mode the stream is
//! served too, with no gateway session: the stream alone is the state (the negotiated
//! version, and the server requests awaiting the client's answer), and each request
//! runs on its own over upstream sessions opened for it ([`post_stateless`]). This
//! module frames messages only; it must not serve methods itself.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{self, HeaderMap};
use http::{Response, StatusCode, Uri};
use rand::RngCore;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::McpBackend;
use super::authz::Caller;
use super::federation::{Ctx, Session};
use super::jsonrpc::{self, ClientMessage, McpError};
use super::relay::ClientStream;
use super::server::{self, accepted, rpc_json, session_by_id};
use super::stream::{self, AbortOnDrop};
use super::upstream::{SESSION_HEADER, VERSION_HEADER};
use crate::http::body::Body;
use crate::telemetry::Metrics;

/// How often an idle event stream gets a comment (and its session a touch).
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// The query parameter of the POST endpoint naming the stream.
const KEY_PARAM: &str = "sessionId";

/// The open legacy event streams of a backend, by key.
#[derive(Debug, Default)]
pub struct LegacyStreams {
    streams: Mutex<HashMap<String, Arc<LegacyStream>>>,
}

impl LegacyStreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<LegacyStream>>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, key: &str) -> Option<Arc<LegacyStream>> {
        self.lock().get(key).cloned()
    }

    /// Streams open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no stream is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One client's event stream.
struct LegacyStream {
    /// Stateless mode: what stands in for the session (see [`post_stateless`]).
    stateless: Mutex<StatelessStream>,
    /// Who opened it: a keyed hash of its `Authorization` header.
    owner: Option<u64>,
    /// Messages to the client.
    to_client: ClientStream,
    /// Whether `initialize` was received (and not refused).
    initializing: AtomicBool,
    /// The client session, once `initialize` succeeded.
    session: Mutex<Option<String>>,
    /// Readers of the targets' server-to-client streams, relaying onto this one.
    upstream_streams: Mutex<Vec<AbortOnDrop<()>>>,
}

impl std::fmt::Debug for LegacyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyStream")
            .field("session", &self.session_id().is_some())
            .finish_non_exhaustive()
    }
}

impl LegacyStream {
    fn session_id(&self) -> Option<String> {
        self.session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sends a message to the client; false when the stream is gone.
    fn send(&self, msg: Value) -> bool {
        self.to_client.send(msg).is_ok()
    }
}

/// Whether a `GET` asks for a legacy event stream: no session header, no 2026-07-28
/// version, and it accepts `text/event-stream`.
pub fn wants_stream(headers: &HeaderMap) -> bool {
    headers.get(SESSION_HEADER).is_none()
        && headers.get(VERSION_HEADER).is_none_or(|v| {
            !super::MODERN_VERSIONS
                .iter()
                .any(|m| v.as_bytes() == m.as_bytes())
        })
        && server::accepts_sse(headers)
}

/// The stream key of a POST to a legacy endpoint (`?sessionId=`), if it is one.
pub fn stream_key(uri: &Uri) -> Option<&str> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == KEY_PARAM).then_some(v)
    })
}

/// A keyed hash of the caller's `Authorization` header (secrets are not kept).
fn owner_of(headers: &HeaderMap) -> Option<u64> {
    static KEYS: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let auth = headers.get(header::AUTHORIZATION)?;
    let mut h = KEYS.get_or_init(Default::default).build_hasher();
    h.write(auth.as_bytes());
    Some(h.finish())
}

/// Opens a legacy event stream; `path` is where the client reached the backend.
pub fn open(
    ctx: &Ctx<'_>,
    metrics: &Arc<Metrics>,
    headers: &HeaderMap,
    path: &str,
) -> Response<Body> {
    let key = stream_key_new();
    let (tx, rx) = mpsc::unbounded_channel();
    let stream = Arc::new(LegacyStream {
        owner: owner_of(headers),
        initializing: AtomicBool::new(false),
        to_client: tx,
        session: Mutex::default(),
        upstream_streams: Mutex::default(),
        stateless: Mutex::default(),
    });
    ctx.backend
        .state
        .legacy
        .lock()
        .insert(key.clone(), stream.clone());
    tracing::debug!(backend = %ctx.backend.key, "legacy SSE stream opened");
    let endpoint = format!("{path}?{KEY_PARAM}={key}");
    let opening = Bytes::from(format!("event: endpoint\ndata: {endpoint}\n\n"));
    let closer = Closer {
        backend: ctx.backend.clone(),
        metrics: metrics.clone(),
        key,
        stream,
        timeout: ctx.timeout,
    };
    let start = tokio::time::Instant::now() + KEEPALIVE;
    let tick = tokio::time::interval_at(start, KEEPALIVE);
    let events = futures_util::stream::unfold(
        (rx, tick, closer),
        |(mut rx, mut tick, closer)| async move {
            let bytes = tokio::select! {
                msg = rx.recv() => stream::event(&msg?),
                _ = tick.tick() => {
                    closer.keep_alive();
                    Bytes::from_static(b": keep-alive\n\n")
                }
            };
            Some((bytes, (rx, tick, closer)))
        },
    );
    stream::sse_response(futures_util::stream::once(async { opening }).chain(events))
}

/// Serves one message POSTed to the endpoint of stream `key`.
pub async fn post(
    ctx: &Ctx<'_>,
    metrics: &Arc<Metrics>,
    headers: &HeaderMap,
    key: &str,
    body: Bytes,
) -> Response<Body> {
    let found = ctx.backend.state.legacy.get(key);
    let Some(stream) = found.filter(|s| s.owner == owner_of(headers)) else {
        let err = McpError::SessionNotFound(
            "no open SSE stream has this sessionId (closed, or opened on another replica): open the SSE stream again",
        );
        return rpc_json(StatusCode::NOT_FOUND, &jsonrpc::error(None, &err));
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        });
    if !is_json {
        let err = McpError::InvalidRequest("the body must be application/json".into());
        return rpc_json(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &jsonrpc::error(None, &err),
        );
    }
    let msg = match jsonrpc::parse(&body) {
        Ok(m) => m,
        Err(e) => return rpc_json(e.http_status(), &jsonrpc::error(None, &e)),
    };
    if ctx.backend.stateless {
        return post_stateless(ctx, metrics, headers, &stream, msg).await;
    }
    let session_id = stream.session_id();
    match (msg, session_id) {
        (ClientMessage::Request { id, method, params }, None)
            if method == "initialize" && !stream.initializing.swap(true, Ordering::AcqRel) =>
        {
            // Not stopped when the stream closes: it ends the session it opened then.
            tokio::spawn(initialize(
                owned(ctx, metrics, headers),
                stream.clone(),
                id,
                params,
            ));
            accepted()
        }
        (ClientMessage::Request { id, method, .. }, _)
            if method == "initialize" || method == "ping" =>
        {
            answer_on_stream(&stream, &id, &method)
        }
        (ClientMessage::Request { id, .. }, None) => not_initialized(Some(&id)),
        (ClientMessage::Request { id, method, params }, Some(sid)) => {
            let session = match session_by_id(ctx.backend, &sid) {
                Ok(s) => s,
                Err((status, e)) => return rpc_json(status, &jsonrpc::error(Some(&id), &e)),
            };
            let owned = owned(ctx, metrics, headers);
            spawn_on(
                &stream,
                request(owned, stream.clone(), session, id, method, params),
            );
            accepted()
        }
        (ClientMessage::Notification { .. }, None) | (ClientMessage::Response { .. }, None) => {
            not_initialized(None)
        }
        (ClientMessage::Notification { method, params }, Some(sid)) => {
            match session_by_id(ctx.backend, &sid) {
                Ok(session) => {
                    server::client_notification(ctx, &session, &method, params);
                    accepted()
                }
                Err((status, e)) => rpc_json(status, &jsonrpc::error(None, &e)),
            }
        }
        (ClientMessage::Response { id, message }, Some(sid)) => {
            match session_by_id(ctx.backend, &sid) {
                Ok(session) => {
                    server::answer_server_request(ctx, &session, &id, message).await;
                    accepted()
                }
                Err((status, e)) => rpc_json(status, &jsonrpc::error(None, &e)),
            }
        }
    }
}

/// The requests a stream past its first `initialize` gets answered by the gateway
/// itself, statefully or not: `ping` on the stream, a second `initialize` refused.
fn answer_on_stream(stream: &LegacyStream, id: &Value, method: &str) -> Response<Body> {
    if method == "ping" {
        stream.send(jsonrpc::result(id, json!({})));
        return accepted();
    }
    let err = McpError::InvalidRequest(
        "initialize was sent on this SSE stream already; open a new stream for a new session"
            .into(),
    );
    rpc_json(StatusCode::BAD_REQUEST, &jsonrpc::error(Some(id), &err))
}

fn not_initialized(id: Option<&Value>) -> Response<Body> {
    let err = McpError::InvalidRequest("send initialize on this SSE session first".into());
    rpc_json(StatusCode::BAD_REQUEST, &jsonrpc::error(id, &err))
}

/// What a request served in the background needs, owned.
struct Owned {
    backend: Arc<McpBackend>,
    metrics: Arc<Metrics>,
    headers: HeaderMap,
    timeout: Duration,
}

fn owned(ctx: &Ctx<'_>, metrics: &Arc<Metrics>, headers: &HeaderMap) -> Owned {
    Owned {
        backend: ctx.backend.clone(),
        metrics: metrics.clone(),
        headers: headers.clone(),
        timeout: ctx.timeout,
    }
}

impl Owned {
    fn ctx(&self, relay: Option<ClientStream>) -> Ctx<'_> {
        Ctx {
            backend: &self.backend,
            metrics: self.metrics.mcp(),
            caller: Caller {
                headers: &self.headers,
            },
            timeout: self.timeout,
            relay,
        }
    }
}

/// Runs `work` until it ends or the client's stream closes.
fn spawn_on(
    stream: &Arc<LegacyStream>,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let to_client = stream.to_client.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = work => {}
            () = to_client.closed() => {}
        }
    });
}

/// `initialize`: the client session, then the targets' server-to-client streams.
async fn initialize(o: Owned, stream: Arc<LegacyStream>, id: Value, params: Option<Value>) {
    let ctx = o.ctx(None);
    match ctx.initialize(params.as_ref()).await {
        Ok((result, session_id)) => {
            let _ = ctx.backend.state.sessions.touch(&session_id);
            ctx.metrics
                .set_sessions(&ctx.backend.key, ctx.backend.state.sessions.active());
            // Kept before the answer goes out: the client's next message needs it.
            *stream
                .session
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(session_id.clone());
            // The targets' server-to-client streams are open before the client hears of
            // the session, so nothing they announce after its first call is missed.
            if let Ok(session) = session_by_id(ctx.backend, &session_id) {
                let readers =
                    stream::relay_upstream_streams(&ctx, &session, &stream.to_client).await;
                stream
                    .upstream_streams
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(readers);
                if stream.to_client.is_closed() {
                    // The client left while the targets were asked: nobody will end it.
                    stream
                        .upstream_streams
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clear();
                    server::end_session(ctx.backend, ctx.metrics, &session, ctx.timeout).await;
                    return;
                }
            }
            stream.send(jsonrpc::result(&id, result));
        }
        Err(e) => {
            stream.initializing.store(false, Ordering::Release);
            stream.send(jsonrpc::error(Some(&id), &e));
        }
    }
}

/// Any other request: served by federation, its messages and answer on the stream.
async fn request(
    o: Owned,
    stream: Arc<LegacyStream>,
    session: Session,
    id: Value,
    method: String,
    params: Option<Value>,
) {
    let ctx = o.ctx(Some(stream.to_client.clone()));
    let answer = match ctx.serve(&session, &method, &id, params).await {
        Ok(r) => jsonrpc::result(&id, r.into_value()),
        Err(e) => jsonrpc::error(Some(&id), &e),
    };
    stream.send(answer);
}

/// Stateless mode: the stream's own state, which lives and dies with the stream (no
/// gateway session exists; the targets see upstream sessions opened for each request
/// and ended after it).
#[derive(Debug, Default)]
struct StatelessStream {
    /// The version `initialize` negotiated; requests before it are refused.
    version: Option<String>,
    /// Server requests relayed to the client and not answered yet, by the id the
    /// client sees (`"<target>:<n>"`, `n` counting on this stream: two requests'
    /// upstream sessions may use the same ids).
    asked: HashMap<String, Asked>,
    /// The `n` of the next relayed server request.
    next_asked: u64,
}

/// A server request relayed in stateless mode: whom the client's answer goes to.
#[derive(Debug)]
struct Asked {
    target: String,
    /// The target's own id of the request.
    original: Value,
    /// The upstream session of the request that the target asked during.
    upstream: super::upstream::UpstreamSession,
}

impl LegacyStream {
    fn stateless(&self) -> std::sync::MutexGuard<'_, StatelessStream> {
        self.stateless
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A message on a legacy stream in stateless mode. The stream is the only state:
/// `initialize` negotiates (upstream sessions opened to merge the offer, then ended)
/// and the stream keeps the version; each later request runs on its own over upstream
/// sessions opened for it and ended after it, and its messages and answer come on the
/// stream. Server requests of the targets are relayed under ids of the stream's own
/// and the client's answers go back to the upstream session of the request that
/// asked. Client notifications have nothing to reach (no session) and are dropped, as
/// on streamable HTTP in this mode.
async fn post_stateless(
    ctx: &Ctx<'_>,
    metrics: &Arc<Metrics>,
    headers: &HeaderMap,
    stream: &Arc<LegacyStream>,
    msg: ClientMessage,
) -> Response<Body> {
    let version = stream.stateless().version.clone();
    match (msg, version) {
        (ClientMessage::Request { id, method, params }, None) if method == "initialize" => {
            let o = owned(ctx, metrics, headers);
            let stream = stream.clone();
            spawn_on(&stream.clone(), async move {
                let ctx = o.ctx(None);
                let answer = match ctx.handshake(params.as_ref()).await {
                    Ok((result, state)) => {
                        super::handshake::end_sessions(ctx.backend, state.upstreams, ctx.timeout);
                        stream.stateless().version = Some(state.version);
                        jsonrpc::result(&id, result)
                    }
                    Err(e) => jsonrpc::error(Some(&id), &e),
                };
                stream.send(answer);
            });
            accepted()
        }
        (ClientMessage::Request { id, method, .. }, _)
            if method == "initialize" || method == "ping" =>
        {
            answer_on_stream(stream, &id, &method)
        }
        (ClientMessage::Request { id, .. }, None) => not_initialized(Some(&id)),
        (ClientMessage::Request { id, method, params }, Some(version)) => {
            let o = owned(ctx, metrics, headers);
            spawn_on(
                stream,
                request_stateless(o, stream.clone(), version, id, method, params),
            );
            accepted()
        }
        (ClientMessage::Notification { .. }, _) => accepted(),
        (ClientMessage::Response { id, message }, _) => {
            let Err(mut message) = ctx.backend.state.asking.answer(&id, message) else {
                return accepted();
            };
            let asked = id.as_str().and_then(|k| stream.stateless().asked.remove(k));
            let Some(asked) = asked else {
                tracing::debug!(backend = %ctx.backend.key, %id, "client response to no relayed request dropped");
                return accepted();
            };
            let Some(t) = ctx.backend.target(&asked.target).cloned() else {
                return accepted();
            };
            message["id"] = asked.original;
            if let Err(e) = t.notify(&asked.upstream, &message, ctx.timeout).await {
                tracing::info!(backend = %ctx.backend.key, target = %t.name, error = %e, "client response not delivered to the target");
            }
            accepted()
        }
    }
}

/// A request in stateless mode: served over upstream sessions of its own, its relayed
/// messages passed on to the stream (server requests renamed, see [`StatelessStream`]).
async fn request_stateless(
    o: Owned,
    stream: Arc<LegacyStream>,
    version: String,
    id: Value,
    method: String,
    params: Option<Value>,
) {
    let session = Session::stateless(&version);
    let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
    let relayed = {
        let (stream, session) = (stream.clone(), session.clone());
        let backend = o.backend.clone();
        async move {
            let mut keys = Vec::new();
            while let Some(mut msg) = rx.recv().await {
                let id = msg.get("id");
                // Input requests of 2026-07-28 targets are answered to the request
                // waiting for them, under their own ids.
                let waiting = id.is_some_and(|i| backend.state.asking.is_waiting(i));
                if !waiting
                    && msg.get("method").is_some()
                    && let Some((target, original)) = msg
                        .get("id")
                        .and_then(|i| crate::mcp::relay::parse_server_request_id(i))
                        .map(|(t, o)| (t.to_owned(), o))
                    && let Some(upstream) = session.upstream(&target)
                {
                    let mut st = stream.stateless();
                    let key = format!("{target}:{}", st.next_asked);
                    st.next_asked += 1;
                    st.asked.insert(
                        key.clone(),
                        Asked {
                            target,
                            original,
                            upstream,
                        },
                    );
                    drop(st);
                    msg["id"] = json!(key);
                    keys.push(key);
                }
                stream.send(msg);
            }
            keys
        }
    };
    let served = async {
        let ctx = o.ctx(Some(tx));
        let r = ctx.serve(&session, &method, &id, params).await;
        session.finish(ctx.backend, ctx.timeout);
        // `ctx` (and the relay's sender with it) is dropped here: the relaying ends.
        r
    };
    let (r, keys) = tokio::join!(served, relayed);
    // Questions the client never answered die with the request.
    {
        let mut st = stream.stateless();
        for k in keys {
            st.asked.remove(&k);
        }
    }
    stream.send(match r {
        Ok(r) => jsonrpc::result(&id, r.into_value()),
        Err(e) => jsonrpc::error(Some(&id), &e),
    });
}

/// Owned by the stream's body: keeps the session alive while the client reads, and ends
/// it when the body is dropped (the client went away, or the proxy stops).
struct Closer {
    backend: Arc<McpBackend>,
    metrics: Arc<Metrics>,
    key: String,
    stream: Arc<LegacyStream>,
    timeout: Duration,
}

impl Closer {
    fn keep_alive(&self) {
        if let Some(id) = self.stream.session_id() {
            let _ = self.backend.state.sessions.touch(&id);
        }
    }
}

impl Drop for Closer {
    fn drop(&mut self) {
        self.backend.state.legacy.lock().remove(&self.key);
        self.stream
            .upstream_streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        tracing::debug!(backend = %self.backend.key, "legacy SSE stream closed; ending its session");
        let Some(id) = self.stream.session_id() else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (backend, metrics, timeout) =
            (self.backend.clone(), self.metrics.clone(), self.timeout);
        handle.spawn(async move {
            if let Ok(session) = session_by_id(&backend, &id) {
                server::end_session(&backend, metrics.mcp(), &session, timeout).await;
            }
        });
    }
}

/// A random key naming a stream.
fn stream_key_new() -> String {
    let mut k = [0u8; 16];
    rand::rng().fill_bytes(&mut k);
    k.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn only_sessionless_event_stream_gets_are_legacy() {
        let mut h = HeaderMap::new();
        assert!(!wants_stream(&h), "must accept text/event-stream");
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        assert!(wants_stream(&h));
        h.insert(SESSION_HEADER, HeaderValue::from_static("abc"));
        assert!(!wants_stream(&h), "a streamable-HTTP GET stream");
    }

    #[test]
    fn the_stream_key_comes_from_the_query() {
        let uri = |s: &str| s.parse::<Uri>().unwrap_or_default();
        assert_eq!(stream_key(&uri("/mcp/sse?sessionId=ab12")), Some("ab12"));
        assert_eq!(stream_key(&uri("/mcp?x=1&sessionId=ab12")), Some("ab12"));
        assert_eq!(stream_key(&uri("/mcp?session=ab12")), None);
        assert_eq!(stream_key(&uri("/mcp")), None);
    }
}
