//! Clients of the proxy's own readiness and admin endpoints, for Kubernetes lifecycle
//! hooks of a classic (non-native) sidecar: `agentmesh-proxy wait` (postStart: block
//! until the proxy reports ready, so the kubelet starts the app containers only then)
//! and `agentmesh-proxy drain` (preStop: report not ready, then keep serving for a grace
//! period so the app's last calls during its own shutdown still go through).
//!
//! The proxy image has no shell or curl, so the hooks run the proxy binary itself. Plain
//! blocking HTTP/1.1 over loopback: these run once per pod start or stop, and must not
//! need a runtime or the proxy's config. This module must not start any server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How often `wait` asks again.
const POLL: Duration = Duration::from_millis(100);
/// How long one request may take (connect, send, answer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a hook failed, in words for the kubelet's event (a hook's output is shown there).
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The proxy did not report ready within the time allowed.
    #[error("the proxy at {addr} was not ready after {waited:?}: {last}")]
    NotReady {
        /// The readiness address asked.
        addr: SocketAddr,
        /// How long `wait` waited.
        waited: Duration,
        /// The last answer, or the last connection error.
        last: String,
    },
    /// The admin API did not accept the drain.
    #[error("POST /drain on the admin API at {addr}: {reason}")]
    Drain {
        /// The admin address asked.
        addr: SocketAddr,
        /// The answer or the error.
        reason: String,
    },
}

/// Polls `GET /healthz/ready` on `addr` until it answers 200, for at most `timeout`.
pub fn wait_ready(addr: SocketAddr, timeout: Duration) -> Result<(), HookError> {
    let start = Instant::now();
    loop {
        let last = match request(addr, "GET", "/healthz/ready") {
            Ok((200, _)) => return Ok(()),
            Ok((status, body)) => format!("{status} {}", body.trim()),
            Err(e) => e.to_string(),
        };
        if start.elapsed() >= timeout {
            return Err(HookError::NotReady {
                addr,
                waited: start.elapsed(),
                last,
            });
        }
        std::thread::sleep(POLL.min(timeout.saturating_sub(start.elapsed())));
    }
}

/// Asks the admin API on `addr` to drain (`POST /drain`: readiness reports not ready
/// from now on), then keeps the proxy serving for `grace` before returning, since the
/// kubelet stops the proxy as soon as its preStop hook returns.
pub fn drain(addr: SocketAddr, grace: Duration) -> Result<(), HookError> {
    match request(addr, "POST", "/drain") {
        Ok((200, _)) => {}
        Ok((status, body)) => {
            return Err(HookError::Drain {
                addr,
                reason: format!("answered {status} {}", body.trim()),
            });
        }
        Err(e) => {
            return Err(HookError::Drain {
                addr,
                reason: e.to_string(),
            });
        }
    }
    std::thread::sleep(grace);
    Ok(())
}

/// One HTTP/1.1 request with `Connection: close`; the status and the body as text.
fn request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    // One write: the request in one segment.
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "not an HTTP answer: {:?}",
                    head.lines().next().unwrap_or("")
                ),
            )
        })?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    /// A loopback server answering each connection with `answer(n)` for the n-th
    /// request (from 0), recording each request line.
    fn server(
        answer: impl Fn(usize) -> &'static str + Send + 'static,
    ) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let count = AtomicUsize::new(0);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                // The whole head, so closing leaves nothing unread (which would reset).
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).to_string();
                seen2
                    .lock()
                    .expect("lock")
                    .push(text.lines().next().unwrap_or("").to_string());
                let body = answer(count.fetch_add(1, Ordering::SeqCst));
                let _ = stream.write_all(body.as_bytes());
            }
        });
        (addr, seen)
    }

    #[test]
    fn wait_returns_once_readiness_answers_200() {
        let (addr, seen) = server(|n| {
            if n < 3 {
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 25\r\n\r\nnot ready: no config yet\n"
            } else {
                "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nready\n"
            }
        });
        wait_ready(addr, Duration::from_secs(10)).expect("ready");
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 4);
        assert!(seen.iter().all(|l| l == "GET /healthz/ready HTTP/1.1"));
    }

    #[test]
    fn wait_gives_up_with_the_last_reason() {
        let (addr, _) = server(
            |_| "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 25\r\n\r\nnot ready: no config yet\n",
        );
        let err = wait_ready(addr, Duration::from_millis(300)).expect_err("never ready");
        let text = err.to_string();
        assert!(
            text.contains("was not ready after") && text.contains("503 not ready: no config yet"),
            "{text}"
        );
    }

    #[test]
    fn wait_reports_a_proxy_that_is_not_listening() {
        // A port nothing listens on: bind, note it, close.
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port");
        let err = wait_ready(addr, Duration::from_millis(200)).expect_err("nobody there");
        assert!(err.to_string().contains("refused"), "{err}");
    }

    #[test]
    fn drain_posts_and_keeps_serving_for_the_grace_period() {
        let (addr, seen) = server(|_| "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\ndraining\n");
        let start = Instant::now();
        drain(addr, Duration::from_millis(300)).expect("drained");
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert_eq!(*seen.lock().expect("lock"), ["POST /drain HTTP/1.1"]);
    }

    #[test]
    fn drain_refused_by_the_admin_api_is_an_error() {
        let (addr, _) =
            server(|_| "HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n\r\nnot found\n");
        let err = drain(addr, Duration::ZERO).expect_err("refused");
        assert!(err.to_string().contains("answered 404 not found"), "{err}");
    }
}
