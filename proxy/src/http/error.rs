//! Failures on the request path, each classified once into a status, a metric reason
//! and a short message for the client.

use http::{HeaderValue, Response, StatusCode, header};

use crate::http::body::{self, Body};
use crate::http::upstream::{UpstreamError, UpstreamErrorKind};
use crate::telemetry::metrics::ErrorReason;

/// Why the proxy answered a request itself with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No listener or route takes the request.
    #[error("{0}")]
    NoRoute(String),
    /// The request body is over the configured limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The request is not acceptable (for example an invalid header after rewriting).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The backend failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A backend attempt took longer than its per-try timeout.
    #[error("backend {backend} did not answer within {timeout:?}")]
    UpstreamTimeout {
        /// Backend key.
        backend: String,
        /// The limit.
        timeout: std::time::Duration,
    },
    /// The whole request took longer than its timeout.
    #[error("request did not complete within {0:?}")]
    RequestTimeout(std::time::Duration),
}

impl ProxyError {
    /// The status sent to the client.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute(_) => StatusCode::NOT_FOUND,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::Upstream(e) => match e.kind() {
                UpstreamErrorKind::Connect => StatusCode::SERVICE_UNAVAILABLE,
                UpstreamErrorKind::Reset | UpstreamErrorKind::Protocol => StatusCode::BAD_GATEWAY,
            },
            ProxyError::UpstreamTimeout { .. } | ProxyError::RequestTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
        }
    }

    /// The metric label.
    pub fn reason(&self) -> ErrorReason {
        match self {
            ProxyError::NoRoute(_) => ErrorReason::NoRoute,
            ProxyError::BodyTooLarge { .. } => ErrorReason::BodyTooLarge,
            ProxyError::BadRequest(_) => ErrorReason::BadRequest,
            ProxyError::Upstream(e) => match e.kind() {
                UpstreamErrorKind::Connect => ErrorReason::UpstreamConnect,
                UpstreamErrorKind::Reset => ErrorReason::UpstreamReset,
                UpstreamErrorKind::Protocol => ErrorReason::UpstreamProtocol,
            },
            ProxyError::UpstreamTimeout { .. } => ErrorReason::UpstreamTimeout,
            ProxyError::RequestTimeout(_) => ErrorReason::RequestTimeout,
        }
    }

    /// The response sent to the client: the status and a one-line plain-text reason.
    /// Upstream details (addresses, OS errors) go to the log, not to the client.
    pub fn to_response(&self) -> Response<Body> {
        let text = match self {
            ProxyError::Upstream(e) => match e.kind() {
                UpstreamErrorKind::Connect => {
                    "upstream unavailable: cannot connect to the backend".to_string()
                }
                UpstreamErrorKind::Reset => {
                    "bad gateway: the backend closed the connection".to_string()
                }
                UpstreamErrorKind::Protocol => {
                    "bad gateway: invalid response from the backend".to_string()
                }
            },
            ProxyError::UpstreamTimeout { .. } => {
                "gateway timeout: the backend did not answer in time".to_string()
            }
            other => other.to_string(),
        };
        let mut resp = Response::new(body::full(format!("{text}\n")));
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }
}
