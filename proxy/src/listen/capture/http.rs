//! Captured HTTP: each request either goes through the ordinary pipeline (when a capture
//! bind serves its original destination and one of the bind's listeners its Host), or
//! goes straight to where it was going: for outbound traffic after the egress rules and
//! the outbound default (forwarded, or refused with a 403 naming the destination), for
//! inbound traffic to the app on loopback unless the inbound default refuses it (403).
//!
//! Where "where it was going" is, and whether the proxy speaks TLS to it, is a
//! [`Target`]: plain to the original destination, TLS the proxy opens (egress `ORIGINATE`,
//! or re-encryption of intercepted TLS), or the app's port on loopback. A request a
//! capture bind serves gets the same target as its [`OriginalDestination`]: a route
//! without backends applies its policies and sends there.
//!
//! The decision is made per request, not per connection, because one keep-alive
//! connection to `10.0.0.5:8080` may carry requests for several virtual hosts.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use agentmesh_proto::config::v1::{HostBackend, UpstreamProtocol};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::config::Store;
use crate::config::ir::{Backend, BackendKind, Policies};
use crate::config::sidecar::{CaBundle, EgressTls, OutboundAction};
use crate::http::body::{self, Body};
use crate::http::error::ProxyError;
use crate::http::forward::{self, Head, Outbound, OutboundBody};
use crate::http::route::request_host;
use crate::http::service::{ConnContext, HttpService, OriginalDestination};
use crate::http::upstream::{ConnectionObserver, UpstreamClient, UpstreamError};
use crate::telemetry::metrics::{Metrics, RequestLabels};
use crate::telemetry::sidecar::CapturedProtocol;

/// The backend name of traffic forwarded in plain text to its original destination, in
/// metrics and errors. One name for every destination keeps the number of series bounded.
pub const PASSTHROUGH_BACKEND: &str = "passthrough";
/// The backend name of traffic sent on over TLS the sidecar opened (originated, or
/// re-encrypted after interception).
pub const TLS_BACKEND: &str = "passthrough-tls";
/// The backend name of inbound traffic forwarded to the app.
pub const INBOUND_BACKEND: &str = "inbound-app";
/// Destinations whose pooled client is kept; past this the cache starts over.
const MAX_PASSTHROUGH_CLIENTS: usize = 1024;

/// Where a captured request goes when no route sends it elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The address dialed.
    pub addr: SocketAddr,
    /// Plain HTTP/2 (the client spoke h2c); ignored over TLS, where ALPN decides.
    pub h2: bool,
    /// TLS the proxy opens, if any.
    pub tls: Option<TlsTarget>,
    /// Inbound: the app on loopback.
    pub inbound: bool,
}

/// TLS the proxy opens to a target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsTarget {
    /// The name sent in SNI and verified in the server's certificate.
    pub server_name: String,
    /// CA bundle verifying the server; `None`: the web PKI roots.
    pub ca: Option<CaBundle>,
}

impl Target {
    /// Plain HTTP to `addr`.
    pub fn plain(addr: SocketAddr, h2: bool) -> Self {
        Target {
            addr,
            h2,
            tls: None,
            inbound: false,
        }
    }

    /// The app's port `dst.port()` on loopback, in `dst`'s address family: never the pod
    /// address, which iptables would send back to the inbound capture port.
    pub fn inbound(dst: SocketAddr, h2: bool) -> Self {
        let ip = if dst.ip().to_canonical().is_ipv4() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        };
        Target {
            addr: SocketAddr::new(ip, dst.port()),
            h2,
            tls: None,
            inbound: true,
        }
    }

    fn backend_name(&self) -> &'static str {
        match (&self.tls, self.inbound) {
            (_, true) => INBOUND_BACKEND,
            (Some(_), false) => TLS_BACKEND,
            (None, false) => PASSTHROUGH_BACKEND,
        }
    }
}

/// Pooled clients to captured traffic's targets, one per [`Target`], made on first use
/// and kept so keep-alive connections are reused.
pub struct PassthroughBackends {
    clients: Mutex<HashMap<Target, Arc<Backend>>>,
    observer: Option<Arc<dyn ConnectionObserver>>,
}

impl PassthroughBackends {
    /// An empty cache whose clients report connections to `observer`.
    pub fn new(observer: Option<Arc<dyn ConnectionObserver>>) -> Self {
        PassthroughBackends {
            clients: Mutex::default(),
            observer,
        }
    }

    /// The backend sending to `target`. Making one reads the target's CA bundle, which
    /// the config compiler has already read once, so it fails only if the file changed.
    fn get(&self, target: &Target) -> Result<Arc<Backend>, String> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = clients.get(target) {
            return Ok(b.clone());
        }
        let protocol = if target.h2 && target.tls.is_none() {
            UpstreamProtocol::Http2
        } else {
            UpstreamProtocol::Auto
        };
        let spec = HostBackend {
            address: target.addr.to_string(),
            protocol: protocol as i32,
            tls: target
                .tls
                .as_ref()
                .map(|t| CaBundle::upstream_tls(t.ca.as_ref(), &t.server_name)),
        };
        let name = target.backend_name();
        let client =
            UpstreamClient::new(name, &spec, self.observer.clone()).map_err(|e| e.to_string())?;
        let backend = Arc::new(Backend {
            key: name.into(),
            kind: BackendKind::Host(Arc::new(client)),
        });
        if clients.len() >= MAX_PASSTHROUGH_CLIENTS {
            clients.clear();
        }
        clients.insert(target.clone(), backend.clone());
        Ok(backend)
    }
}

/// A captured request's [`Target`] as the pipeline's [`OriginalDestination`]: what a
/// route of a capture bind without backends sends to.
struct OriginalTarget {
    target: Target,
    passthrough: Arc<PassthroughBackends>,
    /// Whether sending opens TLS the app did not ask for (egress `ORIGINATE`), counted.
    originates: bool,
    metrics: Arc<Metrics>,
}

impl OriginalDestination for OriginalTarget {
    fn backend(&self) -> Result<Arc<Backend>, UpstreamError> {
        let backend = self.passthrough.get(&self.target).map_err(|cause| {
            tracing::warn!(dst = %self.target.addr, error = %cause, "cannot make a client for the original destination");
            UpstreamError::Connect {
                backend: self.target.backend_name().into(),
                address: self.target.addr.to_string(),
                source: cause.clone().into(),
                cause,
            }
        })?;
        if self.originates {
            self.metrics.sidecar.originated();
        }
        Ok(backend)
    }
}

/// Which captured traffic a connection carries.
#[derive(Debug, Clone)]
pub enum Side {
    /// Plain outbound HTTP; an egress rule may have the proxy originate TLS.
    Outbound,
    /// Outbound TLS the proxy terminated: re-encrypted to the original destination.
    Intercepted {
        /// The client's SNI (or the destination address when it sent none).
        server_name: String,
        /// CA bundle verifying the real server.
        ca: Option<CaBundle>,
    },
    /// Inbound: to the app on loopback.
    Inbound,
}

/// The HTTP service of one captured connection.
#[derive(Clone)]
pub struct CapturedHttp {
    /// The running config.
    pub store: Arc<Store>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The connection; `orig_dst` is set.
    pub conn: ConnContext,
    /// The original destination.
    pub dst: SocketAddr,
    /// Whether the client speaks HTTP/2 in plain text.
    pub h2: bool,
    /// Clients to targets.
    pub passthrough: Arc<PassthroughBackends>,
    /// Outbound, intercepted or inbound.
    pub side: Side,
}

impl CapturedHttp {
    /// Serves one request.
    pub async fn handle(self, req: Request<Incoming>) -> Response<Body> {
        let config = self.store.load();
        let host = request_host(req.uri(), req.headers()).map(|h| h.into_owned());
        let (bind, verdict) = match &self.side {
            Side::Inbound => (config.sidecar.inbound_bind(&config, self.dst), None),
            Side::Outbound | Side::Intercepted { .. } => (
                config.sidecar.outbound_bind(&config, self.dst),
                Some(config.sidecar.decide(host.as_deref(), self.dst)),
            ),
        };
        let target = self.target(host.as_deref(), verdict.as_ref().map(|v| &v.tls));
        if let Some(bind) = bind
            && bind.listener_for(host.as_deref()).is_some()
        {
            let mut conn = self.conn.clone();
            conn.bind_key = bind.key.as_str().into();
            drop(config);
            // A route without backends sends where the app was sending, as an unmatched
            // request would go.
            let original = OriginalTarget {
                originates: target.tls.is_some() && matches!(self.side, Side::Outbound),
                target,
                passthrough: self.passthrough.clone(),
                metrics: self.metrics.clone(),
            };
            return HttpService::new(self.store, self.metrics, conn)
                .with_original_destination(Arc::new(original))
                .handle(req)
                .await;
        }
        let inbound_default = config.sidecar.inbound_default;
        drop(config);
        let start = Instant::now();
        let method = req.method().clone();
        let host = host.unwrap_or_default();
        let (response, backend) = match verdict {
            None if inbound_default == OutboundAction::Deny => {
                self.metrics.sidecar.inbound_denied(self.protocol());
                tracing::warn!(
                    peer = %self.conn.peer,
                    dst = %self.dst,
                    host = %host,
                    "inbound HTTP request denied: no inbound bind serves it (inbound default DENY)"
                );
                (deny_inbound(&host, self.dst), "")
            }
            Some(v) if v.action == OutboundAction::Deny => {
                self.metrics.sidecar.denied(self.protocol());
                tracing::warn!(
                    dst = %self.dst,
                    host = %host,
                    rule = v.rule.as_deref().unwrap_or("outbound default"),
                    peer = %self.conn.peer,
                    "outbound HTTP request denied"
                );
                (deny(&host, self.dst), "")
            }
            _ => {
                if target.tls.is_some() && matches!(self.side, Side::Outbound) {
                    self.metrics.sidecar.originated();
                }
                (
                    self.pass_through(req, &host, &target).await,
                    target.backend_name(),
                )
            }
        };
        self.metrics.record_request(
            &RequestLabels {
                listener: "".into(),
                route: "".into(),
                backend: backend.into(),
                method,
                status: response.status().as_u16(),
            },
            start.elapsed(),
        );
        response
    }

    /// The protocol label of this connection's requests.
    fn protocol(&self) -> CapturedProtocol {
        match (&self.side, self.h2) {
            (Side::Intercepted { .. }, _) => CapturedProtocol::Tls,
            (_, true) => CapturedProtocol::Http2,
            (_, false) => CapturedProtocol::Http1,
        }
    }

    /// Where a request for `host` goes when no route sends it elsewhere.
    fn target(&self, host: Option<&str>, tls: Option<&EgressTls>) -> Target {
        match (&self.side, tls, host) {
            (Side::Inbound, _, _) => Target::inbound(self.dst, self.h2),
            (Side::Intercepted { server_name, ca }, _, _) => Target {
                tls: Some(TlsTarget {
                    server_name: server_name.clone(),
                    ca: ca.clone(),
                }),
                ..Target::plain(self.dst, false)
            },
            (Side::Outbound, Some(EgressTls::Originate { port, ca }), Some(host)) => Target {
                tls: Some(TlsTarget {
                    server_name: host.to_owned(),
                    ca: ca.clone(),
                }),
                ..Target::plain(
                    SocketAddr::new(self.dst.ip(), port.unwrap_or(self.dst.port())),
                    false,
                )
            },
            (Side::Outbound, _, _) => Target::plain(self.dst, self.h2),
        }
    }

    /// Forwards the request, unchanged but for hop-by-hop headers, to `target` on a
    /// pooled connection.
    async fn pass_through(
        &self,
        req: Request<Incoming>,
        host: &str,
        target: &Target,
    ) -> Response<Body> {
        let backend = match self.passthrough.get(target) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(dst = %target.addr, error = %e, "cannot make a client for the original destination");
                return plain(StatusCode::BAD_GATEWAY, format!("agentmesh: {e}\n"));
            }
        };
        let upgrade = forward::wants_upgrade(&req);
        let (mut parts, incoming) = req.into_parts();
        let on_upgrade = if upgrade {
            parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
        } else {
            None
        };
        forward::strip_hop_by_hop(&mut parts.headers, upgrade);
        if !parts.headers.contains_key(header::HOST)
            && let Some(a) = parts.uri.authority()
            && let Ok(v) = HeaderValue::from_str(a.as_str())
        {
            parts.headers.insert(header::HOST, v);
        }
        let outbound = Outbound {
            head: Head {
                method: parts.method,
                uri: parts.uri,
                version: parts.version,
                headers: parts.headers,
            },
            body: OutboundBody::Streaming(body::boxed(incoming)),
            upgrade: on_upgrade,
            replay_limit: 0,
        };
        match forward::forward(&backend, outbound, &Policies::default(), &self.metrics).await {
            Ok(resp) => {
                let (mut parts, incoming) = resp.into_parts();
                if parts.status != StatusCode::SWITCHING_PROTOCOLS {
                    forward::strip_hop_by_hop(&mut parts.headers, false);
                }
                Response::from_parts(parts, body::boxed(incoming))
            }
            Err(e) => unreachable_target(&e, host, target),
        }
    }
}

/// The answer when the target cannot be reached. A failed connection (TLS verification
/// included) is explained to the app, which already knows the destination; the log line
/// names it too.
fn unreachable_target(e: &ProxyError, host: &str, target: &Target) -> Response<Body> {
    let name = if host.is_empty() {
        target.addr.to_string()
    } else {
        format!("{host} ({})", target.addr)
    };
    let over = match &target.tls {
        Some(t) => format!(" over TLS (verifying {:?})", t.server_name),
        None => String::new(),
    };
    tracing::warn!(dst = %target.addr, host = %host, tls = target.tls.is_some(), error = %e, "captured request could not be sent on");
    match e {
        ProxyError::Upstream(UpstreamError::Connect { cause, .. }) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("agentmesh: cannot connect to {name}{over}: {cause}\n"),
        ),
        other => other.to_response(),
    }
}

impl hyper::service::Service<Request<Incoming>> for CapturedHttp {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

/// The answer to a denied request: 403 naming the destination.
fn deny(host: &str, dst: SocketAddr) -> Response<Body> {
    let name = if host.is_empty() {
        dst.to_string()
    } else {
        format!("{host} ({dst})")
    };
    plain(
        StatusCode::FORBIDDEN,
        format!(
            "agentmesh: outbound traffic to {name} is denied by the sidecar's outbound policy\n"
        ),
    )
}

/// The answer to an inbound request the inbound default refuses: 403 naming the port.
fn deny_inbound(host: &str, dst: SocketAddr) -> Response<Body> {
    let name = if host.is_empty() {
        format!("port {}", dst.port())
    } else {
        format!("{host} (port {})", dst.port())
    };
    plain(
        StatusCode::FORBIDDEN,
        format!("agentmesh: inbound traffic to {name} is denied by the sidecar's inbound policy\n"),
    )
}

fn plain(status: StatusCode, text: String) -> Response<Body> {
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
