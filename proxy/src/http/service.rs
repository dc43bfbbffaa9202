//! The request pipeline: one function from a client request to the response.
//!
//! Order (DESIGN.md "Request pipeline order"): pick listener and route → choose the
//! backend → CORS → request header changes → redirect → URL rewrite → direct response →
//! backend handler (for `host` backends: forward with timeouts, retries and mirror) →
//! response header changes and CORS headers. Authentication, authorization and rate
//! limits slot in before the header changes; protocol handlers (MCP, A2A, LLM) are
//! backend kinds dispatched in `call_backend`. Every request is counted once, at the end.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use rand::Rng;

use crate::config::Store;
use crate::config::ir::{Backend, BackendKind, Config, Policies, Route, RouteBackend};
use crate::http::body::{self, Body};
use crate::http::error::ProxyError;
use crate::http::filters;
use crate::http::forward::{self, Head, Outbound, OutboundBody};
use crate::http::limit::{Exceeded, LimitedBody};
use crate::http::route::{RequestView, request_host};
use crate::http::upstream::UpstreamError;
use crate::telemetry::metrics::{Metrics, RequestLabels, RequestSeriesCache};

/// What the listener layer knows about a connection.
#[derive(Debug, Clone)]
pub struct ConnContext {
    /// Key of the bind that accepted it.
    pub bind_key: Arc<str>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether TLS was terminated.
    pub tls: bool,
    /// SNI the client sent, if TLS.
    pub sni: Option<String>,
    /// The original destination of a connection captured in sidecar mode.
    pub orig_dst: Option<SocketAddr>,
}

/// Where a captured request was going before the sidecar caught it. A route of a
/// capture bind (`SidecarSettings.outbound_binds`, `inbound_binds`) without backends
/// applies its policies and then sends the request there.
pub trait OriginalDestination: Send + Sync {
    /// The backend reaching the original destination, made on first use.
    fn backend(&self) -> Result<Arc<Backend>, UpstreamError>;
}

/// The per-connection HTTP service: reads the current config for every request.
#[derive(Clone)]
pub struct HttpService {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    conn: Arc<PerConnection>,
    original_destination: Option<Arc<dyn OriginalDestination>>,
}

/// What the service keeps for the whole client connection, computed once.
struct PerConnection {
    ctx: ConnContext,
    /// The client's IP address, as appended to `x-forwarded-for`.
    peer_ip: HeaderValue,
    /// The series the connection's last request was counted in.
    series: RequestSeriesCache,
}

impl std::ops::Deref for PerConnection {
    type Target = ConnContext;

    fn deref(&self) -> &ConnContext {
        &self.ctx
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

impl HttpService {
    /// A service for one accepted connection.
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>, conn: ConnContext) -> Self {
        // An IP address is always a valid header value.
        let peer_ip = HeaderValue::try_from(conn.peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        HttpService {
            store,
            metrics,
            conn: Arc::new(PerConnection {
                ctx: conn,
                peer_ip,
                series: RequestSeriesCache::default(),
            }),
            original_destination: None,
        }
    }

    /// Sends requests whose route has no backends to `dst` (captured traffic only;
    /// elsewhere such a route must answer the request itself).
    pub fn with_original_destination(mut self, dst: Arc<dyn OriginalDestination>) -> Self {
        self.original_destination = Some(dst);
        self
    }

    /// Serves one request.
    pub async fn handle(self, req: Request<Incoming>) -> Response<Body> {
        match self.serve(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }

    /// [`HttpService::handle`] in the shape hyper's `Service` returns: the future hyper
    /// boxes is this one, not another `async` block around it (one level of nesting,
    /// and one copy of the whole future, fewer per request).
    async fn serve(self, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let start = Instant::now();
        let config = self.store.load();
        let method = req.method().clone();
        let mut tags = Tags::default();
        let result = self.route_and_serve(&config, req, &mut tags).await;
        let response = match result {
            Ok(resp) => resp,
            Err(e) => {
                self.metrics.record_request_error(
                    &tags.listener,
                    &tags.route,
                    &tags.backend,
                    e.reason(),
                );
                if e.status().is_server_error() {
                    tracing::warn!(listener = %tags.listener, route = %tags.route, backend = %tags.backend, error = %e, "request failed");
                } else {
                    tracing::debug!(listener = %tags.listener, route = %tags.route, error = %e, "request refused");
                }
                let mut resp = e.to_response();
                if let Some(p) = &tags.policies {
                    finish_response(p, tags.origin.as_ref(), &mut resp);
                }
                resp
            }
        };
        let labels = RequestLabels {
            listener: tags.listener,
            route: tags.route,
            backend: tags.backend,
            method,
            status: response.status().as_u16(),
        };
        self.conn
            .series
            .record(&self.metrics, labels, start.elapsed());
        Ok(response)
    }

    async fn route_and_serve(
        &self,
        config: &Arc<Config>,
        mut req: Request<Incoming>,
        tags: &mut Tags,
    ) -> Result<Response<Body>, ProxyError> {
        // Route (and forward) the path the backend will resolve, so `/public/../admin`
        // cannot slip past a rule for `/admin`.
        if let Some(normalized) = filters::normalize_uri(req.uri()) {
            *req.uri_mut() = normalized;
        }
        let host = request_host(req.uri(), req.headers());
        let host = host.as_deref();
        let bind = config.bind(&self.conn.bind_key).ok_or_else(|| {
            ProxyError::NoRoute(format!(
                "bind {:?} is no longer configured",
                self.conn.bind_key
            ))
        })?;
        let listener = bind
            .listener_for(host.or(self.conn.sni.as_deref()))
            .ok_or_else(|| {
                ProxyError::NoRoute(format!(
                    "no route matched {} {}{}: no listener on bind {:?} serves host {:?}",
                    req.method(),
                    host.unwrap_or(""),
                    req.uri().path(),
                    bind.key,
                    host.unwrap_or("")
                ))
            })?;
        tags.listener = listener.key.clone();
        let view = RequestView::new(host, req.uri(), req.method(), req.headers());
        let Some(hit) = listener.routes.find(&view) else {
            return Err(ProxyError::NoRoute(format!(
                "no route matched {} {}{} on listener {:?}",
                req.method(),
                host.unwrap_or(""),
                req.uri().path(),
                listener.key
            )));
        };
        let route = hit.route.clone();
        let matched_prefix = hit.matcher.path.matched_prefix();
        tags.route = route.key.clone();
        let chosen = choose_backend(&route);
        let policies = chosen.map_or(&route.policies, |b| &b.policies).clone();
        if let Some(b) = chosen {
            tags.backend = b.backend.key.clone();
        }
        // Only CORS reads the origin.
        if policies.cors.is_some() {
            tags.origin = req.headers().get(header::ORIGIN).cloned();
        }
        tags.policies = Some(policies.clone());

        if let Some(cors) = &policies.cors
            && let Some(mut resp) = cors.preflight(&req)
        {
            apply_response_headers(&policies, &mut resp);
            return Ok(resp);
        }

        let max_body = config.settings.max_request_body_bytes;
        if req.body().size_hint().exact().is_some_and(|n| n > max_body)
            || content_length(&req).is_some_and(|n| n > max_body)
        {
            return Err(ProxyError::BodyTooLarge { limit: max_body });
        }

        let upgrade = forward::wants_upgrade(&req);
        // The host borrows from the request; keep a copy only where a redirect needs it.
        let redirect_host = policies.redirect.as_ref().and(host).map(str::to_owned);
        let (mut parts, incoming) = req.into_parts();
        // Forward the host that routing used: a URI authority (HTTP/2 `:authority`,
        // absolute-form) wins over a Host header that disagrees (RFC 9112 §3.2.2).
        if let Some(a) = parts.uri.authority()
            && let Some(host_port) = a.as_str().rsplit('@').next()
            && let Ok(v) = HeaderValue::from_str(host_port)
        {
            parts.headers.insert(header::HOST, v);
        }
        if let Some(mods) = &policies.request_headers {
            filters::apply_header_mods(mods, &mut parts.headers);
        }
        if let Some(r) = &policies.redirect {
            let mut resp = filters::redirect(
                r,
                &parts.uri,
                redirect_host.as_deref(),
                filters::request_port(&parts.uri, &parts.headers),
                self.conn.tls,
                matched_prefix,
            );
            finish_response(&policies, tags.origin.as_ref(), &mut resp);
            return Ok(resp);
        }
        if let Some(rw) = &policies.url_rewrite {
            filters::rewrite(rw, &mut parts.uri, &mut parts.headers, matched_prefix);
        }
        if let Some(d) = &policies.direct_response {
            let mut resp = filters::direct_response(d);
            finish_response(&policies, tags.origin.as_ref(), &mut resp);
            return Ok(resp);
        }
        let original;
        let backend = match (chosen, &self.original_destination) {
            (Some(chosen), _) => &chosen.backend,
            (None, Some(dst)) => {
                original = dst.backend()?;
                tags.backend = original.key.clone();
                &original
            }
            (None, None) => {
                return Err(ProxyError::NoRoute(format!(
                    "route {:?} has no backend to send to",
                    route.key
                )));
            }
        };

        let on_upgrade = if upgrade {
            parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
        } else {
            None
        };
        forward::strip_hop_by_hop(&mut parts.headers, upgrade);
        add_forwarded_headers(&mut parts.headers, &self.conn);
        // The authority first: an origin-form request (most of HTTP/1.1) skips the lookup.
        if let Some(a) = parts.uri.authority()
            && !parts.headers.contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(a.as_str())
        {
            parts.headers.insert(header::HOST, v);
        }
        let head = Head {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
        };

        let replay_limit = config.settings.max_replay_body_bytes as u64;
        let (outbound, exceeded) = if incoming.is_end_stream() {
            // Already over (most GETs): nothing to read or limit, so no wrapper and no
            // flag; a mirror gets the same empty body as after reading it.
            let empty = if policies.mirror.is_some() {
                OutboundBody::Replayable(Bytes::new())
            } else {
                OutboundBody::Streaming(body::empty())
            };
            (empty, None)
        } else {
            let (limited, exceeded) = LimitedBody::new(incoming, max_body);
            // A mirror sends its copy alongside the first attempt, so it needs the body
            // read first (small, known-length bodies only). Retries replay without reading
            // first.
            let outbound = if policies.mirror.is_some()
                && limited
                    .size_hint()
                    .upper()
                    .is_some_and(|n| n <= replay_limit)
            {
                match limited.collect().await {
                    Ok(collected) => OutboundBody::Replayable(collected.to_bytes()),
                    Err(e) if exceeded.get() => {
                        tracing::debug!(error = %e, "request body over the limit");
                        return Err(ProxyError::BodyTooLarge { limit: max_body });
                    }
                    Err(e) => {
                        return Err(ProxyError::BadRequest(format!(
                            "reading the request body failed: {e}"
                        )));
                    }
                }
            } else {
                OutboundBody::Streaming(body::boxed(limited))
            };
            (outbound, Some(exceeded))
        };

        let request_timeout = policies.timeouts.and_then(|t| t.request);
        let outbound = Outbound {
            head,
            body: outbound,
            upgrade: on_upgrade,
            replay_limit: config.settings.max_replay_body_bytes,
        };
        let call = self.call_backend(backend, outbound, &policies, tags);
        let result = match request_timeout {
            Some(limit) => tokio::time::timeout(limit, call)
                .await
                .map_err(|_| ProxyError::RequestTimeout(limit))?,
            None => call.await,
        };
        let over_limit = exceeded.as_ref().is_some_and(Exceeded::get);
        let mut resp = match result {
            Err(_) if over_limit => return Err(ProxyError::BodyTooLarge { limit: max_body }),
            other => other?,
        };
        finish_response(&policies, tags.origin.as_ref(), &mut resp);
        Ok(resp)
    }

    /// Dispatches to the handler of the backend's kind. `tags` label a failure of the
    /// response body, which happens after this request has been counted.
    async fn call_backend(
        &self,
        backend: &Backend,
        outbound: Outbound,
        policies: &Policies,
        tags: &Tags,
    ) -> Result<Response<Body>, ProxyError> {
        if let BackendKind::Mcp(mcp) = &backend.kind {
            // Boxed: the MCP handler's future is large, and inline it would make every
            // request's future as large, to be moved when the request starts.
            return Box::pin(crate::mcp::serve(mcp, outbound, policies, &self.metrics)).await;
        }
        let resp = forward::forward(backend, outbound, policies, &self.metrics).await?;
        let (mut parts, incoming) = resp.into_parts();
        if parts.status != StatusCode::SWITCHING_PROTOCOLS {
            forward::strip_hop_by_hop(&mut parts.headers, false);
        }
        let metrics = self.metrics.clone();
        let backend_key = backend.key.clone();
        let (listener, route) = (tags.listener.clone(), tags.route.clone());
        let body = incoming.map_err(move |e| {
            // The backend failed mid-response: the client sees a truncated body.
            metrics.record_request_error(
                &listener,
                &route,
                &backend_key,
                crate::telemetry::metrics::ErrorReason::UpstreamReset,
            );
            tracing::warn!(backend = %backend_key, error = %e, "backend response body failed");
            Box::new(e) as crate::BoxError
        });
        Ok(Response::from_parts(parts, body::boxed(body)))
    }
}

impl hyper::service::Service<Request<Incoming>> for HttpService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        Box::pin(self.clone().serve(req))
    }
}

/// Labels and state gathered while a request goes through the pipeline.
#[derive(Default)]
struct Tags {
    listener: Arc<str>,
    route: Arc<str>,
    backend: Arc<str>,
    origin: Option<HeaderValue>,
    policies: Option<Arc<Policies>>,
}

fn content_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Picks a backend by weight.
fn choose_backend(route: &Route) -> Option<&RouteBackend> {
    match route.backends.as_slice() {
        [] => None,
        [only] => Some(only),
        many => {
            let total: u64 = many.iter().map(|b| u64::from(b.weight)).sum();
            let mut pick = rand::rng().random_range(0..total);
            many.iter().find(|b| {
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
}

fn apply_response_headers(policies: &Policies, resp: &mut Response<Body>) {
    if let Some(mods) = &policies.response_headers {
        filters::apply_header_mods(mods, resp.headers_mut());
    }
}

fn finish_response(policies: &Policies, origin: Option<&HeaderValue>, resp: &mut Response<Body>) {
    apply_response_headers(policies, resp);
    if let Some(cors) = &policies.cors {
        cors.decorate(origin, resp.headers_mut());
    }
}

fn add_forwarded_headers(headers: &mut http::HeaderMap, conn: &PerConnection) {
    match headers.entry(&X_FORWARDED_FOR) {
        header::Entry::Vacant(e) => {
            e.insert(conn.peer_ip.clone());
        }
        header::Entry::Occupied(mut e) => {
            let joined = e.get().to_str().ok().and_then(|prev| {
                let ip = conn.peer_ip.to_str().ok()?;
                HeaderValue::try_from(format!("{prev}, {ip}")).ok()
            });
            // Our address goes after the first line (others are dropped); a first line
            // that is not text is replaced by our address alone.
            e.insert(joined.unwrap_or_else(|| conn.peer_ip.clone()));
        }
    }
    if let header::Entry::Vacant(e) = headers.entry(&X_FORWARDED_PROTO) {
        e.insert(HeaderValue::from_static(if conn.tls {
            "https"
        } else {
            "http"
        }));
    }
}
