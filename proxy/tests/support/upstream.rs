//! Real upstream servers for tests, on hyper: an httpbin-like echo server with
//! behaviours chosen by path, and raw TCP servers that misbehave on purpose.
//!
//! Paths of [`TestUpstream`]:
//! - `/status/{code}`: answers that status.
//! - `/delay/{ms}`: waits, then answers 200.
//! - `/sse?n=N&interval_ms=M`: N server-sent events, M ms apart.
//! - `/flaky` with `x-fail-times: K` and `x-test-id: ID`: the first K requests of that
//!   id get 503, later ones 200.
//! - `/stream-echo`: streams the request body back frame by frame.
//! - `/ws`: WebSocket echo.
//! - anything else: 200 with a JSON echo of the request
//!   (`server`, `method`, `path`, `query`, `version`, `headers`, `body`).
//!
//! Every response carries `x-upstream: NAME`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, std::io::Error>;

/// One request the upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    pub headers: http::HeaderMap,
    pub version: http::Version,
}

/// A running test upstream.
#[derive(Clone)]
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub name: String,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    pub connections: Arc<AtomicUsize>,
    flaky: Arc<Mutex<HashMap<String, usize>>>,
}

impl TestUpstream {
    /// Starts a plain HTTP/1.1 + h2c upstream on 127.0.0.1:0.
    pub async fn start(name: &str) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = TestUpstream {
            addr: listener.local_addr().unwrap(),
            name: name.to_string(),
            requests: Arc::default(),
            connections: Arc::default(),
            flaky: Arc::default(),
        };
        let this = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                this.connections.fetch_add(1, Ordering::SeqCst);
                let this = this.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let this = this.clone();
                        async move { Ok::<_, Infallible>(this.handle(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        up
    }

    /// Number of requests received for `path` (exact path, without query).
    pub fn count(&self, path: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path_and_query.split('?').next() == Some(path))
            .count()
    }

    /// All requests received so far.
    pub fn received(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    async fn handle(&self, mut req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        self.requests.lock().unwrap().push(Recorded {
            method: req.method().to_string(),
            path_and_query: pq.clone(),
            headers: req.headers().clone(),
            version: req.version(),
        });
        let query: HashMap<String, String> = req
            .uri()
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let mut resp = if let Some(code) = path.strip_prefix("/status/") {
            let status = StatusCode::from_u16(code.parse().unwrap_or(500))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = Response::new(full(format!("status {code}")));
            *r.status_mut() = status;
            r
        } else if let Some(ms) = path.strip_prefix("/delay/") {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
            Response::new(full(format!("delayed {ms}ms")))
        } else if path == "/sse" {
            let n: usize = query.get("n").and_then(|v| v.parse().ok()).unwrap_or(3);
            let interval = Duration::from_millis(
                query
                    .get("interval_ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(200),
            );
            let stream = futures_util::stream::iter(0..n).then(move |i| async move {
                if i > 0 {
                    tokio::time::sleep(interval).await;
                }
                Ok::<_, std::io::Error>(Frame::data(Bytes::from(format!(
                    "id: {i}\ndata: event {i}\n\n"
                ))))
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            r
        } else if path == "/flaky" {
            let id = header(&req, "x-test-id").unwrap_or_default();
            let fail: usize = header(&req, "x-fail-times")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let seen = {
                let mut f = self.flaky.lock().unwrap();
                let e = f.entry(id).or_default();
                *e += 1;
                *e
            };
            let mut r = Response::new(full(format!("attempt {seen}")));
            if seen <= fail {
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            r
        } else if path == "/stream-echo" {
            let body = req.into_body().map_err(std::io::Error::other);
            BodyExt::boxed(body).pipe_into_response()
        } else if path == "/ws" {
            websocket_echo(&mut req)
        } else {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        serde_json::Value::String(v.to_str().unwrap_or("").to_string()),
                    )
                })
                .collect();
            let method = req.method().to_string();
            let version = format!("{:?}", req.version());
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let doc = serde_json::json!({
                "server": self.name, "method": method, "path": path, "query": query,
                "version": version, "headers": headers, "body": String::from_utf8_lossy(&body),
            });
            let mut r = Response::new(full(doc.to_string()));
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r
        };
        resp.headers_mut()
            .insert("x-upstream", self.name.parse().unwrap());
        resp
    }
}

trait IntoResponse {
    fn pipe_into_response(self) -> Response<Body>;
}

impl IntoResponse for Body {
    fn pipe_into_response(self) -> Response<Body> {
        Response::new(self)
    }
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|never| match never {}).boxed()
}

fn websocket_echo(req: &mut Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        let mut r = Response::new(full("not a websocket request"));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        use futures_util::SinkExt;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                if ws.send(msg).await.is_err() {
                    return;
                }
            } else if msg.is_close() {
                return;
            }
        }
    });
    let mut r = Response::new(full(""));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    r.headers_mut()
        .insert("upgrade", "websocket".parse().unwrap());
    r.headers_mut()
        .insert("connection", "upgrade".parse().unwrap());
    r.headers_mut()
        .insert("sec-websocket-accept", accept.parse().unwrap());
    r
}

/// A server that reads the request head and then resets the connection without answering.
pub async fn reset_before_response() -> SocketAddr {
    raw_server(|mut tcp| async move {
        read_head(&mut tcp).await;
        let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
        drop(tcp);
    })
    .await
}

/// A server that sends a response head promising 1000 bytes, sends 10, then resets.
pub async fn reset_mid_body() -> SocketAddr {
    raw_server(|mut tcp| async move {
        read_head(&mut tcp).await;
        let _ = tcp
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
            .await;
        let _ = tcp.flush().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
        drop(tcp);
    })
    .await
}

async fn read_head(tcp: &mut tokio::net::TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn raw_server<F, Fut>(f: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(f(tcp));
        }
    });
    addr
}
