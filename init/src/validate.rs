//! `agentmesh-init validate`: proves that outbound redirection works, end to end.
//!
//! Per family, it listens on the loopback outbound port, connects to an address that
//! nothing answers on (198.18.255.254:80 by default), and expects the token its listener
//! sends: only a redirect can have delivered the connection to the listener. It must run
//! as a UID the rules capture (the init container's, never the proxy's 1501), and it
//! never changes any rule.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::identity::effective_ids;
use crate::net::Family;
use crate::settings::{Ipv6Mode, Settings, ValidateSettings};

/// Why a family's validation failed.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// The listener could not bind the port.
    #[error(
        "{family}: cannot listen on {addr}: {source} (is the proxy already running? \
         use --validation-port with rules redirecting to it)"
    )]
    Bind {
        /// The family.
        family: Family,
        /// The listen address.
        addr: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
    /// The connection to the target did not reach our listener.
    #[error("{family}: connection to {target} was not redirected to {listen}: {reason}{note}")]
    NotRedirected {
        /// The family.
        family: Family,
        /// Where we connected.
        target: SocketAddr,
        /// Where the redirect should have taken it.
        listen: SocketAddr,
        /// What happened instead.
        reason: String,
        /// A hint about the caller's identity, or empty.
        note: String,
    },
}

/// The families `validate` checks: IPv4 always; IPv6 when on, or in `auto` when this
/// namespace has a global IPv6 address (without one no IPv6 connection can be routed).
pub fn families(ipv6: Ipv6Mode) -> Vec<Family> {
    let v6 = match ipv6 {
        Ipv6Mode::On => true,
        Ipv6Mode::Off => false,
        Ipv6Mode::Auto => has_global_ipv6(),
    };
    if v6 {
        vec![Family::V4, Family::V6]
    } else {
        vec![Family::V4]
    }
}

/// Whether `/proc/net/if_inet6` lists an address of global scope (scope field `00`).
fn has_global_ipv6() -> bool {
    std::fs::read_to_string("/proc/net/if_inet6")
        .map(|text| {
            text.lines()
                .any(|line| line.split_whitespace().nth(3) == Some("00"))
        })
        .unwrap_or(false)
}

/// Checks one family; `Ok` when our token came back through the redirect.
pub fn validate_family(
    family: Family,
    settings: &Settings,
    validate: &ValidateSettings,
) -> Result<(), ValidateError> {
    let listen = SocketAddr::new(family.loopback_addr(), validate.port);
    let target = validate.target(family);
    let listener = TcpListener::bind(listen).map_err(|source| ValidateError::Bind {
        family,
        addr: listen,
        source,
    })?;
    let token = token();
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let (stop, token) = (stop.clone(), token.clone());
        thread::spawn(move || serve_token(listener, &token, &stop))
    };
    let result = fetch_token(target, validate.timeout);
    stop.store(true, Ordering::Relaxed);
    // The server thread only loops until `stop`; its outcome adds nothing to ours.
    let _ = server.join();

    let reason = match result {
        Ok(bytes) if bytes == token.as_bytes() => return Ok(()),
        Ok(bytes) => format!(
            "the connection succeeded but answered {:?} instead of our token, so it reached \
             a real server at {target}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(64)])
        ),
        Err(e) => e,
    };
    Err(ValidateError::NotRedirected {
        family,
        target,
        listen,
        reason,
        note: identity_note(settings),
    })
}

/// Accepts connections until `stop`, answering each with `token`.
fn serve_token(listener: TcpListener, token: &str, stop: &AtomicBool) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, _)) => {
                // A write error shows up on the client side as a missing token.
                let _ = stream.set_nonblocking(false);
                let _ = stream.write_all(token.as_bytes());
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Connects to `target` and reads until end of stream, all within `timeout`.
fn fetch_token(target: SocketAddr, timeout: Duration) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&target, timeout).map_err(|e| match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => format!(
            "connect timed out after {}s (no rule captured it)",
            timeout.as_secs()
        ),
        ErrorKind::NetworkUnreachable => format!(
            "{e}: without a route the connection never reaches the nat OUTPUT chain; \
             pick a routable --validation-targets"
        ),
        ErrorKind::HostUnreachable => {
            format!("{e}: the connection left the pod unredirected and nothing answered")
        }
        ErrorKind::ConnectionRefused => {
            format!("{e}: it reached the target itself, not our listener")
        }
        _ => format!("connect failed: {e}"),
    })?;
    let mut received = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out waiting for the token".into());
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| format!("set read timeout: {e}"))?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(received),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err("timed out waiting for the token".into());
            }
            Err(e) => return Err(format!("reading the token failed: {e}")),
        }
    }
}

/// A token no other server would send.
fn token() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("agentmesh-init-validate-{}-{nanos}\n", std::process::id())
}

/// A hint when this process runs as the proxy's UID or GID, whose traffic is
/// deliberately never captured.
fn identity_note(settings: &Settings) -> String {
    let Some((uid, gid)) = effective_ids() else {
        return String::new();
    };
    if uid == settings.proxy_uid {
        format!(
            "; note: this process runs as the proxy's UID {}, whose traffic is never captured",
            settings.proxy_uid
        )
    } else if gid == settings.proxy_gid {
        format!(
            "; note: this process runs as the proxy's GID {}, whose traffic is never captured",
            settings.proxy_gid
        )
    } else {
        String::new()
    }
}
