//! The webhook's HTTPS server: `POST /inject` takes an AdmissionReview v1 and answers it
//! ([`crate::Injector::review_json`]); `GET /healthz` answers `ok` for probes.
//!
//! TLS is rustls with the certificate from [`crate::tls`], re-read on rotation. This
//! module only moves bytes; every decision is the injector's.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::review::Injector;
use crate::settings::WEBHOOK_PATH;
use crate::tls::{TlsError, TlsSource};

/// The largest request body read: the API server caps objects at 3 MiB, and the review
/// wraps one (twice at most, with the old object).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// The health path.
pub const HEALTH_PATH: &str = "/healthz";
/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The certificate could not be loaded at start-up.
    #[error("webhook TLS: {0}")]
    Tls(#[from] TlsError),
    /// The listener failed.
    #[error("webhook listener: {0}")]
    Accept(#[from] std::io::Error),
}

/// Serves the webhook on `listener` until the listener fails; drop (abort) the task to
/// stop it. Certificates are loaded before the first connection is accepted.
pub async fn serve(
    listener: TcpListener,
    tls: TlsSource,
    injector: Arc<Injector>,
) -> Result<(), WebhookError> {
    serve_with_config(listener, tls.server_config()?, injector).await
}

/// [`serve`] with the TLS configuration already built (by [`TlsSource::server_config`]),
/// for a caller that loads the certificate itself to report a bad one before serving.
pub async fn serve_with_config(
    listener: TcpListener,
    config: rustls::ServerConfig,
    injector: Arc<Injector>,
) -> Result<(), WebhookError> {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    loop {
        let (stream, peer) = listener.accept().await?;
        let acceptor = acceptor.clone();
        let injector = injector.clone();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "webhook TLS handshake timed out");
                        return;
                    }
                };
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let injector = injector.clone();
                async move { Ok::<_, Infallible>(handle(req, &injector).await) }
            });
            if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "webhook connection ended");
            }
        });
    }
}

async fn handle(req: Request<Incoming>, injector: &Injector) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, WEBHOOK_PATH) => {
            let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
            {
                Ok(body) => body.to_bytes(),
                Err(e) => {
                    return text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("cannot read the request body: {e}\n"),
                    );
                }
            };
            match injector.review_json(&body) {
                Ok(answer) => {
                    let mut response = Response::new(Full::new(Bytes::from(answer)));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    response
                }
                Err(e) => text(
                    StatusCode::BAD_REQUEST,
                    format!("not an AdmissionReview v1: {e}\n"),
                ),
            }
        }
        (&Method::GET | &Method::HEAD, HEALTH_PATH) => text(StatusCode::OK, "ok\n".into()),
        (_, WEBHOOK_PATH) => text(StatusCode::METHOD_NOT_ALLOWED, "POST only\n".into()),
        (_, HEALTH_PATH) => text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into()),
        _ => text(
            StatusCode::NOT_FOUND,
            format!("not found; the webhook is POST {WEBHOOK_PATH}\n"),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
