//! Forwarding to a `host` backend: per-try timeouts, retries with backoff, mirroring and
//! protocol upgrades (WebSocket and other `Upgrade` handshakes).
//!
//! Bodies stream both ways. A request body is buffered only when a retry or mirror needs
//! to send it twice and it is known to be small (`max_replay_body_bytes`); otherwise it
//! streams and the request is tried once.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use crate::config::ir::{Backend, BackendKind, Policies};
use crate::http::body::{self, Body};
use crate::http::error::ProxyError;
use crate::http::replay::Replay;
use crate::http::upstream::{UpstreamClient, UpstreamErrorKind};
use crate::telemetry::metrics::{Metrics, MirrorOutcome};

/// A request head that can be sent more than once.
#[derive(Debug, Clone)]
pub struct Head {
    /// Method.
    pub method: http::Method,
    /// URI (origin-form or absolute).
    pub uri: http::Uri,
    /// Version the client spoke.
    pub version: http::Version,
    /// Headers, hop-by-hop ones already removed.
    pub headers: HeaderMap,
}

impl Head {
    /// A request with a copy of this head, for one of several attempts.
    fn request(&self, body: Body) -> Request<Body> {
        self.clone().into_request(body)
    }

    /// The request, consuming the head (the common single-attempt case: no copy).
    fn into_request(self, body: Body) -> Request<Body> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers;
        req
    }
}

/// The request body as forwarding sees it.
pub enum OutboundBody {
    /// Fully read, small: can be sent again.
    Replayable(Bytes),
    /// Streaming: sent once.
    Streaming(Body),
}

/// Everything about a request that forwarding sends on.
pub struct Outbound {
    /// The request head, ready to send.
    pub head: Head,
    /// The request body.
    pub body: OutboundBody,
    /// The client side of a pending protocol upgrade.
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// How much of a streaming body may be kept to replay it on a retry.
    pub replay_limit: usize,
}

const HOP_BY_HOP_COUNT: usize = 7;
// `strip_hop_by_hop` marks the ones it finds in the bits of a `u8`.
const _: () = assert!(HOP_BY_HOP_COUNT <= 8);
/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1); the first
/// is `Connection`.
static HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Bit `n` is set when a name in [`HOP_BY_HOP`], or `upgrade`, is `n` bytes long: most
/// names are ruled out by their length alone.
const HOP_BY_HOP_LENGTHS: u32 = 1 << 2 | 1 << 7 | 1 << 10 | 1 << 16 | 1 << 17 | 1 << 19;

/// Whether a name of this length may be hop-by-hop (or `upgrade`).
fn may_be_hop_by_hop(len: usize) -> bool {
    len < 32 && HOP_BY_HOP_LENGTHS & (1 << len) != 0
}

/// The index in [`HOP_BY_HOP`] of a (lowercase) header name.
fn hop_by_hop_index(name: &[u8]) -> Option<usize> {
    match name {
        b"connection" => Some(0),
        b"keep-alive" => Some(1),
        b"proxy-connection" => Some(2),
        b"proxy-authorization" => Some(3),
        b"te" => Some(4),
        b"trailer" => Some(5),
        b"transfer-encoding" => Some(6),
        _ => None,
    }
}

/// Whether a `Connection` token names `Upgrade` or one of [`HOP_BY_HOP`], in any case,
/// without parsing it into a header name (which allocates for `keep-alive`).
fn is_upgrade_or_hop_by_hop(token: &str) -> bool {
    let mut buf = [0u8; 24];
    let Some(lower) = buf.get_mut(..token.len()) else {
        return false;
    };
    lower.copy_from_slice(token.as_bytes());
    lower.make_ascii_lowercase();
    lower == b"upgrade" || hop_by_hop_index(lower).is_some()
}

/// Removes hop-by-hop headers, and those the `Connection` header names. `Upgrade` (and a
/// `Connection: upgrade`) is kept when `upgrade` is true.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the names finds which hop-by-hop headers are there (most messages
    // carry none, or only `Connection: keep-alive`), so only those are looked up again.
    // Bit `i` stands for `HOP_BY_HOP[i]`.
    let mut present: u8 = 0;
    let mut has_upgrade = false;
    for name in headers.keys() {
        let name = name.as_str().as_bytes();
        if !may_be_hop_by_hop(name.len()) {
            continue;
        }
        match hop_by_hop_index(name) {
            Some(i) => present |= 1 << i,
            None if name == b"upgrade" => has_upgrade = true,
            None => {}
        }
    }
    // Index 0 is `Connection`: it is removed in the same lookup that reads its values,
    // and the headers it names go too.
    let mut named: Vec<HeaderName> = Vec::new();
    if present & 1 != 0
        && let header::Entry::Occupied(connection) = headers.entry(header::CONNECTION)
    {
        let (_, values) = connection.remove_entry_mult();
        for value in values {
            let Ok(value) = value.to_str() else {
                continue;
            };
            // Most messages say only `keep-alive` or `close`: nothing to split.
            if is_upgrade_or_hop_by_hop(value.trim()) {
                continue;
            }
            for token in value.split(',').map(str::trim) {
                // `Upgrade` and the fixed hop-by-hop names are dealt with below.
                if is_upgrade_or_hop_by_hop(token) {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    named.push(name);
                }
            }
        }
    }
    let mut others = present & !1;
    while others != 0 {
        headers.remove(&HOP_BY_HOP[others.trailing_zeros() as usize]);
        // The lowest bit, just removed.
        others &= others - 1;
    }
    for name in &named {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if has_upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// Whether a request asks for a protocol upgrade. `h2c` is not one the proxy passes on:
/// a backend that took it would hand the client an HTTP/2 connection past routing and
/// policies (h2c smuggling), so such a request is served as plain HTTP/1.1.
pub fn wants_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == http::Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && !req
            .headers()
            .get_all(header::UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("h2c")))
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Sends a request to a backend with the route's retry and timeout policies, mirroring
/// it when a mirror policy says so. `upgrade` is the client side of a pending upgrade.
pub async fn forward(
    backend: &Backend,
    outbound: Outbound,
    policies: &Policies,
    metrics: &Arc<Metrics>,
) -> Result<Response<hyper::body::Incoming>, ProxyError> {
    let Outbound {
        head,
        body,
        upgrade,
        replay_limit,
    } = outbound;
    let BackendKind::Host(client) = &backend.kind else {
        // Protocol backends are served by their handlers; config rejects anything else.
        return Err(ProxyError::NoRoute(format!(
            "backend {:?} is not a host backend and cannot be forwarded to",
            backend.key
        )));
    };
    if let (Some(mirror), OutboundBody::Replayable(bytes)) = (&policies.mirror, &body)
        && rand::random::<f64>() * 100.0 < mirror.percentage
    {
        spawn_mirror(
            mirror.backend.clone(),
            head.clone(),
            bytes.clone(),
            metrics.clone(),
        );
    }
    let per_try = policies.timeouts.and_then(|t| t.backend_request);
    // Without a retry policy the body streams once; with one, attempts share a replay
    // buffer (small bodies already read are simply sent again).
    let retry = policies.retry.as_deref();
    let replay = match (body, retry) {
        (OutboundBody::Replayable(b), Some(_)) => Replay::new(body::full(b), usize::MAX),
        (OutboundBody::Streaming(b), Some(_)) => Replay::new(b, replay_limit),
        // One attempt: the head and body move into the request.
        (once, None) => {
            let req = match once {
                OutboundBody::Replayable(b) => head.into_request(body::full(b)),
                OutboundBody::Streaming(b) => head.into_request(b),
            };
            let resp = send_once(client, &backend.key, req, per_try).await?;
            return Ok(splice_if_upgraded(resp, upgrade, &backend.key));
        }
    };
    let attempts = retry.map_or(1, |r| r.attempts + 1);
    let mut backoff = retry.map_or(Duration::ZERO, |r| r.backoff);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let req_body = body::boxed(replay.attempt());
        let result = send_once(client, &backend.key, head.request(req_body), per_try).await;
        let retry_this = match (&result, retry) {
            (_, None) => false,
            (Ok(resp), Some(r)) => r.codes.contains(&resp.status()),
            // A failed connect is no response status: only `onConnectError` decides.
            (Err(ProxyError::Upstream(e)), Some(r)) if e.kind() == UpstreamErrorKind::Connect => {
                r.on_connect_error
            }
            (Err(e), Some(r)) => r.codes.contains(&e.status()),
        };
        // Decided after the attempt: it may have streamed more than the replay limit.
        let last = attempt >= attempts || !replay.can_replay();
        if !retry_this || last {
            return Ok(splice_if_upgraded(result?, upgrade, &backend.key));
        }
        metrics.record_retry(&backend.key);
        match &result {
            Ok(resp) => {
                tracing::debug!(backend = %backend.key, status = %resp.status(), attempt, "retrying")
            }
            Err(e) => tracing::debug!(backend = %backend.key, error = %e, attempt, "retrying"),
        }
        drop(result);
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2);
    }
}

/// When the backend agreed to a protocol upgrade, joins the client's and the backend's
/// upgraded connections in a task of their own.
fn splice_if_upgraded(
    mut resp: Response<hyper::body::Incoming>,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    backend: &str,
) -> Response<hyper::body::Incoming> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_side) = upgrade
    {
        let upstream_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(splice_upgrade(
            client_side,
            upstream_side,
            backend.to_string(),
        ));
    }
    resp
}

async fn send_once(
    client: &UpstreamClient,
    backend: &str,
    req: Request<Body>,
    per_try: Option<Duration>,
) -> Result<Response<hyper::body::Incoming>, ProxyError> {
    match per_try {
        Some(limit) => tokio::time::timeout(limit, client.send(req))
            .await
            .map_err(|_| ProxyError::UpstreamTimeout {
                backend: backend.to_string(),
                timeout: limit,
            })?
            .map_err(ProxyError::from),
        None => client.send(req).await.map_err(ProxyError::from),
    }
}

/// Copies bytes both ways between an upgraded client connection and backend connection.
async fn splice_upgrade(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    backend: String,
) {
    match tokio::try_join!(client, upstream) {
        Ok((client, upstream)) => {
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(backend, error = %e, "upgraded connection ended with an error");
            }
        }
        Err(e) => tracing::debug!(backend, error = %e, "protocol upgrade failed"),
    }
}

/// How long a mirrored request may take; its answer is read and thrown away.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

fn spawn_mirror(backend: Arc<Backend>, head: Head, body: Bytes, metrics: Arc<Metrics>) {
    tokio::spawn(async move {
        let BackendKind::Host(client) = &backend.kind else {
            tracing::debug!(backend = %backend.key, "mirror target is not a host backend");
            return;
        };
        let req = head.request(body::full(body));
        let outcome = match tokio::time::timeout(MIRROR_TIMEOUT, client.send(req)).await {
            Ok(Ok(resp)) => {
                let _ = resp.into_body().collect().await;
                MirrorOutcome::Sent
            }
            Ok(Err(e)) => {
                tracing::debug!(backend = %backend.key, error = %e, "mirrored request failed");
                MirrorOutcome::Failed
            }
            Err(_) => MirrorOutcome::Failed,
        };
        metrics.record_mirror_request(&backend.key, outcome);
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive, X-Hop, close"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("close", "odd"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("content-type", "text/plain"),
            ("x-end-to-end", "kept"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-end-to-end"]);
    }

    #[test]
    fn an_accepted_upgrade_keeps_upgrade_and_says_so_in_connection() {
        let mut h = headers(&[
            ("connection", "Upgrade, x-hop"),
            ("upgrade", "websocket"),
            ("x-hop", "1"),
            ("host", "example.com"),
        ]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(!h.contains_key("x-hop"));
        assert_eq!(h["host"], "example.com");
    }

    #[test]
    fn every_connection_line_is_read_whatever_its_case() {
        let mut h = headers(&[
            ("connection", "Keep-Alive"),
            ("connection", "x-a , X-B"),
            ("connection", "CLOSE"),
            ("x-a", "1"),
            ("x-b", "2"),
            ("keep-alive", "timeout=5"),
            ("x-c", "kept"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-c"]);
    }

    #[test]
    fn hop_by_hop_index_matches_the_list() {
        assert!(may_be_hop_by_hop("upgrade".len()));
        for len in 0..64 {
            let listed = HOP_BY_HOP.iter().any(|n| n.as_str().len() == len) || len == 7;
            assert_eq!(may_be_hop_by_hop(len), listed, "length {len}");
        }
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(
                hop_by_hop_index(name.as_str().as_bytes()),
                Some(i),
                "{name}"
            );
        }
        assert_eq!(hop_by_hop_index(b"upgrade"), None);
    }

    #[test]
    fn a_message_without_hop_by_hop_headers_is_unchanged() {
        let mut h = headers(&[("host", "example.com"), ("accept", "*/*")]);
        let before = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, before);
    }
}
