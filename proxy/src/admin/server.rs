//! The accept loop the three admin-side servers share, and the few response shapes they
//! answer with.
//!
//! This module must not know any endpoint: it takes a handler that maps a method and
//! URI to a complete response. Handlers never read request bodies.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The response type every admin-side endpoint produces.
pub(crate) type AdminResponse = Response<Full<Bytes>>;

/// Maps a request's method and URI to its response.
pub(crate) type Handler = Arc<dyn Fn(&Method, &Uri) -> AdminResponse + Send + Sync>;

/// A client must send its request head within this time, so idle sockets cannot pile up.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed `accept` (for example, out of file descriptors), wait this long
/// before trying again instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// On shutdown, requests in flight get this long to finish before their connections
/// are abandoned.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Whether `shutdown` asks us to stop: it holds `true`, or its sender is gone (nobody
/// could ever ask again, so the owner has gone away).
fn stop_requested(shutdown: &mut watch::Receiver<bool>) -> bool {
    shutdown.has_changed().is_err() || *shutdown.borrow_and_update()
}

/// Serves `handler` on every connection `listener` accepts (HTTP/1.1, and HTTP/2 for a
/// client that asks for it) until `shutdown` turns true; then stops accepting, closes
/// the listener, lets requests in flight finish (up to a grace period) and returns.
///
/// `server` names the server in logs. Bad requests and broken connections end only
/// their own connection.
pub(crate) async fn serve(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    server: &'static str,
    handler: Handler,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(server, %addr, "serving");
    }

    while !stop_requested(&mut shutdown) {
        tokio::select! {
            // Wakes on a new value or a dropped sender; the loop condition decides.
            _ = shutdown.changed() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let io = TokioIo::new(stream);
                    let handler = handler.clone();
                    let service = service_fn(move |req: Request<Incoming>| {
                        let response = handler(req.method(), req.uri());
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let builder = builder.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let connection = builder.serve_connection(io, service);
                        if let Err(error) = watcher.watch(connection).await {
                            tracing::debug!(server, %peer, %error, "connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(server, %error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }

    drop(listener);
    tracing::info!(server, "stopped accepting; finishing requests in flight");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            server,
            "requests still in flight after the grace period; leaving them"
        );
    }
}

/// A response with `status`, content type `content_type` and `body`.
pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> AdminResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A plain-text response; `body` should end with a newline, for `curl` users.
pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> AdminResponse {
    respond(status, "text/plain; charset=utf-8", body)
}

/// 404 for a path this server does not serve.
pub(crate) fn not_found(uri: &Uri) -> AdminResponse {
    text(
        StatusCode::NOT_FOUND,
        format!("not found: {}\n", uri.path()),
    )
}

/// 405 naming the methods `allow` (for example `"GET, HEAD"`) the path accepts.
pub(crate) fn method_not_allowed(method: &Method, allow: &'static str) -> AdminResponse {
    let mut response = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} not allowed; use {allow}\n"),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// Whether `method` reads a resource (GET, or HEAD, which hyper answers without a body).
pub(crate) fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}
