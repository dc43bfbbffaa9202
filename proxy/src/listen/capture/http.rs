//! Captured HTTP: each request either goes through the ordinary pipeline (when an
//! outbound bind serves its original destination and one of the bind's listeners its
//! Host), or follows the egress rules and the outbound default: forwarded unchanged to
//! the original destination, or refused with a 403 naming it.
//!
//! The decision is made per request, not per connection, because one keep-alive
//! connection to `10.0.0.5:8080` may carry requests for several virtual hosts.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use agentmesh_proto::config::v1::{HostBackend, UpstreamProtocol};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::config::Store;
use crate::config::ir::{Backend, BackendKind, Policies};
use crate::config::sidecar::OutboundAction;
use crate::http::body::{self, Body};
use crate::http::forward::{self, Head, Outbound, OutboundBody};
use crate::http::route::request_host;
use crate::http::service::{ConnContext, HttpService};
use crate::http::upstream::{ConnectionObserver, UpstreamClient};
use crate::telemetry::metrics::{Metrics, RequestLabels};
use crate::telemetry::sidecar::CapturedProtocol;

/// The backend name of traffic forwarded to its original destination, in metrics and
/// errors. One name for every destination keeps the number of series bounded.
pub const PASSTHROUGH_BACKEND: &str = "passthrough";
/// Destinations whose pooled client is kept; past this the cache starts over.
const MAX_PASSTHROUGH_CLIENTS: usize = 1024;

/// Pooled clients to original destinations, one per destination and HTTP version, made
/// on first use and kept so keep-alive connections are reused.
pub struct PassthroughBackends {
    clients: Mutex<HashMap<(SocketAddr, bool), Arc<Backend>>>,
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

    /// The backend forwarding to `dst`, speaking HTTP/2 when `h2` (the client did).
    fn get(&self, dst: SocketAddr, h2: bool) -> Result<Arc<Backend>, String> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = clients.get(&(dst, h2)) {
            return Ok(b.clone());
        }
        let protocol = if h2 {
            UpstreamProtocol::Http2
        } else {
            UpstreamProtocol::Auto
        };
        let spec = HostBackend {
            address: dst.to_string(),
            protocol: protocol as i32,
            tls: None,
        };
        let client = UpstreamClient::new(PASSTHROUGH_BACKEND, &spec, self.observer.clone())
            .map_err(|e| e.to_string())?;
        let backend = Arc::new(Backend {
            key: PASSTHROUGH_BACKEND.into(),
            kind: BackendKind::Host(Arc::new(client)),
        });
        if clients.len() >= MAX_PASSTHROUGH_CLIENTS {
            clients.clear();
        }
        clients.insert((dst, h2), backend.clone());
        Ok(backend)
    }
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
    /// Whether the client speaks HTTP/2.
    pub h2: bool,
    /// Clients to original destinations.
    pub passthrough: Arc<PassthroughBackends>,
}

impl CapturedHttp {
    /// Serves one request.
    pub async fn handle(self, req: Request<Incoming>) -> Response<Body> {
        let config = self.store.load();
        let host = request_host(req.uri(), req.headers()).map(|h| h.into_owned());
        if let Some(bind) = config.sidecar.outbound_bind(&config, self.dst)
            && bind.listener_for(host.as_deref()).is_some()
        {
            let mut conn = self.conn.clone();
            conn.bind_key = bind.key.as_str().into();
            drop(config);
            return HttpService::new(self.store, self.metrics, conn)
                .handle(req)
                .await;
        }
        let verdict = config.sidecar.decide(host.as_deref(), self.dst);
        drop(config);
        let start = Instant::now();
        let method = req.method().clone();
        let protocol = if self.h2 {
            CapturedProtocol::Http2
        } else {
            CapturedProtocol::Http1
        };
        let host = host.unwrap_or_default();
        let (response, backend) = match verdict.action {
            OutboundAction::Deny => {
                self.metrics.sidecar.denied(protocol);
                tracing::warn!(
                    dst = %self.dst,
                    host = %host,
                    rule = verdict.rule.as_deref().unwrap_or("outbound default"),
                    peer = %self.conn.peer,
                    "outbound HTTP request denied"
                );
                (deny(&host, self.dst), "")
            }
            OutboundAction::Allow => (self.pass_through(req).await, PASSTHROUGH_BACKEND),
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

    /// Forwards the request, unchanged but for hop-by-hop headers, to the original
    /// destination on a pooled connection.
    async fn pass_through(&self, req: Request<Incoming>) -> Response<Body> {
        let backend = match self.passthrough.get(self.dst, self.h2) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(dst = %self.dst, error = %e, "cannot make a client for the original destination");
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
            Err(e) => {
                tracing::debug!(dst = %self.dst, error = %e, "passthrough request failed");
                e.to_response()
            }
        }
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

fn plain(status: StatusCode, text: String) -> Response<Body> {
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
