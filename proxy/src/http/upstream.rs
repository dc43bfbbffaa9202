//! The client the proxy uses to reach `host` backends: one connection pool per backend.
//!
//! An [`UpstreamClient`] always dials the backend's configured `address`, whatever the
//! request's Host says, yet keeps the client's Host (and so the HTTP/2 `:authority`). It
//! originates TLS when asked (CA bundle or web PKI roots, SNI, client certificate), speaks
//! HTTP/1.1 or HTTP/2 as the backend's `protocol` says, keeps connections alive in a pool,
//! and classifies failures into an [`UpstreamErrorKind`] the caller maps to a status.
//! [`UpstreamPool`] keeps clients across config reloads so unchanged backends keep their
//! warm connections.
//!
//! It must not know about routes, policies, retries or per-request timeouts: callers decide
//! what to send and what to do with the answer. Whatever can fail because of config (files,
//! names, addresses) fails in [`UpstreamClient::new`], never on the request path.

mod connector;
mod pool;
mod tls;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use std::{fmt, io};

use agentmesh_proto::config::v1::{HostBackend, UpstreamProtocol};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use hyper::body::Incoming;

use self::connector::Transport;
use self::pool::{CheckoutError, ConnPool, Sender};
use self::tls::TlsOrigination;
use super::body::Body;
use crate::BoxError;

pub use self::connector::ConnectionObserver;

/// How long an idle pooled connection is kept before it is closed.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per backend and authority.
const POOL_MAX_IDLE_PER_HOST: usize = 64;
/// HTTP/2 PING interval on a connection with streams in flight, to find dead peers.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long an HTTP/2 PING may go unanswered before the connection is closed.
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times a request that a pooled connection refused before sending anything is
/// tried on another connection.
const UNSENT_RETRIES: u32 = 3;

/// A backend spec that cannot be turned into a client. The message starts with the field
/// at fault, in its config (camelCase) spelling.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamConfigError {
    /// `address` is not `host:port`.
    #[error("address: {address:?} is not host:port")]
    Address {
        /// The address as configured.
        address: String,
    },
    /// `protocol` holds a value this build does not know.
    #[error("protocol: unknown value {0}")]
    Protocol(i32),
    /// The server name (from `tls.sni` or the address) is not a DNS name or IP address.
    #[error("tls.sni: {sni:?} is not a valid server name")]
    Sni {
        /// The rejected name.
        sni: String,
    },
    /// Only one of `tls.certFile` and `tls.keyFile` is set.
    #[error("tls.certFile and tls.keyFile must be set together")]
    CertWithoutKey,
    /// Both `tls.caFile` and `tls.caPem` are set.
    #[error("tls.caPem: set at most one of tls.caFile and tls.caPem")]
    CaFileAndPem,
    /// A file named by the spec cannot be read.
    #[error("{field}: cannot read {path}: {source}")]
    ReadFile {
        /// The field naming the file, e.g. `tls.caFile`.
        field: &'static str,
        /// The path as configured.
        path: String,
        /// The filesystem error.
        source: io::Error,
    },
    /// A file was read but does not hold what the field needs.
    #[error("{field}: {path}: {reason}")]
    InvalidFile {
        /// The field naming the file.
        field: &'static str,
        /// The path as configured.
        path: String,
        /// What is wrong with its content.
        reason: String,
    },
    /// rustls rejected the material (a CA it cannot parse, a key that does not match the
    /// certificate...).
    #[error("{field}: {source}")]
    Tls {
        /// The field whose material was rejected.
        field: &'static str,
        /// The rustls error.
        source: rustls::Error,
    },
}

impl UpstreamConfigError {
    /// The config field at fault, e.g. `address` or `tls.caFile`.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Address { .. } => "address",
            Self::Protocol(_) => "protocol",
            Self::Sni { .. } => "tls.sni",
            Self::CertWithoutKey => "tls.certFile",
            Self::CaFileAndPem => "tls.caPem",
            Self::ReadFile { field, .. }
            | Self::InvalidFile { field, .. }
            | Self::Tls { field, .. } => field,
        }
    }
}

/// What kind of failure an [`UpstreamError`] is, for the status code and metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamErrorKind {
    /// No connection: refused, unreachable, DNS failure, TLS handshake failure, connect
    /// timeout. The request was never sent (503).
    Connect,
    /// The connection was closed or reset before a complete response head (502).
    Reset,
    /// Any other failure of the exchange: malformed response, HTTP/2 stream error... (502).
    Protocol,
}

impl UpstreamErrorKind {
    /// A short lowercase label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Reset => "reset",
            Self::Protocol => "protocol",
        }
    }
}

impl fmt::Display for UpstreamErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request to a backend that got no response. The message names the backend and the
/// innermost cause; [`kind`](Self::kind) classifies it.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// See [`UpstreamErrorKind::Connect`].
    #[error("backend {backend}: cannot connect to {address}: {cause}")]
    Connect {
        /// The backend name.
        backend: String,
        /// The address dialed.
        address: String,
        /// The error chain, flattened for logs.
        cause: String,
        /// The client error.
        source: BoxError,
    },
    /// See [`UpstreamErrorKind::Reset`].
    #[error("backend {backend}: connection closed before the response head: {cause}")]
    Reset {
        /// The backend name.
        backend: String,
        /// The error chain, flattened for logs.
        cause: String,
        /// The client error.
        source: BoxError,
    },
    /// See [`UpstreamErrorKind::Protocol`].
    #[error("backend {backend}: {cause}")]
    Protocol {
        /// The backend name.
        backend: String,
        /// The error chain, flattened for logs.
        cause: String,
        /// The client error.
        source: BoxError,
    },
}

impl UpstreamError {
    /// What kind of failure this is.
    pub fn kind(&self) -> UpstreamErrorKind {
        match self {
            Self::Connect { .. } => UpstreamErrorKind::Connect,
            Self::Reset { .. } => UpstreamErrorKind::Reset,
            Self::Protocol { .. } => UpstreamErrorKind::Protocol,
        }
    }

    /// Whether the backend may have seen (part of) the request. `false` only when no
    /// connection was made, so retrying even a non-idempotent request is safe.
    pub fn possibly_sent(&self) -> bool {
        self.kind() != UpstreamErrorKind::Connect
    }

    /// No connection could be made: the request was never sent.
    fn connect(backend: &str, address: &str, err: CheckoutError) -> Self {
        Self::Connect {
            backend: backend.to_owned(),
            address: address.to_owned(),
            cause: flatten_chain(&err),
            source: Box::new(err),
        }
    }

    /// The exchange failed on an open connection, classified by its source chain.
    fn exchange(backend: &str, address: &str, err: hyper::Error) -> Self {
        let cause = flatten_chain(&err);
        let backend = backend.to_owned();
        let source: BoxError = Box::new(err);
        match classify(&*source) {
            UpstreamErrorKind::Connect => Self::Connect {
                backend,
                address: address.to_owned(),
                cause,
                source,
            },
            UpstreamErrorKind::Reset => Self::Reset {
                backend,
                cause,
                source,
            },
            UpstreamErrorKind::Protocol => Self::Protocol {
                backend,
                cause,
                source,
            },
        }
    }
}

/// A reset is recognised by hyper's "closed before the message completed" family or an
/// I/O error saying the peer went away; anything else on an open connection is a
/// protocol error.
fn classify(err: &(dyn std::error::Error + 'static)) -> UpstreamErrorKind {
    let mut next = Some(err);
    while let Some(cause) = next {
        if let Some(hyper_err) = cause.downcast_ref::<hyper::Error>()
            && (hyper_err.is_incomplete_message()
                || hyper_err.is_closed()
                || hyper_err.is_canceled())
        {
            return UpstreamErrorKind::Reset;
        }
        if let Some(io_err) = cause.downcast_ref::<io::Error>()
            && matches!(
                io_err.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::NotConnected
            )
        {
            return UpstreamErrorKind::Reset;
        }
        next = cause.source();
    }
    UpstreamErrorKind::Protocol
}

/// The messages of the error and its source chain, joined with `: `.
fn flatten_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        next = cause.source();
    }
    message
}

/// The pooled HTTP client of one `host` backend.
///
/// Cheap to share behind an `Arc`; every clone of the inner client uses the same pool.
pub struct UpstreamClient {
    backend: String,
    address: String,
    scheme: Scheme,
    /// The authority used when the request carries neither a Host header nor one in its
    /// URI: the backend address.
    fallback_authority: Authority,
    pool: Arc<ConnPool>,
}

impl fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("backend", &self.backend)
            .field("address", &self.address)
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl UpstreamClient {
    /// Connect timeout used by [`new`](Self::new): resolution, TCP and TLS handshake.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

    /// Validates `spec`, loads its TLS files and builds the client of backend
    /// `backend_name`, with the default connect timeout. `observer`, when set, is told
    /// about every connection opened or failed.
    pub fn new(
        backend_name: &str,
        spec: &HostBackend,
        observer: Option<Arc<dyn ConnectionObserver>>,
    ) -> Result<Self, UpstreamConfigError> {
        Self::with_connect_timeout(backend_name, spec, observer, Self::DEFAULT_CONNECT_TIMEOUT)
    }

    /// As [`new`](Self::new), with a connect timeout bounding resolution, TCP connect and
    /// TLS handshake together.
    pub fn with_connect_timeout(
        backend_name: &str,
        spec: &HostBackend,
        observer: Option<Arc<dyn ConnectionObserver>>,
        connect_timeout: Duration,
    ) -> Result<Self, UpstreamConfigError> {
        let (authority, host) = parse_address(&spec.address)?;
        let protocol = UpstreamProtocol::try_from(spec.protocol)
            .map_err(|_| UpstreamConfigError::Protocol(spec.protocol))?;
        let tls = spec
            .tls
            .as_ref()
            .map(|tls| TlsOrigination::load(tls, &host, protocol))
            .transpose()?;
        let scheme = if tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let pool = ConnPool::new(
            Transport {
                backend: backend_name.to_owned(),
                address: spec.address.clone(),
                tls,
                connect_timeout,
                observer,
            },
            protocol == UpstreamProtocol::Http2,
        );
        Ok(Self {
            backend: backend_name.to_owned(),
            address: spec.address.clone(),
            scheme,
            fallback_authority: authority,
            pool,
        })
    }

    /// The backend name this client serves.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The `host:port` this client dials.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends `req` to the backend on a pooled connection and returns the response head;
    /// the body streams from the connection.
    ///
    /// The request may carry any URI form (usually origin-form `/path?query`). Over
    /// HTTP/1.1 it is sent in origin-form (authority-form for `CONNECT`) with a Host
    /// header added when it has none; over HTTP/2 in absolute form, whose authority is
    /// the request's Host header (else its URI authority, else the backend address) and
    /// becomes the `:authority`. The Host header itself is left as it is. A
    /// `101 Switching Protocols` response can be upgraded with `hyper::upgrade::on`.
    ///
    /// A request that a reused connection refused before sending anything (the server
    /// closed it meanwhile) is tried again on another connection.
    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
        // The version of the downstream hop says nothing about this one.
        if req.version() == Version::HTTP_2 {
            *req.version_mut() = Version::HTTP_11;
        }
        let mut retries_left = UNSENT_RETRIES;
        loop {
            // A pooled connection without the `take` future (one level less per request).
            let checkout = match self.pool.take_pooled() {
                Some(checkout) => checkout,
                None => self
                    .pool
                    .take()
                    .await
                    .map_err(|err| UpstreamError::connect(&self.backend, &self.address, err))?,
            };
            let mut sent = match checkout.sender {
                Sender::Http1(mut sender) => {
                    self.to_http1_form(&mut req);
                    let method_is_connect = req.method() == Method::CONNECT;
                    match sender.try_send_request(req).await {
                        Ok(resp) => {
                            // Upgraded (or tunnelled) connections are no longer HTTP.
                            let taken = resp.status() == StatusCode::SWITCHING_PROTOCOLS
                                || (method_is_connect && resp.status().is_success());
                            if !taken {
                                self.pool.put(sender);
                            }
                            return Ok(resp);
                        }
                        Err(err) => err,
                    }
                }
                Sender::Http2(mut sender) => {
                    *req.uri_mut() = self.upstream_uri(&req);
                    match sender.try_send_request(req).await {
                        Ok(resp) => return Ok(resp),
                        Err(err) => err,
                    }
                }
            };
            match sent.take_message() {
                Some(unsent) if checkout.reused && retries_left > 0 => {
                    retries_left -= 1;
                    tracing::debug!(backend = %self.backend, error = %sent.error(), "pooled connection closed before the request was sent; trying another");
                    req = unsent;
                }
                _ => {
                    return Err(UpstreamError::exchange(
                        &self.backend,
                        &self.address,
                        sent.into_error(),
                    ));
                }
            }
        }
    }

    /// Origin-form URI (authority-form for `CONNECT`) and a Host header, as HTTP/1.1
    /// sends them.
    fn to_http1_form(&self, req: &mut Request<Body>) {
        if !req.headers().contains_key(header::HOST) {
            let authority = req
                .uri()
                .authority()
                .unwrap_or(&self.fallback_authority)
                .as_str();
            // Without any user info an authority may carry.
            let host_port = authority.rsplit('@').next().unwrap_or(authority);
            if let Ok(host) = HeaderValue::from_str(host_port) {
                req.headers_mut().insert(header::HOST, host);
            }
        }
        if req.method() == Method::CONNECT {
            let authority = self.upstream_uri(req).authority().cloned();
            if let Some(authority) = authority {
                *req.uri_mut() = Uri::from(authority);
            }
        } else if req.uri().scheme().is_some() || req.uri().authority().is_some() {
            let path = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            *req.uri_mut() = Uri::from(path);
        }
    }

    fn upstream_uri(&self, req: &Request<Body>) -> Uri {
        let authority = req
            .headers()
            .get(header::HOST)
            .and_then(|host| Authority::try_from(host.as_bytes()).ok())
            .or_else(|| req.uri().authority().cloned())
            .unwrap_or_else(|| self.fallback_authority.clone());
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(authority);
        parts.path_and_query = Some(path);
        // Scheme, authority and path are each valid, so the URI is; keep the request's
        // own URI in the impossible case rather than panic.
        Uri::from_parts(parts).unwrap_or_else(|_| req.uri().clone())
    }
}

/// Splits a `host:port` address: its authority (for URIs) and its host without IPv6
/// brackets (for SNI).
fn parse_address(address: &str) -> Result<(Authority, String), UpstreamConfigError> {
    let invalid = || UpstreamConfigError::Address {
        address: address.to_owned(),
    };
    let authority: Authority = address.parse().map_err(|_| invalid())?;
    if authority.as_str().contains('@') || authority.port_u16().is_none() {
        return Err(invalid());
    }
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(invalid());
    }
    let host = host.to_owned();
    Ok((authority, host))
}

/// Clients by backend name, kept across config reloads: a backend whose spec (and TLS
/// files on disk) did not change keeps its client and its warm connections.
pub struct UpstreamPool {
    clients: Mutex<HashMap<String, PoolEntry>>,
    observer: Option<Arc<dyn ConnectionObserver>>,
    connect_timeout: Duration,
}

struct PoolEntry {
    spec: HostBackend,
    files: Vec<Option<SystemTime>>,
    client: Arc<UpstreamClient>,
}

impl fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("backends", &self.len())
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl UpstreamPool {
    /// An empty pool whose clients report to `observer` and use the default connect
    /// timeout.
    pub fn new(observer: Option<Arc<dyn ConnectionObserver>>) -> Self {
        Self {
            clients: Mutex::default(),
            observer,
            connect_timeout: UpstreamClient::DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// Sets the connect timeout of the clients built from now on.
    pub fn with_connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// The client of backend `name`: the cached one when `spec` is unchanged and its TLS
    /// files were not modified since, else a new one (replacing the old, whose in-flight
    /// requests finish on their own connections). Call it when config is loaded, not per
    /// request: a new client reads files.
    pub fn client(
        &self,
        name: &str,
        spec: &HostBackend,
    ) -> Result<Arc<UpstreamClient>, UpstreamConfigError> {
        let files = file_stamps(spec);
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = clients.get(name)
            && entry.spec == *spec
            && entry.files == files
        {
            return Ok(entry.client.clone());
        }
        let client = Arc::new(UpstreamClient::with_connect_timeout(
            name,
            spec,
            self.observer.clone(),
            self.connect_timeout,
        )?);
        clients.insert(
            name.to_owned(),
            PoolEntry {
                spec: spec.clone(),
                files,
                client: client.clone(),
            },
        );
        Ok(client)
    }

    /// Drops the clients of backends for which `keep` returns false, e.g. those removed by
    /// a reload. Their idle connections close once no request holds the client.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|name, _| keep(name));
    }

    /// How many backends have a client.
    pub fn len(&self) -> usize {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no backend has a client.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Modification times of the TLS files a spec names, so a rotated certificate rebuilds
/// the client on the next reload.
fn file_stamps(spec: &HostBackend) -> Vec<Option<SystemTime>> {
    let Some(tls) = &spec.tls else {
        return Vec::new();
    };
    [&tls.ca_file, &tls.cert_file, &tls.key_file]
        .into_iter()
        .map(|path| {
            std::fs::metadata(path)
                .and_then(|meta| meta.modified())
                .ok()
        })
        .collect()
}
