//! The streamable-HTTP MCP client towards one target: `initialize` (then
//! `notifications/initialized`), requests and notifications carrying the target's
//! session id and protocol version, `DELETE` to end a session. Responses may come as
//! JSON or as an SSE stream; either way the response to our request id is returned, and
//! the other messages of a stream (progress, logs, server requests) go to a [`Relay`].
//!
//! A target that speaks only the 2026-07-28 style refuses `initialize` with
//! `UNSUPPORTED_PROTOCOL_VERSION` naming only versions of that style. The gateway then
//! asks it `server/discover` instead (its answer is the target's offer, like an
//! initialize result), remembers that the target is of that style, and sends it every
//! message wrapped in the per-request envelope (`envelope`) with the routing headers,
//! without a session: the upstream session it returns has no id and the version of
//! that style. Results lose the fields only that style adds.
//!
//! A response stream that ends before the response (a server polling its clients,
//! SEP-1699) is resumed: after the `retry` time the stream named (1 s without one), a
//! `GET` carrying `Last-Event-ID` (the last event id seen) continues it, at most
//! [`MAX_RESUMPTIONS`] times and within the request's time limit. A stream that ends
//! without any event id cannot be resumed: that is an invalid answer.
//!
//! It runs over the proxy's pooled [`UpstreamClient`]. It must not know about client
//! sessions, names or federation: callers decide what to send.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::envelope::{self, METHOD_HEADER, NAME_HEADER};
use super::jsonrpc;
use super::relay::Relay;
use super::upstream::{
    Reply, ReplyForm, SESSION_HEADER, Taken, TargetError, UpstreamSession, VERSION_HEADER,
    initialize_request, negotiated_version, within,
};
use crate::http::body;
use crate::http::upstream::UpstreamClient;

/// Largest upstream response body read, JSON or SSE.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// How many times one response stream is resumed before the request fails.
const MAX_RESUMPTIONS: u32 = 8;
/// Wait before resuming a stream that named no `retry` time.
const DEFAULT_RETRY: Duration = Duration::from_secs(1);
/// Longest `retry` time obeyed (a bigger one is cut to this).
const MAX_RETRY: Duration = Duration::from_secs(30);

/// One upstream MCP server reached over streamable HTTP.
pub struct HttpTarget {
    name: Arc<str>,
    url: String,
    client: Arc<UpstreamClient>,
    host: HeaderValue,
    path: http::uri::PathAndQuery,
    /// Set once the target refused `initialize` as a server of the 2026-07-28 style
    /// only: sessions are opened with `server/discover` from then on.
    modern_only: AtomicBool,
    /// What [`HttpTarget::open_stateless`] learned: whether the target answers
    /// `server/discover` (`Some(true)`) or not, and its last offer.
    discovers: Mutex<(Option<bool>, Option<Value>)>,
}

impl std::fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTarget")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl HttpTarget {
    /// The target's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The target's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A target at `url` (already validated) reached through `client`.
    pub fn new(
        name: &str,
        url: &str,
        client: Arc<UpstreamClient>,
        host: HeaderValue,
        path: http::uri::PathAndQuery,
    ) -> HttpTarget {
        HttpTarget {
            name: name.into(),
            url: url.to_owned(),
            client,
            host,
            path,
            modern_only: AtomicBool::new(false),
            discovers: Mutex::default(),
        }
    }

    /// Opens a session: `initialize` with the gateway's own client identity, then
    /// `notifications/initialized`. Returns the session and the target's initialize
    /// result. A target of the 2026-07-28 style only is asked `server/discover` instead
    /// (see the module comment).
    pub async fn initialize(
        &self,
        version: &str,
        timeout: Duration,
    ) -> Result<(UpstreamSession, Value), TargetError> {
        if self.modern_only.load(Ordering::Relaxed) {
            return self.discover(MODERN_DEFAULT, timeout).await;
        }
        let id = json!(0);
        let msg = initialize_request(&id, version);
        let (reply, session_id) = self
            .exchange::<Value>(None, None, &msg, &id, timeout, None)
            .await?;
        let result = match reply {
            Ok(result) => result,
            Err(e) => match envelope::modern_only_refusal(&e) {
                Some(modern) => {
                    if !self.modern_only.swap(true, Ordering::Relaxed) {
                        tracing::info!(target = %self.name, url = %self.url, version = modern, "MCP target speaks only the 2026-07-28 protocol style; using it without sessions");
                    }
                    return self.discover(modern, timeout).await;
                }
                None => {
                    return Err(TargetError::Protocol(format!(
                        "initialize was refused: {e}"
                    )));
                }
            },
        };
        let session = UpstreamSession {
            target: self.name.to_string(),
            id: session_id,
            version: negotiated_version(&result, version),
            sse: false,
        };
        let note = jsonrpc::notification("notifications/initialized", None);
        self.notify(&session, &note, timeout).await?;
        Ok((session, result))
    }

    /// Opens a session for one request of stateless mode: when the target speaks the
    /// 2026-07-28 style (alone or besides the session style), a session of that style,
    /// which needs no handshake (asked `server/discover` once; its offer is reused
    /// after); otherwise, `initialize`. A target that does not answer `server/discover`
    /// is not asked again.
    pub async fn open_stateless(
        &self,
        version: &str,
        timeout: Duration,
    ) -> Result<(UpstreamSession, Value), TargetError> {
        let known = {
            let known = self
                .discovers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            known.clone()
        };
        match known {
            (Some(true), Some(offer)) => {
                let session = UpstreamSession {
                    target: self.name.to_string(),
                    id: None,
                    version: MODERN_DEFAULT.to_owned(),
                    sse: false,
                };
                return Ok((session, offer));
            }
            (Some(false), _) => return self.initialize(version, timeout).await,
            _ => {}
        }
        let probed = match self.discover(MODERN_DEFAULT, timeout).await {
            Ok((session, offer)) if envelope::offers_modern(&offer) => Some((session, offer)),
            Ok(_) | Err(TargetError::Protocol(_) | TargetError::Status(_)) => None,
            Err(e) => return Err(e),
        };
        {
            let mut discovers = self
                .discovers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *discovers = (
                Some(probed.is_some()),
                probed.as_ref().map(|(_, o)| o.clone()),
            );
        }
        match probed {
            Some(opened) => {
                tracing::info!(target = %self.name, url = %self.url, "MCP target speaks the 2026-07-28 protocol style; stateless requests use it without sessions");
                Ok(opened)
            }
            None => self.initialize(version, timeout).await,
        }
    }

    /// `server/discover` at `version` (of the 2026-07-28 style): a session without an
    /// id, and the target's offer.
    async fn discover(
        &self,
        version: &str,
        timeout: Duration,
    ) -> Result<(UpstreamSession, Value), TargetError> {
        let session = UpstreamSession {
            target: self.name.to_string(),
            id: None,
            version: version.to_owned(),
            sse: false,
        };
        let id = json!(0);
        let msg = jsonrpc::request(&id, "server/discover", None);
        let offer = self
            .request(&session, &msg, &id, timeout, None)
            .await?
            .map_err(|e| TargetError::Protocol(format!("server/discover was refused: {e}")))?;
        Ok((session, offer))
    }

    /// Sends a request in `session` and waits for the response to `id`.
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

    /// As [`HttpTarget::request`], with the result in form `R` (a raw result is left
    /// in the 2026-07-28 envelope; see [`super::upstream::RawResult`]).
    pub async fn request_as<R: ReplyForm>(
        &self,
        session: &UpstreamSession,
        msg: &Value,
        id: &Value,
        timeout: Duration,
        relay: Option<&Relay>,
    ) -> Result<Result<R, Value>, TargetError> {
        let (mut reply, _) = self
            .exchange::<R>(
                session.id.as_deref(),
                Some(&session.version),
                msg,
                id,
                timeout,
                relay,
            )
            .await?;
        if envelope::is_modern_version(&session.version)
            && let Ok(result) = &mut reply
        {
            result.unwrap_modern();
        }
        Ok(reply)
    }

    /// Sends a notification in `session` (the target answers 202).
    pub async fn notify(
        &self,
        session: &UpstreamSession,
        msg: &Value,
        timeout: Duration,
    ) -> Result<(), TargetError> {
        let req = self.post(session.id.as_deref(), Some(&session.version), msg)?;
        let resp = within(timeout, self.client.send(req)).await??;
        match resp.status() {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND if session.id.is_some() => Err(TargetError::SessionGone),
            s => Err(TargetError::Status(s)),
        }
    }

    /// Ends `session` on the target (`DELETE`); a stateless session needs nothing.
    pub async fn end(
        &self,
        session: &UpstreamSession,
        timeout: Duration,
    ) -> Result<(), TargetError> {
        let Some(id) = &session.id else {
            return Ok(());
        };
        let mut req = Request::new(body::empty());
        *req.method_mut() = Method::DELETE;
        *req.uri_mut() = self
            .path
            .as_str()
            .parse()
            .map_err(|_| TargetError::Protocol("path".into()))?;
        let h = req.headers_mut();
        h.insert(header::HOST, self.host.clone());
        h.insert(SESSION_HEADER, header_value(id)?);
        h.insert(VERSION_HEADER, header_value(&session.version)?);
        let resp = within(timeout, self.client.send(req)).await??;
        match resp.status() {
            // 405: the target does not let clients end sessions; 404: already gone.
            s if s.is_success()
                || s == StatusCode::METHOD_NOT_ALLOWED
                || s == StatusCode::NOT_FOUND =>
            {
                Ok(())
            }
            s => Err(TargetError::Status(s)),
        }
    }

    fn post(
        &self,
        session: Option<&str>,
        version: Option<&str>,
        msg: &Value,
    ) -> Result<Request<body::Body>, TargetError> {
        let modern = version.is_some_and(envelope::is_modern_version);
        let wrapped;
        let msg = match version {
            Some(v) if modern => {
                wrapped = envelope::wrap(msg, v);
                &wrapped
            }
            _ => msg,
        };
        let bytes = serde_json::to_vec(msg).map_err(|e| TargetError::Protocol(e.to_string()))?;
        let mut req = Request::new(body::full(bytes));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self
            .path
            .as_str()
            .parse()
            .map_err(|_| TargetError::Protocol("invalid path".into()))?;
        let h = req.headers_mut();
        h.insert(header::HOST, self.host.clone());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        if let Some(id) = session {
            h.insert(SESSION_HEADER, header_value(id)?);
        }
        if let Some(v) = version {
            h.insert(VERSION_HEADER, header_value(v)?);
        }
        if modern {
            let (method, name) = envelope::routing_headers(msg);
            if let Some(m) = method {
                h.insert(METHOD_HEADER, header_value(m)?);
            }
            if let Some(n) = name {
                h.insert(NAME_HEADER, header_value(&n)?);
            }
        }
        Ok(req)
    }

    /// POSTs `msg` and reads the response to `id`, from a JSON body or an SSE stream.
    /// Returns it with the session id the target assigned (on `initialize`).
    async fn exchange<R: ReplyForm>(
        &self,
        session: Option<&str>,
        version: Option<&str>,
        msg: &Value,
        id: &Value,
        timeout: Duration,
        relay: Option<&Relay>,
    ) -> Result<(Result<R, Value>, Option<String>), TargetError> {
        let req = self.post(session, version, msg)?;
        within(timeout, async {
            let resp = self.client.send(req).await?;
            let status = resp.status();
            if status == StatusCode::NOT_FOUND && session.is_some() {
                return Err(TargetError::SessionGone);
            }
            if status.is_client_error() && is_json(resp.headers()) {
                // A JSON-RPC error answered with a 4xx status (2026-07-28 servers map
                // error codes to statuses): the error is the reply.
                let bytes = read_limited(resp.into_body()).await?;
                return match R::take(bytes, id) {
                    Taken::Reply(Err(e)) => Ok((Err(e), None)),
                    _ => Err(TargetError::Status(status)),
                };
            }
            if !status.is_success() {
                return Err(TargetError::Status(status));
            }
            let session_id = resp
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let is_sse = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| {
                    ct.trim_start()
                        .to_ascii_lowercase()
                        .starts_with("text/event-stream")
                });
            let mut body = resp.into_body();
            let reply = if is_sse {
                let session = session_id.as_deref().or(session);
                self.read_stream_reply(&mut body, session, version, id, relay)
                    .await?
            } else {
                let bytes = read_limited(body).await?;
                match R::take(bytes, id) {
                    Taken::Reply(reply) => reply,
                    Taken::Other(_) => {
                        return Err(TargetError::Protocol("no response to the request".into()));
                    }
                    Taken::NotJson(e) => {
                        return Err(TargetError::Protocol(format!("response is not JSON: {e}")));
                    }
                }
            };
            Ok((reply, session_id))
        })
        .await?
    }
}

impl HttpTarget {
    /// Reads the response to `id` from an SSE response stream, resuming the stream
    /// when it ends first (see the module comment).
    async fn read_stream_reply<R: ReplyForm>(
        &self,
        body: &mut hyper::body::Incoming,
        session: Option<&str>,
        version: Option<&str>,
        id: &Value,
        relay: Option<&Relay>,
    ) -> Result<Result<R, Value>, TargetError> {
        let mut parser = SseParser::default();
        let mut seen = 0usize;
        if let Some(reply) = read_sse_reply(body, &mut parser, &mut seen, id, relay).await? {
            return Ok(reply);
        }
        for _ in 0..MAX_RESUMPTIONS {
            let Some(last) = parser.last_event_id().map(str::to_owned) else {
                break;
            };
            let wait = parser.retry().unwrap_or(DEFAULT_RETRY).min(MAX_RETRY);
            tokio::time::sleep(wait).await;
            let mut req = self.get(session, version)?;
            req.headers_mut()
                .insert("last-event-id", header_value(&last)?);
            let resp = self.client.send(req).await?;
            match resp.status() {
                StatusCode::NOT_FOUND if session.is_some() => return Err(TargetError::SessionGone),
                s if !s.is_success() => return Err(TargetError::Status(s)),
                _ => {}
            }
            tracing::debug!(target = %self.name, last_event_id = %last, "upstream response stream resumed");
            parser.restart();
            let mut body = resp.into_body();
            if let Some(reply) =
                read_sse_reply(&mut body, &mut parser, &mut seen, id, relay).await?
            {
                return Ok(reply);
            }
        }
        Err(TargetError::Protocol(
            "the stream ended without a response".into(),
        ))
    }

    /// A `GET` of the target's server-to-client stream in `session`.
    fn get(
        &self,
        session: Option<&str>,
        version: Option<&str>,
    ) -> Result<Request<body::Body>, TargetError> {
        let mut req = event_stream_get(&self.path, &self.host)?;
        let h = req.headers_mut();
        if let Some(id) = session {
            h.insert(SESSION_HEADER, header_value(id)?);
        }
        if let Some(v) = version {
            h.insert(VERSION_HEADER, header_value(v)?);
        }
        Ok(req)
    }

    /// Opens the server-to-client stream of `session` (`GET`); `None` when the target
    /// offers none (405) or the session is stateless.
    pub async fn open_stream(
        &self,
        session: &UpstreamSession,
        timeout: Duration,
    ) -> Result<Option<EventStream>, TargetError> {
        let Some(id) = &session.id else {
            return Ok(None);
        };
        let req = self.get(Some(id), Some(&session.version))?;
        let resp = within(timeout, self.client.send(req)).await??;
        match resp.status() {
            StatusCode::METHOD_NOT_ALLOWED => Ok(None),
            StatusCode::NOT_FOUND => Err(TargetError::SessionGone),
            s if s.is_success() => Ok(Some(EventStream {
                source: Source::Http(resp.into_body()),
            })),
            s => Err(TargetError::Status(s)),
        }
    }
}

/// A target's server-to-client stream.
#[derive(Debug)]
pub struct EventStream {
    source: Source,
}

#[derive(Debug)]
enum Source {
    /// The body of a streamable-HTTP `GET`.
    Http(hyper::body::Incoming),
    /// Messages a legacy SSE connection routes to the stream (`sse`).
    Channel(mpsc::UnboundedReceiver<Value>),
}

impl EventStream {
    /// A stream fed with messages by a channel.
    pub fn from_channel(rx: mpsc::UnboundedReceiver<Value>) -> EventStream {
        EventStream {
            source: Source::Channel(rx),
        }
    }

    /// Passes every message on the stream to `relay` until the stream ends.
    pub async fn relay_all(self, relay: &Relay) {
        match self.source {
            Source::Http(mut body) => {
                let mut parser = SseParser::default();
                while let Some(Ok(frame)) = body.frame().await {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    for event in parser.push(&data) {
                        if let Ok(msg) = serde_json::from_str::<Value>(&event) {
                            relay.forward(msg);
                        }
                    }
                }
            }
            Source::Channel(mut rx) => {
                while let Some(msg) = rx.recv().await {
                    relay.forward(msg);
                }
            }
        }
    }
}

/// The version of the 2026-07-28 style a target already known to speak only that style
/// is asked at.
const MODERN_DEFAULT: &str = super::MODERN_VERSIONS[super::MODERN_VERSIONS.len() - 1];

fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        })
}

/// `v` as a header value, or a protocol error.
pub(super) fn header_value(v: &str) -> Result<HeaderValue, TargetError> {
    HeaderValue::from_str(v)
        .map_err(|_| TargetError::Protocol("value not allowed in a header".into()))
}

/// A whole response body, at most [`MAX_RESPONSE_BYTES`].
pub(super) async fn read_limited(mut body: hyper::body::Incoming) -> Result<Bytes, TargetError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| TargetError::Protocol(format!("body failed: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_RESPONSE_BYTES {
                return Err(TargetError::Protocol("response too large".into()));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Reads SSE events until the response to `id`; `None` when the stream ends first.
/// Other messages on the stream (progress, logging, server requests) go to `relay`, or
/// are skipped without one. `seen` counts the bytes read over every resumption.
async fn read_sse_reply<R: ReplyForm>(
    body: &mut hyper::body::Incoming,
    parser: &mut SseParser,
    seen: &mut usize,
    id: &Value,
    relay: Option<&Relay>,
) -> Result<Option<Result<R, Value>>, TargetError> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| TargetError::Protocol(format!("stream failed: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        *seen += data.len();
        if *seen > MAX_RESPONSE_BYTES {
            return Err(TargetError::Protocol("stream too large".into()));
        }
        for event in parser.push(&data) {
            // An event with no data (a stream's priming event) carries no message.
            if event.is_empty() {
                continue;
            }
            match R::take(Bytes::from(event.into_bytes()), id) {
                Taken::Reply(reply) => return Ok(Some(reply)),
                Taken::Other(msg) => match relay {
                    Some(r) => {
                        if !r.forward(msg) {
                            tracing::debug!("skipping an upstream stream message");
                        }
                    }
                    None => tracing::debug!(message = %msg, "skipping an upstream stream message"),
                },
                Taken::NotJson(e) => {
                    tracing::debug!(error = %e, "skipping a non-JSON upstream event")
                }
            }
        }
    }
    Ok(None)
}

/// An incremental `text/event-stream` parser that yields each event's `data` (and,
/// with [`SseParser::push_events`], its `event` name).
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    name: Option<String>,
    data: Option<String>,
    /// The last `id` field seen (it carries over events and reconnections).
    last_id: Option<String>,
    /// The last valid `retry` field seen.
    retry: Option<Duration>,
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event` field; `None` means the default type, `message`.
    pub name: Option<String>,
    /// The `data` lines, joined with newlines.
    pub data: String,
}

impl SseParser {
    /// Feeds bytes; returns the data of every event they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.push_events(bytes)
            .into_iter()
            .map(|e| e.data)
            .collect()
    }

    /// Feeds bytes; returns every event they complete.
    pub fn push_events(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line[..pos]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                let name = self.name.take();
                events.extend(self.data.take().map(|data| SseEvent { name, data }));
                continue;
            }
            // `field:value`, `field: value`, or a bare `field` (empty value).
            let (field, value) = match line.split_once(':') {
                Some(("", _)) => continue, // a comment
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "data" => match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                },
                "event" => self.name = Some(value.to_owned()),
                // An id with NUL is ignored, as the SSE specification says.
                "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
                "retry" => {
                    if let Ok(ms) = value.parse::<u64>() {
                        self.retry = Some(Duration::from_millis(ms));
                    }
                }
                _ => {}
            }
        }
        events
    }

    /// The last event id the stream named, for `Last-Event-ID` when resuming it.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref().filter(|id| !id.is_empty())
    }

    /// The reconnection time the stream named (`retry`).
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Forgets a half-read event (its stream ended), keeping the last id and retry
    /// time, before reading the stream that resumes it.
    pub fn restart(&mut self) {
        self.buf.clear();
        self.name = None;
        self.data = None;
    }

    /// Bytes held for an event not complete yet (a bound against endless lines).
    pub fn pending_len(&self) -> usize {
        self.buf.len() + self.data.as_ref().map_or(0, String::len)
    }
}

/// A `GET` of `path` on `host` asking for an event stream (the start of every
/// server-to-client stream, on either HTTP transport).
pub(super) fn event_stream_get(
    path: &http::uri::PathAndQuery,
    host: &HeaderValue,
) -> Result<Request<body::Body>, TargetError> {
    let mut req = Request::new(body::empty());
    *req.uri_mut() = path
        .as_str()
        .parse()
        .map_err(|_| TargetError::Protocol("invalid path".into()))?;
    let h = req.headers_mut();
    h.insert(header::HOST, host.clone());
    h.insert(
        header::ACCEPT,
        HeaderValue::from_static("text/event-stream"),
    );
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_split_across_chunks_and_lines_joined() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: message\r\ndata: {\"a\":").is_empty());
        assert_eq!(
            p.push(b"1}\r\n\r\n: comment\n\ndata:x\ndata: y\n\n"),
            vec!["{\"a\":1}".to_string(), "x\ny".to_string()]
        );
    }

    #[test]
    fn sse_event_names_are_kept_and_reset_per_event() {
        let mut p = SseParser::default();
        assert_eq!(
            p.push_events(b"event: endpoint\ndata: /messages/?session_id=1\n\ndata: {}\n\n"),
            vec![
                SseEvent {
                    name: Some("endpoint".into()),
                    data: "/messages/?session_id=1".into()
                },
                SseEvent {
                    name: None,
                    data: "{}".into()
                },
            ]
        );
        assert!(
            p.push_events(b"event: ping\n\n").is_empty(),
            "no data, no event"
        );
        assert_eq!(p.push_events(b"data\n\n")[0].name, None);
    }

    #[test]
    fn event_ids_and_retry_carry_over_a_restart_and_half_events_do_not() {
        let mut p = SseParser::default();
        assert_eq!(p.last_event_id(), None);
        assert_eq!(
            p.push(b"id: e-1\nretry: 500\ndata: \n\nretry: soon\ndata: {\"x\""),
            vec![String::new()]
        );
        assert_eq!(p.last_event_id(), Some("e-1"));
        assert_eq!(
            p.retry(),
            Some(Duration::from_millis(500)),
            "an invalid retry is ignored"
        );
        p.restart();
        assert_eq!(p.push(b"id: e-2\ndata: {}\n\n"), vec!["{}".to_string()]);
        assert_eq!(
            (p.last_event_id(), p.retry()),
            (Some("e-2"), Some(Duration::from_millis(500)))
        );
    }
}
