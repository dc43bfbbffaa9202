//! An HTTP target of either MCP transport: streamable HTTP (`streamable`) or the legacy
//! HTTP+SSE transport (`sse`), with the fallback between them that the specification's
//! backwards-compatibility section describes.
//!
//! A target is opened over the transport it is configured with (`url` or `sse`) until
//! that fails in a way that says "wrong transport": a 4xx answer to the `initialize`
//! POST (a legacy server has no POST there), or an SSE URL that answers no event stream
//! naming an endpoint (a streamable server wants a session id or a POST). Then the other
//! transport is tried at the same URL; when it works, it is logged once and tried first
//! from then on. When it fails too, the first error is the one reported. Each upstream
//! session remembers its transport (`UpstreamSession::sse`), so sessions opened before a
//! switch keep working.
//!
//! This module must not know about client sessions, names or federation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::HeaderValue;
use http::uri::{Authority, PathAndQuery, Scheme};
use serde_json::Value;

use super::relay::Relay;
use super::sse::{SsePool, SseTarget};
use super::streamable::{EventStream, HttpTarget};
use super::upstream::{ReplyForm, TargetError, UpstreamSession};
use crate::http::upstream::UpstreamClient;

/// Where an HTTP target lives: what both transports need to reach it.
#[derive(Clone)]
pub struct HttpAddress {
    /// The configured URL.
    pub url: String,
    /// The pooled client towards its host and port.
    pub client: Arc<UpstreamClient>,
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host and port as the URL gives them.
    pub authority: Authority,
    /// The `Host` header sent.
    pub host: HeaderValue,
    /// Path and query of the URL.
    pub path: PathAndQuery,
}

/// One upstream MCP server reached over HTTP.
#[derive(Debug)]
pub struct RemoteTarget {
    name: Arc<str>,
    url: String,
    streamable: HttpTarget,
    sse: SseTarget,
    configured_sse: bool,
    /// The transport tried first: the configured one until the other one worked.
    prefer_sse: AtomicBool,
}

impl RemoteTarget {
    /// A target at `addr`, configured as a legacy SSE server when `configured_sse`; its
    /// event streams are kept in `pool`.
    pub fn new(
        name: &str,
        addr: HttpAddress,
        configured_sse: bool,
        pool: Arc<SsePool>,
    ) -> RemoteTarget {
        let streamable = HttpTarget::new(
            name,
            &addr.url,
            addr.client.clone(),
            addr.host.clone(),
            addr.path.clone(),
        );
        RemoteTarget {
            name: name.into(),
            url: addr.url.clone(),
            streamable,
            sse: SseTarget::new(name, addr, pool),
            configured_sse,
            prefer_sse: AtomicBool::new(configured_sse),
        }
    }

    /// The target's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The target's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the target is configured as a legacy SSE server.
    pub fn configured_sse(&self) -> bool {
        self.configured_sse
    }

    /// Opens a session over the preferred transport, or the other one when the
    /// preferred one is the wrong one (see the module comment).
    pub async fn initialize(
        &self,
        version: &str,
        timeout: Duration,
    ) -> Result<(UpstreamSession, Value), TargetError> {
        let first = self.prefer_sse.load(Ordering::Relaxed);
        let error = match self.initialize_over(first, version, timeout).await {
            Ok(opened) => return Ok(opened),
            Err(e) if other_transport_may_work(first, &e) => e,
            Err(e) => return Err(e),
        };
        match self.initialize_over(!first, version, timeout).await {
            Ok(opened) => {
                if self.prefer_sse.swap(!first, Ordering::Relaxed) == first {
                    tracing::warn!(
                        target = %self.name,
                        url = %self.url,
                        configured = transport_name(self.configured_sse),
                        now = transport_name(!first),
                        error = %error,
                        "MCP target answers like a server of the other transport; using that transport"
                    );
                }
                Ok(opened)
            }
            Err(other) => {
                tracing::debug!(target = %self.name, error = %other, "the other MCP transport failed too");
                Err(error)
            }
        }
    }

    /// Opens a session for one request of stateless mode: over streamable HTTP, one of
    /// the 2026-07-28 style when the target speaks it (see
    /// [`HttpTarget::open_stateless`]); otherwise like [`RemoteTarget::initialize`].
    pub async fn open_stateless(
        &self,
        version: &str,
        timeout: Duration,
    ) -> Result<(UpstreamSession, Value), TargetError> {
        if self.prefer_sse.load(Ordering::Relaxed) {
            return self.initialize(version, timeout).await;
        }
        match self.streamable.open_stateless(version, timeout).await {
            Err(e) if other_transport_may_work(false, &e) => {
                self.initialize(version, timeout).await
            }
            other => other,
        }
    }

    async fn initialize_over(
        &self,
        sse: bool,
        version: &str,
        timeout: Duration,
    ) -> Result<(UpstreamSession, Value), TargetError> {
        if sse {
            self.sse.initialize(version, timeout).await
        } else {
            self.streamable.initialize(version, timeout).await
        }
    }

    /// Sends a request in `session` over its transport; the result in form `R`.
    pub async fn request_as<R: ReplyForm>(
        &self,
        session: &UpstreamSession,
        msg: &Value,
        id: &Value,
        timeout: Duration,
        relay: Option<&Relay>,
    ) -> Result<Result<R, Value>, TargetError> {
        if session.sse {
            Ok(self
                .sse
                .request(session, msg, id, timeout, relay)
                .await?
                .map(R::from_value))
        } else {
            self.streamable
                .request_as(session, msg, id, timeout, relay)
                .await
        }
    }

    /// Sends a notification in `session` over its transport.
    pub async fn notify(
        &self,
        session: &UpstreamSession,
        msg: &Value,
        timeout: Duration,
    ) -> Result<(), TargetError> {
        if session.sse {
            self.sse.notify(session, msg, timeout).await
        } else {
            self.streamable.notify(session, msg, timeout).await
        }
    }

    /// The server-to-client stream of `session`, if the target offers one.
    pub async fn open_stream(
        &self,
        session: &UpstreamSession,
        timeout: Duration,
    ) -> Result<Option<EventStream>, TargetError> {
        if session.sse {
            self.sse.open_stream(session).map(Some)
        } else {
            self.streamable.open_stream(session, timeout).await
        }
    }

    /// Ends `session` on the target.
    pub async fn end(
        &self,
        session: &UpstreamSession,
        timeout: Duration,
    ) -> Result<(), TargetError> {
        if session.sse {
            self.sse.end(session);
            Ok(())
        } else {
            self.streamable.end(session, timeout).await
        }
    }
}

/// Whether a failure to open a session over one transport (`tried_sse`) suggests the
/// server speaks the other.
fn other_transport_may_work(tried_sse: bool, e: &TargetError) -> bool {
    match e {
        TargetError::Status(s) => s.is_client_error(),
        // An SSE URL that is no event stream, names no endpoint or stays silent.
        TargetError::Protocol(_) | TargetError::Timeout(_) | TargetError::StreamClosed => tried_sse,
        _ => false,
    }
}

/// The config name of a transport, for logs and metric labels.
pub fn transport_name(sse: bool) -> &'static str {
    if sse { "sse" } else { "streamable_http" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn only_wrong_transport_failures_fall_back() {
        let status = |s| TargetError::Status(s);
        assert!(other_transport_may_work(
            false,
            &status(StatusCode::METHOD_NOT_ALLOWED)
        ));
        assert!(other_transport_may_work(
            false,
            &status(StatusCode::NOT_FOUND)
        ));
        assert!(!other_transport_may_work(
            false,
            &status(StatusCode::BAD_GATEWAY)
        ));
        assert!(!other_transport_may_work(
            false,
            &TargetError::Protocol("not JSON".into())
        ));
        assert!(other_transport_may_work(
            true,
            &TargetError::Protocol("no event stream".into())
        ));
        assert!(other_transport_may_work(
            true,
            &status(StatusCode::BAD_REQUEST)
        ));
        assert!(!other_transport_may_work(true, &TargetError::SessionGone));
    }
}
