//! The gateway's server-sent-event answers to the client (session style):
//!
//! - A request whose targets send messages before their response (progress, log
//!   messages, sampling/elicitation/roots requests) is answered as an SSE stream: those
//!   messages, mapped by `relay`, then the response. A request answered before any such
//!   message gets a plain answer, as before: the stream is opened only when needed.
//! - `GET` opens the server-to-client stream: one merged stream over the `GET` streams
//!   of the client's upstream sessions (streamable-HTTP targets that offer one), carrying
//!   list-changed and resource-updated notifications and server requests not tied to a
//!   client request (for a legacy SSE target, what its one event stream carries outside
//!   requests; for a stdio target, what its process writes outside requests). A
//!   client whose targets offer no stream gets 405, as the transport spec allows. The
//!   legacy transport (`legacy`) relays the same upstream streams onto its event
//!   stream.
//!
//! The work behind a stream runs in a task owned by the response body: a client that
//! goes away stops it (and the upstream requests and streams with it).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::join_all;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::authz::Caller;
use super::federation::{Ctx, Served, Session};
use super::jsonrpc::{self, McpError};
use super::relay::{ClientStream, Relay};
use super::upstream::{Target, UpstreamSession};
use crate::http::body::{self, Body};
use crate::telemetry::Metrics;

/// How a request was answered by [`request`].
pub enum Answered {
    /// Before any message to relay: the caller answers as usual.
    Done(Result<Value, McpError>),
    /// As an SSE stream, already under way.
    Streaming(Response<Body>),
}

/// Serves a request of `session` whose client accepts an SSE answer: relayed messages
/// turn the answer into a stream.
pub async fn request(
    ctx: &Ctx<'_>,
    metrics: &Arc<Metrics>,
    headers: &HeaderMap,
    session: Session,
    id: Value,
    method: String,
    params: Option<Value>,
) -> Answered {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let backend = ctx.backend.clone();
    let metrics = metrics.clone();
    let headers = headers.clone();
    let timeout = ctx.timeout;
    let answer_id = id.clone();
    let mut task = AbortOnDrop(tokio::spawn(async move {
        let ctx = Ctx {
            backend: &backend,
            metrics: metrics.mcp(),
            caller: Caller { headers: &headers },
            timeout,
            relay: Some(tx),
        };
        ctx.serve(&session, &method, &id, params)
            .await
            .map(Served::into_value)
    }));
    tokio::select! {
        biased;
        first = rx.recv() => match first {
            Some(first) => Answered::Streaming(sse_response(respond_after(first, rx, task, answer_id))),
            // The task ended (the sender went with it): its result is ready.
            None => Answered::Done(finish(&mut task).await),
        },
        result = &mut task.0 => Answered::Done(result.unwrap_or_else(|e| Err(internal(e)))),
    }
}

/// `first`, the other relayed messages, then the response, as SSE events.
fn respond_after(
    first: Value,
    rx: mpsc::UnboundedReceiver<Value>,
    task: AbortOnDrop<Result<Value, McpError>>,
    id: Value,
) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
    futures_util::stream::unfold(
        (Some(first), rx, Some(task), id),
        |(first, mut rx, task, id)| async move {
            if let Some(msg) = first {
                return Some((event(&msg), (None, rx, task, id)));
            }
            if let Some(msg) = rx.recv().await {
                return Some((event(&msg), (None, rx, task, id)));
            }
            let mut task = task?;
            let answer = match finish(&mut task).await {
                Ok(r) => jsonrpc::result(&id, r),
                Err(e) => jsonrpc::error(Some(&id), &e),
            };
            Some((event(&answer), (None, rx, None, id)))
        },
    )
}

/// Serves `GET`: the merged server-to-client stream of the client's upstream sessions.
pub async fn get(ctx: &Ctx<'_>, session: &Session) -> Response<Body> {
    let (tx, rx) = mpsc::unbounded_channel();
    let readers = relay_upstream_streams(ctx, session, &tx).await;
    drop(tx);
    if readers.is_empty() {
        let mut resp = Response::new(body::full("no target offers a server-to-client stream\n"));
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
        return resp;
    }
    let events = futures_util::stream::unfold((rx, readers), |(mut rx, readers)| async move {
        let msg = rx.recv().await?;
        Some((event(&msg), (rx, readers)))
    });
    // A comment first, so the client sees the stream open at once.
    let opening = futures_util::stream::once(async { Bytes::from_static(b": stream open\n\n") });
    sse_response(opening.chain(events))
}

/// Opens the server-to-client streams of the session's upstream sessions (targets that
/// offer one) and relays their messages to `to`. Returns the tasks reading them, which
/// stop when dropped.
pub async fn relay_upstream_streams(
    ctx: &Ctx<'_>,
    session: &Session,
    to: &ClientStream,
) -> Vec<AbortOnDrop<()>> {
    let ups: Vec<(Arc<Target>, UpstreamSession)> = ctx
        .backend
        .targets
        .iter()
        .filter_map(|t| Some((t.clone(), session.upstream(&t.name)?.clone())))
        .collect();
    let opened = join_all(
        ups.iter()
            .map(|(t, up)| async move { t.open_stream(up, ctx.timeout).await }),
    )
    .await;
    let mut readers = Vec::new();
    for ((t, _), opened) in ups.iter().zip(opened) {
        match opened {
            Ok(Some(stream)) => {
                let relay = Relay::new(
                    t.name.clone(),
                    None,
                    ctx.backend.naming == super::Naming::Prefixed,
                    to.clone(),
                );
                let name = t.name.clone();
                readers.push(AbortOnDrop(tokio::spawn(async move {
                    stream.relay_all(&relay).await;
                    tracing::debug!(target = %name, "upstream server-to-client stream ended");
                })));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(target = %t.name, error = %e, "upstream server-to-client stream not opened")
            }
        }
    }
    readers
}

/// A `text/event-stream` response carrying `events`.
pub fn sse_response(
    events: impl futures_util::Stream<Item = Bytes> + Send + 'static,
) -> Response<Body> {
    let frames = events.map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut resp = Response::new(body::boxed(StreamBody::new(frames)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// One JSON-RPC message as a `message` event.
pub fn event(msg: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {msg}\n\n"))
}

async fn finish(task: &mut AbortOnDrop<Result<Value, McpError>>) -> Result<Value, McpError> {
    (&mut task.0).await.unwrap_or_else(|e| Err(internal(e)))
}

fn internal(e: tokio::task::JoinError) -> McpError {
    tracing::warn!(error = %e, "mcp request task failed");
    McpError::InvalidRequest("the gateway failed to serve the request".into())
}

/// A task stopped when its handle is dropped (the client went away).
pub struct AbortOnDrop<T>(pub JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
