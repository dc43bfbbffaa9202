//! The connections of one backend, kept for reuse: HTTP/1.1 connections each carry one
//! request at a time and wait in a list between requests; one HTTP/2 connection carries
//! every request at once.
//!
//! It sits on hyper's `client::conn` (one task per connection) and the backend's
//! [`Transport`]; everything about the request itself (its URI form, its Host) is the
//! caller's. There is one pool per backend and it always dials the backend's address, so
//! unlike a general-purpose client it needs no key: taking a connection is a lock and a
//! scan of a short list, with no hashing and no task per request.
//!
//! A sender goes back to the list as soon as the response head has arrived, while its
//! response body may still be streaming; [`take`](ConnPool::take) skips senders whose
//! connection is still busy and drops those whose connection has closed. Idle
//! connections are closed after [`POOL_IDLE_TIMEOUT`] by a small task that runs only
//! while some are kept: it looks at the list a few times per timeout and counts how many
//! looks in a row found each connection idle, so parking one reads no clock.
//!
//! Each serving thread ([`crate::workers`]) has a share of the pool of its own: a
//! connection is driven by a task on the thread that opened it, and only requests served
//! on that thread use it, so sending a request never wakes another thread.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::connector::{ConnectError, Transport};
use super::{
    HTTP2_KEEPALIVE_INTERVAL, HTTP2_KEEPALIVE_TIMEOUT, POOL_IDLE_TIMEOUT, POOL_MAX_IDLE_PER_HOST,
};
use crate::http::body::Body;

/// A sender for one request, on a pooled or a new connection.
pub(super) enum Sender {
    /// An HTTP/1.1 connection, given back with [`ConnPool::put`] once the response head
    /// is in.
    Http1(http1::SendRequest<Body>),
    /// A clone of the backend's shared HTTP/2 connection.
    Http2(http2::SendRequest<Body>),
}

/// A connection taken from the pool: `reused` when it carried requests before, so a
/// request it refused before sending anything may be tried again on another.
pub(super) struct Checkout {
    pub(super) sender: Sender,
    pub(super) reused: bool,
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub(super) enum CheckoutError {
    /// Resolution, TCP or TLS failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The HTTP/2 handshake failed on a new connection.
    #[error("http/2 handshake")]
    Handshake(#[source] hyper::Error),
}

/// An HTTP/1.1 sender between requests.
struct Parked {
    sender: http1::SendRequest<Body>,
    /// How many of the reaper's looks in a row found it idle since it was parked.
    idle_looks: u32,
}

struct State {
    /// HTTP/1.1 senders, most recently parked last.
    http1: Vec<Parked>,
    /// The shared HTTP/2 connection, once one is open.
    http2: Option<http2::SendRequest<Body>>,
    /// Whether the idle reaper task is running.
    reaping: bool,
}

/// One serving thread's share of a backend's connections.
struct Shard {
    state: Mutex<State>,
    /// Serializes opening the shared HTTP/2 connection, so a burst of first requests
    /// opens one connection, not one each.
    http2_connecting: tokio::sync::Mutex<()>,
}

impl Shard {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The connection pool of one backend.
pub(super) struct ConnPool {
    transport: Arc<Transport>,
    /// HTTP/2 with prior knowledge on every connection (else HTTP/1.1, or HTTP/2 when TLS
    /// ALPN picks it).
    http2_only: bool,
    /// One share per serving thread, indexed by [`crate::workers::current`].
    shards: Box<[Shard]>,
}

impl ConnPool {
    pub(super) fn new(transport: Transport, http2_only: bool) -> Arc<Self> {
        Arc::new(ConnPool {
            transport: Arc::new(transport),
            http2_only,
            shards: (0..crate::workers::count())
                .map(|_| Shard {
                    state: Mutex::new(State {
                        http1: Vec::new(),
                        http2: None,
                        reaping: false,
                    }),
                    http2_connecting: tokio::sync::Mutex::new(()),
                })
                .collect(),
        })
    }

    /// The calling thread's share.
    fn shard(&self) -> (usize, &Shard) {
        // Modulo: a thread that is not a worker is worker 0, and a pool built before the
        // workers started has one share.
        let i = crate::workers::current() % self.shards.len();
        (i, &self.shards[i])
    }

    /// The calling thread's connections.
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shard().1.lock()
    }

    /// A sender ready for a request: the open HTTP/2 connection, else the most recently
    /// used idle HTTP/1.1 connection, else a new connection.
    pub(super) async fn take(self: &Arc<Self>) -> Result<Checkout, CheckoutError> {
        if let Some(checkout) = self.take_pooled() {
            return Ok(checkout);
        }
        if self.http2_only {
            let _one_at_a_time = self.shard().1.http2_connecting.lock().await;
            // Someone else may have opened it while this one waited.
            if let Some(checkout) = self.take_pooled() {
                return Ok(checkout);
            }
            return Box::pin(self.connect()).await;
        }
        // Boxed: connecting is rare, and its future (TCP, TLS, handshakes) is large; it
        // would otherwise make every request's future large, and costly to move.
        Box::pin(self.connect()).await
    }

    /// A pooled sender ready for a request, if there is one: what [`ConnPool::take`]
    /// tries first, callable without making its future (the common case).
    pub(super) fn take_pooled(&self) -> Option<Checkout> {
        let mut state = self.state();
        if let Some(h2) = &state.http2 {
            if !h2.is_closed() {
                return Some(Checkout {
                    sender: Sender::Http2(h2.clone()),
                    reused: true,
                });
            }
            state.http2 = None;
        }
        // Newest first: the warmest connection, and the one least likely to have been
        // closed by the server's idle timeout.
        let mut i = state.http1.len();
        while i > 0 {
            i -= 1;
            let parked = &state.http1[i];
            if parked.sender.is_closed() {
                state.http1.swap_remove(i);
            } else if parked.sender.is_ready() {
                let parked = state.http1.swap_remove(i);
                return Some(Checkout {
                    sender: Sender::Http1(parked.sender),
                    reused: true,
                });
            }
            // Otherwise still busy with a response body: left for later.
        }
        None
    }

    /// Opens a connection and runs the HTTP handshake; the connection is served by a
    /// task of its own until it closes.
    async fn connect(self: &Arc<Self>) -> Result<Checkout, CheckoutError> {
        let conn = self.transport.connect().await?;
        let h2 = self.http2_only || conn.negotiated_h2();
        let io = TokioIo::new(conn);
        if h2 {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
                .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT)
                .handshake(io)
                .await
                .map_err(CheckoutError::Handshake)?;
            let backend = self.transport.backend.clone();
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!(%backend, error = %err, "upstream http/2 connection ended with an error");
                }
            });
            self.state().http2 = Some(sender.clone());
            return Ok(Checkout {
                sender: Sender::Http2(sender),
                reused: false,
            });
        }
        // The HTTP/1.1 handshake only sets up state: it does no I/O and cannot fail on a
        // healthy socket; a failure is still reported as a connect error.
        let (sender, connection) = http1::handshake(io)
            .await
            .map_err(CheckoutError::Handshake)?;
        let backend = self.transport.backend.clone();
        tokio::spawn(async move {
            if let Err(err) = connection.with_upgrades().await {
                tracing::debug!(%backend, error = %err, "upstream connection ended with an error");
            }
        });
        Ok(Checkout {
            sender: Sender::Http1(sender),
            reused: false,
        })
    }

    /// Gives an HTTP/1.1 sender back once its response head has arrived. Its connection
    /// becomes ready again when the response body has been read.
    pub(super) fn put(self: &Arc<Self>, sender: http1::SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let (shard, share) = self.shard();
        let mut state = share.lock();
        if state.http1.len() >= POOL_MAX_IDLE_PER_HOST {
            // Full: the oldest goes (it finishes any response it is carrying first).
            state.http1.remove(0);
        }
        state.http1.push(Parked {
            sender,
            idle_looks: 0,
        });
        if !state.reaping {
            state.reaping = true;
            tokio::spawn(reap(Arc::downgrade(self), shard, POOL_IDLE_TIMEOUT));
        }
    }

    /// How many HTTP/1.1 connections are parked (busy or idle).
    #[cfg(test)]
    pub(super) fn parked(&self) -> usize {
        self.state().http1.len()
    }

    /// Whether a parked HTTP/1.1 connection is ready for a request.
    #[cfg(test)]
    pub(super) fn has_ready(&self) -> bool {
        self.state().http1.iter().any(|p| p.sender.is_ready())
    }
}

/// How many times per idle timeout the reaper looks at the pool.
const REAP_LOOKS_PER_TIMEOUT: u32 = 4;

/// Closes connections idle for longer than `idle_timeout`, looking a few times per
/// timeout; stops when the pool is gone or keeps no HTTP/1.1 connection.
///
/// A connection is closed at the look that finds it idle for the
/// `REAP_LOOKS_PER_TIMEOUT + 1`th time in a row: it went idle before the first of those
/// looks, so it has been idle for at least `idle_timeout` (and less than a period more).
async fn reap(pool: Weak<ConnPool>, shard: usize, idle_timeout: Duration) {
    let period = idle_timeout / REAP_LOOKS_PER_TIMEOUT;
    loop {
        tokio::time::sleep(period).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let mut state = pool.shards[shard].lock();
        state.http1.retain_mut(|parked| {
            if parked.sender.is_closed() {
                return false;
            }
            if !parked.sender.is_ready() {
                // Busy: its idle time starts when it is done.
                parked.idle_looks = 0;
                return true;
            }
            parked.idle_looks += 1;
            parked.idle_looks <= REAP_LOOKS_PER_TIMEOUT
        });
        if state.http1.is_empty() {
            state.reaping = false;
            return;
        }
    }
}
