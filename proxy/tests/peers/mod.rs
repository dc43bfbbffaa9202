//! Test peers that `support` does not offer, shared by `policies.rs` and `bad_input.rs`:
//! an upstream that records request bodies (and fails the first requests on demand), a
//! client that streams a request body of unknown length (chunked), and a response reader
//! that reports a body which fails mid-way instead of hiding it.
//!
//! Like `support`, everything here talks only to 127.0.0.1.
#![allow(dead_code, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// An upstream that records every request body it receives. The first `fail_first`
/// requests are answered 503 (after reading the whole body); later ones 200 with the body
/// echoed back.
#[derive(Clone)]
pub struct BodyRecorder {
    pub addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Bytes>>>,
    seen: Arc<AtomicUsize>,
}

impl BodyRecorder {
    /// Starts the recorder on 127.0.0.1:0.
    pub async fn start(fail_first: usize) -> BodyRecorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rec = BodyRecorder {
            addr: listener.local_addr().unwrap(),
            bodies: Arc::default(),
            seen: Arc::default(),
        };
        let this = rec.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let this = this.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let this = this.clone();
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            this.bodies.lock().unwrap().push(body.clone());
                            let n = this.seen.fetch_add(1, Ordering::SeqCst) + 1;
                            let mut resp = Response::new(Full::new(body));
                            if n <= fail_first {
                                *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        rec
    }

    /// The bodies received so far, in arrival order.
    pub fn bodies(&self) -> Vec<Bytes> {
        self.bodies.lock().unwrap().clone()
    }
}

/// A request body that hyper cannot size in advance, so it goes out chunked.
pub type StreamingBody = BoxBody<Bytes, Infallible>;

/// A body of `chunks` chunks of `chunk_len` bytes each, without a known length.
pub fn chunked(chunks: usize, chunk_len: usize) -> StreamingBody {
    let frames = (0..chunks).map(move |i| {
        let byte = b'a' + (i % 26) as u8;
        Ok::<_, Infallible>(Frame::data(Bytes::from(vec![byte; chunk_len])))
    });
    BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames)))
}

/// The status of a response and the outcome of reading its body: the bytes, or the
/// error the body failed with (a connection cut mid-response).
pub struct Outcome {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Result<Bytes, String>,
}

/// Sends a request with a streaming body over a fresh HTTP/1.1 client.
pub async fn send_streaming(req: Request<StreamingBody>) -> Result<Outcome, String> {
    let client: Client<_, StreamingBody> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    Ok(read(resp).await)
}

/// Sends a request (with a sized body) and reads the body, keeping a body error.
pub async fn send_checked(req: Request<Full<Bytes>>) -> Result<Outcome, String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    Ok(read(resp).await)
}

async fn read(resp: Response<Incoming>) -> Outcome {
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| format!("{e:?}"));
    Outcome {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// An address where nothing listens, kept that way while the returned socket lives: the
/// port is bound (so no other test can take it) but not listening, so connects are refused.
pub fn dead_addr() -> (socket2::Socket, SocketAddr) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    (socket, addr)
}

/// Starts the proxy with the config `yaml(port)` on a free port and waits until it is
/// ready. `support::free_port` releases the port before the proxy binds it, so a test
/// running in parallel can take it first; when the proxy exits for that reason, this
/// tries again on other ports (at most 5 times) instead of failing the test.
pub fn start_proxy(yaml: impl Fn(u16) -> String) -> (crate::support::Proxy, u16) {
    use crate::support::{Proxy, client, free_port};
    use std::time::{Duration, Instant};
    for _ in 0..5 {
        let port = free_port();
        let proxy = Proxy::spawn(&yaml(port), &[]);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if proxy.try_exited().is_some() {
                let logs = proxy.logs();
                assert!(
                    logs.contains("Address already in use"),
                    "proxy exited before ready; log:\n{logs}"
                );
                break;
            }
            if client::blocking_get(proxy.ready, "/healthz/ready").is_some_and(|(s, _)| s == 200) {
                return (proxy, port);
            }
            assert!(
                Instant::now() < deadline,
                "proxy not ready after 20s; log:\n{}",
                proxy.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("no free port for the proxy after 5 tries");
}
