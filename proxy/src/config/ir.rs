//! The internal form of a configuration: what the request path reads.
//!
//! Everything here is already validated and compiled (regexes, certificates, upstream
//! clients, resolved references, effective policies), so serving a request never parses
//! or looks anything up by name. A `Config` is immutable; a reload builds a new one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};

use super::file::Resources;
use crate::http::route::{HostPattern, RequestMatcher, RouteTable};
use crate::http::upstream::UpstreamClient;

/// A complete, validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Process-wide limits.
    pub settings: Settings,
    /// Binds by config order.
    pub binds: Vec<Arc<Bind>>,
    /// Sidecar settings (defaults when the config has none).
    pub sidecar: super::sidecar::Sidecar,
    /// The resources this config was compiled from (for `config_dump`).
    pub resources: Resources,
}

impl Config {
    /// Finds a bind by key.
    pub fn bind(&self, key: &str) -> Option<&Arc<Bind>> {
        self.binds.iter().find(|b| b.key == key)
    }
}

/// Process-wide limits, with defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Largest request body accepted.
    pub max_request_body_bytes: u64,
    /// Largest request head.
    pub max_request_header_bytes: usize,
    /// Largest body buffered for replay (retries, mirrors).
    pub max_replay_body_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_request_body_bytes: 10 * 1024 * 1024,
            max_request_header_bytes: 64 * 1024,
            max_replay_body_bytes: 64 * 1024,
        }
    }
}

/// A socket the proxy accepts connections on.
#[derive(Debug)]
pub struct Bind {
    /// Key.
    pub key: String,
    /// Address to listen on.
    pub addr: SocketAddr,
    /// TLS termination for the whole bind (all its listeners are HTTPS, or all
    /// TLS_TERMINATE), choosing the certificate by SNI.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Set when the bind forwards bytes instead of serving HTTP (all its listeners are
    /// TLS passthrough, or all TLS terminate, or its one listener is TCP).
    pub stream: Option<StreamProtocol>,
    /// Listeners, in config order.
    pub listeners: Vec<Arc<Listener>>,
}

/// How a byte-forwarding bind picks a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamProtocol {
    /// By the SNI of the client's TLS ClientHello; the TLS itself is not opened.
    TlsPassthrough,
    /// Every connection takes the one route.
    Tcp,
    /// TLS terminated with the bind's certificates; the handshake's SNI picks the route,
    /// and the decrypted bytes go to its backend.
    TlsTerminate,
}

impl Bind {
    /// Picks the listener for a request host: an exact hostname first, then the longest
    /// wildcard, then a listener without hostnames.
    pub fn listener_for(&self, host: Option<&str>) -> Option<&Arc<Listener>> {
        most_specific(&self.listeners, |l| &l.hostnames, host)
    }
}

/// The item whose hostnames match `host` most specifically (exact, then the longest
/// wildcard), else one without hostnames (it takes any host); the first wins a tie.
fn most_specific<'a, T>(
    items: &'a [T],
    hostnames: impl Fn(&T) -> &[HostPattern],
    host: Option<&str>,
) -> Option<&'a T> {
    let mut best: Option<(&T, (u8, usize))> = None;
    for item in items {
        let patterns = hostnames(item);
        let rank = if patterns.is_empty() {
            Some((0, 0))
        } else {
            host.and_then(|h| {
                patterns
                    .iter()
                    .filter(|p| p.matches(h))
                    .map(HostPattern::specificity)
                    .max()
            })
        };
        if let Some(rank) = rank
            && best.as_ref().is_none_or(|(_, r)| rank > *r)
        {
            best = Some((item, rank));
        }
    }
    best.map(|(item, _)| item)
}

/// A set of hostnames on a bind, with its routes.
#[derive(Debug)]
pub struct Listener {
    /// Key.
    pub key: Arc<str>,
    /// Hostnames; empty takes any host.
    pub hostnames: Vec<HostPattern>,
    /// Routes in precedence order.
    pub routes: RouteTable,
    /// Routes of a TLS passthrough or TCP listener, in config order (then `routes` is
    /// empty).
    pub streams: Vec<Arc<StreamRoute>>,
}

impl Listener {
    /// Picks the stream route for an SNI name: the route whose hostnames match it most
    /// specifically (exact, then the longest wildcard), else a route without hostnames.
    pub fn stream_route_for(&self, sni: Option<&str>) -> Option<&Arc<StreamRoute>> {
        most_specific(&self.streams, |r| &r.hostnames, sni)
    }
}

/// A route of a TLS passthrough or TCP listener: where its connections' bytes go.
#[derive(Debug)]
pub struct StreamRoute {
    /// Key.
    pub key: Arc<str>,
    /// SNI names (TLS passthrough); empty takes all of the listener's.
    pub hostnames: Vec<HostPattern>,
    /// Weighted `host:port` destinations (at least one, weights > 0).
    pub backends: Vec<StreamBackend>,
}

impl StreamRoute {
    /// Picks a backend by weight.
    pub fn choose_backend(&self) -> Option<&StreamBackend> {
        use rand::Rng;
        let total: u64 = self.backends.iter().map(|b| u64::from(b.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut pick = rand::rng().random_range(0..total);
        self.backends.iter().find(|b| {
            let w = u64::from(b.weight);
            if pick < w {
                true
            } else {
                pick -= w;
                false
            }
        })
    }
}

/// A destination of a stream route.
#[derive(Debug)]
pub struct StreamBackend {
    /// Key of the backend.
    pub key: Arc<str>,
    /// `host:port`, resolved when a connection is forwarded.
    pub address: Arc<str>,
    /// Relative weight (> 0).
    pub weight: u32,
}

/// A routing rule.
#[derive(Debug)]
pub struct Route {
    /// Key.
    pub key: Arc<str>,
    /// Route hostnames; empty takes all of the listener's.
    pub hostnames: Vec<HostPattern>,
    /// Conditions (at least one; an empty list in config becomes "any").
    pub matches: Vec<RequestMatcher>,
    /// Weighted backends.
    pub backends: Vec<RouteBackend>,
    /// Effective policies when no backend is involved (listener, then route).
    pub policies: Arc<Policies>,
}

/// A backend of a route, with the policies that apply when it is chosen.
#[derive(Debug)]
pub struct RouteBackend {
    /// The backend.
    pub backend: Arc<Backend>,
    /// Relative weight (> 0; zero-weight backends are dropped at compile time).
    pub weight: u32,
    /// Effective policies: listener, then route, then backend, the most specific winning.
    pub policies: Arc<Policies>,
}

/// An upstream destination.
#[derive(Debug)]
pub struct Backend {
    /// Key.
    pub key: Arc<str>,
    /// What kind of backend it is, and the handler that serves it.
    pub kind: BackendKind,
}

/// Backend kinds. Protocol handlers (MCP, A2A, LLM) add variants here.
#[derive(Debug)]
pub enum BackendKind {
    /// A plain HTTP upstream.
    Host(Arc<UpstreamClient>),
    /// An MCP gateway federating upstream MCP servers.
    Mcp(Arc<crate::mcp::McpBackend>),
}

/// The effective traffic policies for a request; each kind comes from the most specific
/// level that sets it.
#[derive(Debug, Default, Clone)]
pub struct Policies {
    /// Request header changes.
    pub request_headers: Option<Arc<HeaderMods>>,
    /// Response header changes.
    pub response_headers: Option<Arc<HeaderMods>>,
    /// Redirect answered by the proxy.
    pub redirect: Option<Arc<Redirect>>,
    /// Host/path rewrite.
    pub url_rewrite: Option<Arc<UrlRewrite>>,
    /// Fixed response.
    pub direct_response: Option<Arc<DirectResponse>>,
    /// CORS.
    pub cors: Option<Arc<Cors>>,
    /// Time limits.
    pub timeouts: Option<Timeouts>,
    /// Retries.
    pub retry: Option<Arc<Retry>>,
    /// Mirroring.
    pub mirror: Option<Arc<Mirror>>,
}

impl Policies {
    /// Layers `more` (more specific) over `self`.
    pub fn overlay(&self, more: &Policies) -> Policies {
        fn pick<T: Clone>(base: &Option<T>, over: &Option<T>) -> Option<T> {
            over.clone().or_else(|| base.clone())
        }
        Policies {
            request_headers: pick(&self.request_headers, &more.request_headers),
            response_headers: pick(&self.response_headers, &more.response_headers),
            redirect: pick(&self.redirect, &more.redirect),
            url_rewrite: pick(&self.url_rewrite, &more.url_rewrite),
            direct_response: pick(&self.direct_response, &more.direct_response),
            cors: pick(&self.cors, &more.cors),
            timeouts: pick(&self.timeouts, &more.timeouts),
            retry: pick(&self.retry, &more.retry),
            mirror: pick(&self.mirror, &more.mirror),
        }
    }
}

/// Header changes: set, then add, then remove.
#[derive(Debug, Default)]
pub struct HeaderMods {
    /// Replace.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Append.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Remove.
    pub remove: Vec<HeaderName>,
}

/// A path replacement.
#[derive(Debug, Clone)]
pub enum PathRewrite {
    /// Replace the whole path.
    Full(String),
    /// Replace the matched prefix.
    Prefix(String),
}

/// A redirect.
#[derive(Debug)]
pub struct Redirect {
    /// New scheme.
    pub scheme: Option<String>,
    /// New host.
    pub host: Option<String>,
    /// New port.
    pub port: Option<u16>,
    /// New path.
    pub path: Option<PathRewrite>,
    /// Status code.
    pub status: StatusCode,
}

/// A rewrite before forwarding.
#[derive(Debug)]
pub struct UrlRewrite {
    /// New authority.
    pub host: Option<HeaderValue>,
    /// New path.
    pub path: Option<PathRewrite>,
}

/// A fixed response.
#[derive(Debug)]
pub struct DirectResponse {
    /// Status.
    pub status: StatusCode,
    /// Body.
    pub body: bytes::Bytes,
}

/// CORS settings.
#[derive(Debug)]
pub struct Cors {
    /// Allowed origins.
    pub allow_origins: Vec<OriginPattern>,
    /// `Access-Control-Allow-Methods` value.
    pub allow_methods: Option<HeaderValue>,
    /// `Access-Control-Allow-Headers` value.
    pub allow_headers: Option<HeaderValue>,
    /// `Access-Control-Expose-Headers` value.
    pub expose_headers: Option<HeaderValue>,
    /// Whether credentials are allowed.
    pub allow_credentials: bool,
    /// `Access-Control-Max-Age` value.
    pub max_age: Option<HeaderValue>,
}

/// An allowed CORS origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// Any origin.
    Any,
    /// Exactly this origin (lowercase).
    Exact(String),
    /// `scheme://*.suffix`: scheme and the host suffix (lowercase, with leading `.`).
    Wildcard {
        /// `https://` or `http://`.
        scheme: String,
        /// Host suffix with leading dot, possibly with a port.
        suffix: String,
    },
}

/// Time limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    /// Whole request until the response head.
    pub request: Option<Duration>,
    /// Each backend attempt until the response head.
    pub backend_request: Option<Duration>,
}

/// Retry settings.
#[derive(Debug)]
pub struct Retry {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Initial backoff, doubled per retry.
    pub backoff: Duration,
    /// Statuses that trigger a retry.
    pub codes: Vec<StatusCode>,
    /// Whether connect failures trigger a retry.
    pub on_connect_error: bool,
}

/// Mirroring settings.
#[derive(Debug)]
pub struct Mirror {
    /// Where copies go.
    pub backend: Arc<Backend>,
    /// Share of requests copied, 0.0-100.0.
    pub percentage: f64,
}
