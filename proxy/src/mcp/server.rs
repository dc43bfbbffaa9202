//! The downstream side of the MCP gateway: the streamable-HTTP transport (session style).
//!
//! - `POST` one JSON-RPC message (batches are refused). A request is answered with JSON,
//!   or with a one-event SSE stream when the client accepts only `text/event-stream`;
//!   when the client accepts SSE and a target sends messages before its response
//!   (progress, logs, server requests), the answer becomes an SSE stream (`stream`). A
//!   notification or a client response gets 202: `notifications/cancelled` goes to the
//!   target running the request, a response to a relayed server request goes to the
//!   target that asked (`relay`), other notifications to every target.
//! - `initialize` returns the encrypted `Mcp-Session-Id`; every other message must carry
//!   it (400 without, 404 when unknown, ended or expired, as the spec says).
//! - `GET` (accepting `text/event-stream`) opens the server-to-client stream, merged
//!   over the targets' (`stream`); `DELETE` ends the session and its upstream sessions.
//! - A message of the 2026-07-28 style (no session; see `modern`) is served without a
//!   session id, over sessions the gateway holds.
//! - Stateless mode (`sessions.stateless`): no session id is issued or read; each
//!   request runs over upstream sessions opened for it and ended after it; `GET` (but
//!   a legacy client's event stream) and `DELETE` get 405. Messages of the 2026-07-28
//!   style likewise hold nothing.
//! - The legacy HTTP+SSE transport (`legacy`) shares the path: a `GET` without
//!   `Mcp-Session-Id` opens its event stream, a `POST` with `?sessionId=` is one of its
//!   messages.
//!
//! Status rules: 406 when the client accepts neither JSON nor SSE, 415 when the body is
//! not `application/json`, 400 for malformed JSON-RPC, 400 (-32022, listing the
//! supported versions) for an unsupported `MCP-Protocol-Version`. A bad message is answered, never a reason to fail the proxy.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::authz::Caller;
use futures_util::future::join_all;

use super::federation::{Ctx, ListKind, Served, Session};
use super::jsonrpc::{self, ClientMessage, McpError};
use super::session::SessionError;
use super::upstream::{SESSION_HEADER, VERSION_HEADER};
use super::{McpBackend, SUPPORTED_VERSIONS, handshake, legacy, modern, relay, stream};
use crate::config::ir::Policies;
use crate::http::body::{self, Body};
use crate::http::error::ProxyError;
use crate::http::forward::{Outbound, OutboundBody};
use crate::telemetry::Metrics;
use std::sync::Arc;

/// Time limit of each request to a target when no `backendRequest` timeout is set.
pub const DEFAULT_TARGET_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves one HTTP request to an `mcp` backend.
pub async fn serve(
    backend: &Arc<McpBackend>,
    outbound: Outbound,
    policies: &Policies,
    metrics: &Arc<Metrics>,
) -> Result<Response<Body>, ProxyError> {
    let Outbound { head, body, .. } = outbound;
    if let Some(origin) = head.headers.get(header::ORIGIN)
        && !origin_allowed(backend, origin)
    {
        tracing::warn!(backend = %backend.key, origin = ?origin, "MCP request from a browser origin that is not allowed refused");
        return Ok(plain(
            StatusCode::FORBIDDEN,
            "this MCP endpoint does not accept requests from that Origin (see allowedOrigins)\n",
        ));
    }
    let timeout = policies
        .timeouts
        .and_then(|t| t.backend_request)
        .unwrap_or(DEFAULT_TARGET_TIMEOUT);
    let ctx = Ctx {
        backend,
        metrics: metrics.mcp(),
        caller: Caller {
            headers: &head.headers,
        },
        timeout,
        relay: None,
    };
    sweep(backend, timeout);
    let resp = match head.method {
        Method::POST => {
            let bytes = match body {
                OutboundBody::Replayable(b) => b,
                OutboundBody::Streaming(b) => b
                    .collect()
                    .await
                    .map_err(|e| {
                        ProxyError::BadRequest(format!("reading the request body failed: {e}"))
                    })?
                    .to_bytes(),
            };
            match legacy::stream_key(&head.uri) {
                Some(key) => legacy::post(&ctx, metrics, &head.headers, key, bytes).await,
                None => post(&ctx, metrics, &head.headers, bytes).await,
            }
        }
        // A legacy client's event stream is by nature bound to this replica, stateless
        // or not (see `legacy`).
        Method::GET if legacy::wants_stream(&head.headers) => {
            legacy::open(&ctx, metrics, &head.headers, head.uri.path())
        }
        Method::GET | Method::DELETE if backend.stateless => {
            let mut resp = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "this MCP endpoint is stateless: no sessions to stream or end; POST each message\n",
            );
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            resp
        }
        Method::DELETE => delete(&ctx, &head.headers).await,
        Method::GET => get(&ctx, &head.headers).await,
        _ => {
            let mut resp = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "this MCP endpoint serves GET, POST and DELETE\n",
            );
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
            resp
        }
    };
    Ok(resp)
}

/// Whether a browser `Origin` may call the backend: loopback origins always, others only
/// when listed in `allowedOrigins` (DNS-rebinding protection).
fn origin_allowed(backend: &McpBackend, origin: &HeaderValue) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/').to_ascii_lowercase();
    if backend
        .allowed_origins
        .iter()
        .any(|o| o == "*" || *o == origin)
    {
        return true;
    }
    let host = origin
        .split_once("://")
        .map_or("", |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or("");
    let host = crate::http::route::strip_port(host);
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

/// How the client wants a request answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Json,
    Sse,
}

fn answer_style(headers: &HeaderMap) -> Option<Answer> {
    let types: Vec<String> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .collect();
    if types.is_empty()
        || types
            .iter()
            .any(|t| matches!(t.as_str(), "application/json" | "application/*" | "*/*"))
    {
        Some(Answer::Json)
    } else if types
        .iter()
        .any(|t| matches!(t.as_str(), "text/event-stream" | "text/*"))
    {
        Some(Answer::Sse)
    } else {
        None
    }
}

/// Whether the client takes an SSE answer.
pub(super) fn accepts_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.split(';').next().unwrap_or("").trim();
            t.eq_ignore_ascii_case("text/event-stream")
        })
}

async fn post(
    ctx: &Ctx<'_>,
    metrics: &Arc<Metrics>,
    headers: &HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let Some(style) = answer_style(headers) else {
        let err = McpError::InvalidRequest(
            "the client must accept application/json or text/event-stream".into(),
        );
        return rpc(
            StatusCode::NOT_ACCEPTABLE,
            &jsonrpc::error(None, &err),
            Answer::Json,
        );
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
        return rpc(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &jsonrpc::error(None, &err),
            style,
        );
    }
    let msg = match jsonrpc::parse(&body) {
        Ok(m) => m,
        Err(e) => return rpc(e.http_status(), &jsonrpc::error(None, &e), style),
    };
    if modern::is_modern(headers, &msg) {
        return post_modern(ctx, headers, msg, style).await;
    }
    if let Some(v) = headers.get(VERSION_HEADER)
        && !SUPPORTED_VERSIONS
            .iter()
            .any(|s| v.as_bytes() == s.as_bytes())
    {
        let err = McpError::UnsupportedVersion {
            requested: String::from_utf8_lossy(v.as_bytes()).into_owned(),
        };
        let id = match &msg {
            ClientMessage::Request { id, .. } => Some(id),
            _ => None,
        };
        return rpc(StatusCode::BAD_REQUEST, &jsonrpc::error(id, &err), style);
    }
    if ctx.backend.stateless {
        return post_stateless(ctx, headers, msg, style).await;
    }
    match msg {
        ClientMessage::Request { id, method, params } if method == "initialize" => {
            match ctx.initialize(params.as_ref()).await {
                Ok((result, session_id)) => {
                    let _ = ctx.backend.state.sessions.touch(&session_id);
                    ctx.metrics
                        .set_sessions(&ctx.backend.key, ctx.backend.state.sessions.active());
                    let mut resp = rpc(StatusCode::OK, &jsonrpc::result(&id, result), style);
                    if let Ok(v) = HeaderValue::from_str(&session_id) {
                        resp.headers_mut().insert(SESSION_HEADER, v);
                    }
                    resp
                }
                Err(e) => rpc(e.http_status(), &jsonrpc::error(Some(&id), &e), style),
            }
        }
        ClientMessage::Request { id, method, .. } if method == "ping" => {
            rpc(StatusCode::OK, &jsonrpc::result(&id, json!({})), style)
        }
        ClientMessage::Request { id, method, params } => {
            let session = match open_session(ctx, headers) {
                Ok(s) => s,
                Err(e) => return rpc(e.0, &jsonrpc::error(Some(&id), &e.1), style),
            };
            let result = if accepts_sse(headers) && ListKind::of(&method).is_none() {
                let answered =
                    stream::request(ctx, metrics, headers, session, id.clone(), method, params)
                        .await;
                match answered {
                    stream::Answered::Streaming(resp) => return resp,
                    stream::Answered::Done(result) => result.map(Served::Tree),
                }
            } else {
                ctx.serve(&session, &method, &id, params).await
            };
            match result {
                Ok(r) => rpc_result(&id, r, style),
                Err(e) => rpc(e.http_status(), &jsonrpc::error(Some(&id), &e), style),
            }
        }
        ClientMessage::Notification { method, params } => {
            let session = match open_session(ctx, headers) {
                Ok(s) => s,
                Err(e) => return rpc(e.0, &jsonrpc::error(None, &e.1), style),
            };
            client_notification(ctx, &session, &method, params);
            accepted()
        }
        ClientMessage::Response { id, message } => {
            let session = match open_session(ctx, headers) {
                Ok(s) => s,
                Err(e) => return rpc(e.0, &jsonrpc::error(None, &e.1), style),
            };
            answer_server_request(ctx, &session, &id, message).await;
            accepted()
        }
    }
}

/// A session-style message in stateless mode: `initialize` opens the targets'
/// sessions only to negotiate and merge, then ends them and issues no session id;
/// any other request runs over upstream sessions opened for it alone. Notifications
/// and client responses have nothing to reach and are acknowledged.
async fn post_stateless(
    ctx: &Ctx<'_>,
    headers: &HeaderMap,
    msg: ClientMessage,
    style: Answer,
) -> Response<Body> {
    let (id, method, params) = match msg {
        ClientMessage::Request { id, method, params } => (id, method, params),
        ClientMessage::Notification { .. } | ClientMessage::Response { .. } => {
            return accepted();
        }
    };
    let result = match method.as_str() {
        "initialize" => match ctx.handshake(params.as_ref()).await {
            Ok((result, state)) => {
                handshake::end_sessions(ctx.backend, state.upstreams, ctx.timeout);
                ctx.metrics.set_sessions(&ctx.backend.key, 0);
                Ok(Served::Tree(result))
            }
            Err(e) => Err(e),
        },
        "ping" => Ok(Served::Tree(json!({}))),
        _ => {
            // The version the client negotiated, when it says (2025-06-18 and later).
            let version = headers
                .get(VERSION_HEADER)
                .and_then(|v| {
                    SUPPORTED_VERSIONS
                        .iter()
                        .find(|s| v.as_bytes() == s.as_bytes())
                })
                .unwrap_or(&SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1]);
            let session = Session::stateless(version);
            let r = ctx.serve(&session, &method, &id, params).await;
            session.finish(ctx.backend, ctx.timeout);
            r
        }
    };
    match result {
        Ok(r) => rpc_result(&id, r, style),
        Err(e) => rpc(e.http_status(), &jsonrpc::error(Some(&id), &e), style),
    }
}

/// A message of the 2026-07-28 style: checked, then served over a held session.
async fn post_modern(
    ctx: &Ctx<'_>,
    headers: &HeaderMap,
    msg: ClientMessage,
    style: Answer,
) -> Response<Body> {
    match msg {
        ClientMessage::Request { id, method, params } => {
            let result = match modern::check_request(headers, &method, params) {
                Ok(params) => modern::serve(ctx, headers, &id, &method, params).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(r) => rpc_result(&id, r, style),
                Err(e) => rpc(modern::status_of(&e), &jsonrpc::error(Some(&id), &e), style),
            }
        }
        // No client-to-server notifications exist in this style: acknowledged, dropped.
        ClientMessage::Notification { .. } => match modern::check_notification(headers) {
            Ok(()) => accepted(),
            Err(e) => rpc(modern::status_of(&e), &jsonrpc::error(None, &e), style),
        },
        ClientMessage::Response { id, .. } => {
            let e = McpError::InvalidRequest("no request of the gateway awaits a response".into());
            rpc(
                StatusCode::BAD_REQUEST,
                &jsonrpc::error(Some(&id), &e),
                style,
            )
        }
    }
}

/// A client's notification: `notifications/cancelled` to the targets running the
/// request, others to every target of the session (in the background).
pub(super) fn client_notification(
    ctx: &Ctx<'_>,
    session: &Session,
    method: &str,
    params: Option<Value>,
) {
    // The gateway sent `notifications/initialized` to each target itself.
    if method == "notifications/cancelled" {
        cancel(ctx, session, params);
    } else if method != "notifications/initialized" {
        let targets = upstreams_of(ctx.backend, session);
        let msg = jsonrpc::notification(method, params);
        tokio::spawn(notify_all(targets, msg, ctx.timeout));
    }
}

/// A client's response to a relayed server request: to the target that asked, in the
/// client's upstream session, under the target's own id.
pub(super) async fn answer_server_request(
    ctx: &Ctx<'_>,
    session: &Session,
    id: &Value,
    message: Value,
) {
    // An input request of a 2026-07-28 target, put to the client by a request waiting
    // here.
    let Err(mut message) = ctx.backend.state.asking.answer(id, message) else {
        return;
    };
    let routed = relay::parse_server_request_id(id).and_then(|(target, original)| {
        let t = ctx.backend.target(target)?;
        Some((t.clone(), session.upstream(target)?.clone(), original))
    });
    let Some((t, up, original)) = routed else {
        tracing::debug!(backend = %ctx.backend.key, %id, "client response to no relayed request dropped");
        return;
    };
    message["id"] = original;
    if let Err(e) = t.notify(&up, &message, ctx.timeout).await {
        tracing::info!(backend = %ctx.backend.key, target = %t.name, error = %e, "client response not delivered to the target");
    }
}

/// `notifications/cancelled`: to the targets running the request, with their ids.
fn cancel(ctx: &Ctx<'_>, session: &Session, params: Option<Value>) {
    let Some(request_id) = params.as_ref().and_then(|p| p.get("requestId")) else {
        return;
    };
    let reason = params.as_ref().and_then(|p| p.get("reason")).cloned();
    for (target, upstream_id) in ctx.backend.state.inflight.find(&session.id, request_id) {
        let Some((t, up)) = ctx
            .backend
            .target(&target)
            .and_then(|t| Some((t.clone(), session.upstream(&target)?.clone())))
        else {
            continue;
        };
        let mut p = json!({ "requestId": upstream_id });
        if let Some(r) = &reason {
            p["reason"] = r.clone();
        }
        let msg = jsonrpc::notification("notifications/cancelled", Some(p));
        tokio::spawn(notify_all(vec![(t, up)], msg, ctx.timeout));
    }
}

/// `GET`: the server-to-client stream of a session.
async fn get(ctx: &Ctx<'_>, headers: &HeaderMap) -> Response<Body> {
    if !accepts_sse(headers) {
        let err = McpError::InvalidRequest("GET must accept text/event-stream".into());
        return rpc(
            StatusCode::NOT_ACCEPTABLE,
            &jsonrpc::error(None, &err),
            Answer::Json,
        );
    }
    match open_session(ctx, headers) {
        Ok(session) => stream::get(ctx, &session).await,
        Err((status, e)) => rpc(status, &jsonrpc::error(None, &e), Answer::Json),
    }
}

async fn delete(ctx: &Ctx<'_>, headers: &HeaderMap) -> Response<Body> {
    let session = match open_session(ctx, headers) {
        Ok(s) => s,
        Err((status, e)) => return rpc(status, &jsonrpc::error(None, &e), Answer::Json),
    };
    end_session(ctx.backend, ctx.metrics, &session, ctx.timeout).await;
    plain(StatusCode::OK, "")
}

/// Ends a client session here and its upstream sessions (client DELETE, legacy stream
/// closed).
pub(super) async fn end_session(
    backend: &McpBackend,
    metrics: &super::metrics::McpMetrics,
    session: &Session,
    timeout: Duration,
) {
    let mut targets = upstreams_of(backend, session);
    for later in backend.state.sessions.end(&session.id) {
        if let Some(t) = backend.target(&later.target) {
            targets.retain(|(x, _)| x.name != t.name);
            targets.push((t.clone(), later));
        }
    }
    metrics.set_sessions(&backend.key, backend.state.sessions.active());
    end_all(targets, timeout).await;
}

/// The session a request names, checked against the table.
fn open_session(ctx: &Ctx<'_>, headers: &HeaderMap) -> Result<Session, (StatusCode, McpError)> {
    let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return Err((
            StatusCode::BAD_REQUEST,
            McpError::InvalidRequest(
                "missing Mcp-Session-Id header (send initialize first)".into(),
            ),
        ));
    };
    session_by_id(ctx.backend, id)
}

/// Session `id`, checked against the table (and touched).
pub(super) fn session_by_id(
    backend: &McpBackend,
    id: &str,
) -> Result<Session, (StatusCode, McpError)> {
    let gone = |e: SessionError| {
        let what = match e {
            SessionError::Unknown => "unknown session",
            SessionError::Ended => "session ended or expired",
        };
        (StatusCode::NOT_FOUND, McpError::SessionNotFound(what))
    };
    let state = backend.cipher.open(id).map_err(gone)?;
    let later = backend.state.sessions.touch(id).map_err(gone)?;
    Ok(Session {
        id: id.to_owned(),
        state,
        later,
        scratch: None,
    })
}

fn upstreams_of(
    backend: &McpBackend,
    session: &Session,
) -> Vec<(
    std::sync::Arc<super::upstream::Target>,
    super::upstream::UpstreamSession,
)> {
    backend
        .targets
        .iter()
        .filter_map(|t| Some((t.clone(), session.upstream(&t.name)?.clone())))
        .collect()
}

/// Expires idle sessions now and then, ending their upstream sessions in the background.
fn sweep(backend: &McpBackend, timeout: Duration) {
    let expired = backend.state.sessions.sweep();
    for (id, later) in expired {
        let later = later.into_iter().map(|s| (s.target.clone(), s)).collect();
        let session = if modern::is_held(&id) {
            Session::held(id, later)
        } else {
            let Ok(state) = backend.cipher.open(&id) else {
                continue;
            };
            Session {
                id,
                state,
                later,
                scratch: None,
            }
        };
        let targets = upstreams_of(backend, &session);
        tracing::debug!(backend = %backend.key, "mcp session expired after being idle");
        tokio::spawn(end_all(targets, timeout));
    }
}

/// Forwards a client notification to every target it has a session with; failures
/// are logged only (notifications have no answer).
async fn notify_all(
    targets: Vec<(
        std::sync::Arc<super::upstream::Target>,
        super::upstream::UpstreamSession,
    )>,
    msg: Value,
    timeout: Duration,
) {
    join_all(targets.iter().map(|(t, up)| async {
        if let Err(e) = t.notify(up, &msg, timeout).await {
            tracing::debug!(target = %t.name, error = %e, "notification not delivered");
        }
    }))
    .await;
}

/// Ends upstream sessions (client DELETE, idle expiry).
async fn end_all(
    targets: Vec<(
        std::sync::Arc<super::upstream::Target>,
        super::upstream::UpstreamSession,
    )>,
    timeout: Duration,
) {
    join_all(targets.iter().map(|(t, up)| async {
        if let Err(e) = t.end(up, timeout).await {
            tracing::debug!(target = %t.name, error = %e, "upstream session not ended");
        }
    }))
    .await;
}

/// A JSON-RPC message as a JSON answer.
pub(super) fn rpc_json(status: StatusCode, msg: &Value) -> Response<Body> {
    rpc(status, msg, Answer::Json)
}

fn rpc(status: StatusCode, msg: &Value, style: Answer) -> Response<Body> {
    // Serializing a `Value` into a Vec cannot fail.
    rpc_written(status, style, 4096, |bytes| {
        let _ = serde_json::to_writer(bytes, msg);
    })
}

/// The 200 answer carrying a request's result; a merged list is copied in as written.
fn rpc_result(id: &Value, served: Served, style: Answer) -> Response<Body> {
    match served {
        Served::Tree(r) => rpc(StatusCode::OK, &jsonrpc::result(id, r), style),
        Served::List(list) => rpc_written(StatusCode::OK, style, list.json.len() + 64, |bytes| {
            bytes.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
            let _ = serde_json::to_writer(&mut *bytes, id);
            bytes.extend_from_slice(b",\"result\":");
            bytes.extend_from_slice(&list.json);
            bytes.push(b'}');
        }),
    }
}

/// An answer whose JSON `write` puts straight into one byte buffer (`to_string` goes
/// through `fmt` and grows its string step by step; a merged list is tens of KB).
fn rpc_written(
    status: StatusCode,
    style: Answer,
    capacity: usize,
    write: impl FnOnce(&mut Vec<u8>),
) -> Response<Body> {
    let (prefix, suffix, content_type): (&[u8], &[u8], _) = match style {
        Answer::Json => (b"", b"", "application/json"),
        Answer::Sse => (b"event: message\ndata: ", b"\n\n", "text/event-stream"),
    };
    let mut bytes = Vec::with_capacity(capacity + prefix.len() + suffix.len());
    bytes.extend_from_slice(prefix);
    write(&mut bytes);
    bytes.extend_from_slice(suffix);
    let mut resp = Response::new(body::full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if style == Answer::Sse {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    resp
}

pub(super) fn accepted() -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    if !text.is_empty() {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
        );
        h
    }

    #[test]
    fn accept_header_picks_json_sse_or_nothing() {
        assert_eq!(answer_style(&HeaderMap::new()), Some(Answer::Json));
        assert_eq!(
            answer_style(&accept("application/json, text/event-stream")),
            Some(Answer::Json)
        );
        assert_eq!(
            answer_style(&accept("text/event-stream")),
            Some(Answer::Sse)
        );
        assert_eq!(answer_style(&accept("*/*;q=0.1")), Some(Answer::Json));
        assert_eq!(answer_style(&accept("text/html")), None);
    }
}
