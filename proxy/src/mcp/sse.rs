//! The legacy HTTP+SSE MCP client (protocol 2024-11-05) towards one target: a `GET` on
//! the target's SSE URL opens an event stream whose first event, `endpoint`, names the
//! URL to POST messages to; every POST is acknowledged (202) and the answers arrive on
//! the stream as `message` events.
//!
//! One stream per upstream session: [`SseTarget::initialize`] opens it, keeps it in the
//! backend's [`SsePool`] under a random key, and the key is the upstream session id the
//! client's session remembers. A key this process does not hold (stream closed, another
//! replica, a restart) answers [`TargetError::SessionGone`], so federation opens a new
//! stream, as it does for a restarted streamable-HTTP server.
//!
//! What arrives on a stream besides answers: progress goes to the relay of the request
//! whose progress token it carries; other notifications and server-to-client requests go
//! to the most recent request in flight that has a relay (the client is reading its
//! answer), else to the session's server-to-client stream when the client opened one
//! (`open_stream`), else they are dropped (a request gets a JSON-RPC error, `ping` an
//! empty result, so the target does not wait).
//!
//! This module must not know about client sessions, names or federation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use rand::RngCore;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::inbox::Inbox;
use super::jsonrpc::{self, code};
use super::relay::Relay;
use super::remote::HttpAddress;
use super::streamable::{EventStream, SseParser, event_stream_get, read_limited};
use super::upstream::{
    Reply, TargetError, UpstreamSession, initialize_request, negotiated_version, reply_from, within,
};
use crate::http::body;
use crate::http::upstream::UpstreamClient;

/// Largest event (or unfinished line) held while reading a stream; a target sending a
/// bigger one loses its stream.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// One upstream MCP server reached over the legacy HTTP+SSE transport.
pub struct SseTarget {
    name: Arc<str>,
    url: String,
    client: Arc<UpstreamClient>,
    host: HeaderValue,
    scheme: Scheme,
    authority: Authority,
    path: PathAndQuery,
    pool: Arc<SsePool>,
}

impl std::fmt::Debug for SseTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseTarget")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl SseTarget {
    /// A target at `addr` (already validated), its streams kept in `pool`.
    pub fn new(name: &str, addr: HttpAddress, pool: Arc<SsePool>) -> SseTarget {
        SseTarget {
            name: name.into(),
            url: addr.url,
            client: addr.client,
            host: addr.host,
            scheme: addr.scheme,
            authority: addr.authority,
            path: addr.path,
            pool,
        }
    }

    /// Opens a session: the event stream, then `initialize` and
    /// `notifications/initialized` through it. Returns the session and the target's
    /// initialize result.
    pub async fn initialize(
        &self,
        version: &str,
        timeout: Duration,
    ) -> Result<(UpstreamSession, Value), TargetError> {
        let conn = within(timeout, self.connect()).await??;
        let key = connection_key();
        self.pool.insert(&self.name, &key, conn);
        let mut session = UpstreamSession {
            target: self.name.to_string(),
            id: Some(key),
            version: version.to_owned(),
            sse: true,
        };
        let handshake = async {
            let id = json!(0);
            let reply = self
                .request(
                    &session,
                    &initialize_request(&id, version),
                    &id,
                    timeout,
                    None,
                )
                .await?;
            let result =
                reply.map_err(|e| TargetError::Protocol(format!("initialize was refused: {e}")))?;
            session.version = negotiated_version(&result, version);
            let note = jsonrpc::notification("notifications/initialized", None);
            self.notify(&session, &note, timeout).await?;
            Ok(result)
        };
        match handshake.await {
            Ok(result) => Ok((session, result)),
            Err(e) => {
                self.end(&session);
                Err(e)
            }
        }
    }

    /// Sends a request on the session's stream and waits for the response to `id`.
    pub async fn request(
        &self,
        session: &UpstreamSession,
        msg: &Value,
        id: &Value,
        timeout: Duration,
        relay: Option<&Relay>,
    ) -> Result<Reply, TargetError> {
        let conn = self.connection(session)?;
        let key = id.to_string();
        let (tx, rx) = oneshot::channel();
        let _waiting = conn.shared.wait(key.clone(), tx, relay.cloned());
        within(timeout, async {
            self.post(&conn, msg).await?;
            rx.await.map_err(|_| TargetError::StreamClosed)
        })
        .await?
    }

    /// Sends a notification (or a response to a server request) on the session's stream.
    pub async fn notify(
        &self,
        session: &UpstreamSession,
        msg: &Value,
        timeout: Duration,
    ) -> Result<(), TargetError> {
        let conn = self.connection(session)?;
        within(timeout, self.post(&conn, msg)).await?
    }

    /// Routes what the session's stream carries outside requests to the returned stream.
    pub fn open_stream(&self, session: &UpstreamSession) -> Result<EventStream, TargetError> {
        let conn = self.connection(session)?;
        let (tx, rx) = mpsc::unbounded_channel();
        conn.shared.listen(tx);
        Ok(EventStream::from_channel(rx))
    }

    /// Ends `session`: its stream is closed, which ends it on the target.
    pub fn end(&self, session: &UpstreamSession) {
        if let Some(key) = &session.id
            && self.pool.remove(&self.name, key).is_some()
        {
            tracing::debug!(target = %self.name, "upstream SSE session ended; stream closed");
        }
    }

    fn connection(&self, session: &UpstreamSession) -> Result<Arc<SseConnection>, TargetError> {
        let key = session.id.as_deref().ok_or(TargetError::SessionGone)?;
        match self.pool.get(&self.name, key) {
            Some(c) if c.url == self.url && !c.shared.is_closed() => Ok(c),
            Some(_) => {
                // Closed, or opened for an older config of this target.
                self.pool.remove(&self.name, key);
                Err(TargetError::SessionGone)
            }
            None => Err(TargetError::SessionGone),
        }
    }

    /// `GET` the SSE URL and wait for the `endpoint` event.
    async fn connect(&self) -> Result<Arc<SseConnection>, TargetError> {
        let mut req = event_stream_get(&self.path, &self.host)?;
        req.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let resp = self.client.send(req).await?;
        if !resp.status().is_success() {
            return Err(TargetError::Status(resp.status()));
        }
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/event-stream")
            });
        if !is_sse {
            return Err(TargetError::Protocol(
                "the SSE URL did not answer with an event stream".into(),
            ));
        }
        let shared = Arc::new(Inbox::default());
        let (found, endpoint) = oneshot::channel();
        let reader = Reader {
            name: self.name.clone(),
            shared: shared.clone(),
            base: EndpointBase {
                scheme: self.scheme.clone(),
                authority: self.authority.clone(),
                path: self.path.clone(),
            },
            client: self.client.clone(),
            host: self.host.clone(),
        };
        let task = AbortOnDrop(tokio::spawn(reader.run(resp.into_body(), found)));
        let endpoint = endpoint
            .await
            .map_err(|_| {
                TargetError::Protocol("the event stream ended before naming an endpoint".into())
            })?
            .map_err(TargetError::Protocol)?;
        Ok(Arc::new(SseConnection {
            url: self.url.clone(),
            endpoint,
            shared,
            _reader: task,
        }))
    }

    /// POSTs one message to the session's endpoint; the target acknowledges it (202).
    async fn post(&self, conn: &SseConnection, msg: &Value) -> Result<(), TargetError> {
        post_to(&self.client, &self.host, &conn.endpoint, msg).await
    }
}

async fn post_to(
    client: &UpstreamClient,
    host: &HeaderValue,
    endpoint: &PathAndQuery,
    msg: &Value,
) -> Result<(), TargetError> {
    let bytes = serde_json::to_vec(msg).map_err(|e| TargetError::Protocol(e.to_string()))?;
    let mut req = Request::new(body::full(bytes));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = endpoint
        .as_str()
        .parse()
        .map_err(|_| TargetError::Protocol("invalid endpoint".into()))?;
    let h = req.headers_mut();
    h.insert(header::HOST, host.clone());
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let resp = client.send(req).await?;
    let status = resp.status();
    // Read the (short) acknowledgement so the connection can be reused.
    let _ = read_limited(resp.into_body()).await;
    match status {
        s if s.is_success() => Ok(()),
        // The target no longer knows the session (its stream is gone).
        StatusCode::NOT_FOUND => Err(TargetError::SessionGone),
        s => Err(TargetError::Status(s)),
    }
}

/// The open event streams of a backend's SSE targets, by (target, key); kept across
/// config reloads like stdio processes.
#[derive(Debug, Default)]
pub struct SsePool {
    conns: Mutex<Conns>,
}

/// Open streams by (target, key).
type Conns = HashMap<(Arc<str>, String), Arc<SseConnection>>;

impl SsePool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Conns> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, target: &Arc<str>, key: &str, conn: Arc<SseConnection>) {
        self.lock().insert((target.clone(), key.to_owned()), conn);
    }

    fn get(&self, target: &Arc<str>, key: &str) -> Option<Arc<SseConnection>> {
        self.lock().get(&(target.clone(), key.to_owned())).cloned()
    }

    fn remove(&self, target: &Arc<str>, key: &str) -> Option<Arc<SseConnection>> {
        self.lock().remove(&(target.clone(), key.to_owned()))
    }

    /// Streams held open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no stream is held open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One open event stream: the endpoint it announced, and what its reader routes to.
/// Dropping it stops the reader, which closes the stream.
#[derive(Debug)]
struct SseConnection {
    /// The target URL it was opened for (a reloaded config may change it).
    url: String,
    endpoint: PathAndQuery,
    shared: Arc<Inbox>,
    _reader: AbortOnDrop,
}

/// What the endpoint announced by a stream is resolved against.
#[derive(Debug, Clone)]
struct EndpointBase {
    scheme: Scheme,
    authority: Authority,
    path: PathAndQuery,
}

impl EndpointBase {
    /// The path to POST to for the `endpoint` event's data: a path, a path relative to
    /// the SSE URL, or an absolute URL on the same scheme, host and port (messages are
    /// never sent elsewhere).
    fn resolve(&self, data: &str) -> Result<PathAndQuery, String> {
        let data = data.trim();
        let refuse = || format!("the target named an endpoint that is not usable: {data:?}");
        let path = if data.contains("://") {
            let uri: http::Uri = data.parse().map_err(|_| refuse())?;
            let same_origin = uri.scheme() == Some(&self.scheme)
                && uri
                    .authority()
                    .is_some_and(|a| a.as_str().eq_ignore_ascii_case(self.authority.as_str()));
            if !same_origin {
                return Err(format!(
                    "the target named an endpoint on another origin: {data:?}"
                ));
            }
            uri.path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
        } else if data.starts_with("//") || data.is_empty() {
            return Err(refuse());
        } else if data.starts_with('/') {
            data.to_owned()
        } else if data.starts_with('?') {
            format!("{}{data}", self.path.path())
        } else {
            let base = self.path.path();
            let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{data}")
        };
        path.parse::<PathAndQuery>().map_err(|_| refuse())
    }
}

/// Reads one event stream until it ends, routing what it carries.
struct Reader {
    name: Arc<str>,
    shared: Arc<Inbox>,
    base: EndpointBase,
    client: Arc<UpstreamClient>,
    host: HeaderValue,
}

type Found = oneshot::Sender<Result<PathAndQuery, String>>;

impl Reader {
    async fn run(self, mut body: hyper::body::Incoming, found: Found) {
        let mut found = Some(found);
        let mut endpoint: Option<PathAndQuery> = None;
        let mut parser = SseParser::default();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            for event in parser.push_events(&data) {
                match event.name.as_deref() {
                    Some("endpoint") if endpoint.is_none() => {
                        let resolved = self.base.resolve(&event.data);
                        endpoint = resolved.as_ref().ok().cloned();
                        if let Some(f) = found.take() {
                            let _ = f.send(resolved);
                        }
                    }
                    None | Some("message") => match serde_json::from_str(&event.data) {
                        Ok(msg) => self.dispatch(msg, endpoint.as_ref()),
                        Err(e) => {
                            tracing::debug!(target = %self.name, error = %e, "skipping a non-JSON upstream SSE event")
                        }
                    },
                    _ => {}
                }
            }
            if parser.pending_len() > MAX_EVENT_BYTES {
                tracing::warn!(target = %self.name, "upstream SSE event over {MAX_EVENT_BYTES} bytes; closing the stream");
                break;
            }
        }
        self.shared.close();
        tracing::debug!(target = %self.name, "upstream SSE stream ended");
    }

    fn dispatch(&self, msg: Value, endpoint: Option<&PathAndQuery>) {
        let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
        let id = msg.get("id").cloned();
        match (method, id) {
            (None, Some(id)) => {
                if let Some(reply) = reply_from(&msg, &id) {
                    self.shared.answer(&id, reply);
                }
            }
            (Some(method), id) => {
                let Some(msg) = self.shared.route(msg) else {
                    return;
                };
                let (Some(id), Some(endpoint)) = (id, endpoint) else {
                    tracing::debug!(target = %self.name, method, "upstream SSE notification for nobody dropped");
                    return;
                };
                // A server request nobody can answer: answered here, so the target
                // does not wait.
                let answer = if method == "ping" {
                    jsonrpc::result(&id, json!({}))
                } else {
                    json!({ "jsonrpc": "2.0", "id": id, "error": {
                        "code": code::METHOD_NOT_FOUND,
                        "message": format!("no client is listening for {method}"),
                    }})
                };
                drop(msg);
                let (client, host, endpoint) =
                    (self.client.clone(), self.host.clone(), endpoint.clone());
                tokio::spawn(async move {
                    let _ = post_to(&client, &host, &endpoint, &answer).await;
                });
            }
            (None, None) => {}
        }
    }
}

/// A task stopped when its handle is dropped.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A random key naming an open stream.
fn connection_key() -> String {
    let mut k = [0u8; 16];
    rand::rng().fill_bytes(&mut k);
    k.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> EndpointBase {
        EndpointBase {
            scheme: Scheme::HTTP,
            authority: Authority::from_static("127.0.0.1:9001"),
            path: PathAndQuery::from_static("/mcp/sse"),
        }
    }

    #[test]
    fn endpoints_resolve_against_the_sse_url_and_stay_on_its_origin() {
        let b = base();
        let ok = |d: &str| b.resolve(d).map(|p| p.as_str().to_owned());
        assert_eq!(
            ok("/messages/?session_id=ab"),
            Ok("/messages/?session_id=ab".into())
        );
        assert_eq!(
            ok("messages?sessionId=1"),
            Ok("/mcp/messages?sessionId=1".into())
        );
        assert_eq!(ok("?sessionId=1"), Ok("/mcp/sse?sessionId=1".into()));
        assert_eq!(
            ok("http://127.0.0.1:9001/m?s=1"),
            Ok("/m?s=1".into()),
            "an absolute URL on the same origin"
        );
        for bad in [
            "http://198.18.0.9:9001/m",
            "https://127.0.0.1:9001/m",
            "//evil.example/m",
            "",
        ] {
            assert!(b.resolve(bad).is_err(), "{bad}");
        }
    }
}
