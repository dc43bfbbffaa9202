//! Byte-for-byte forwarding of a captured connection to its original destination, and
//! refusing one with a TCP reset.
//!
//! Used for opaque TCP, server-speaks-first protocols and passed-through TLS. Half-close
//! is kept: when one side shuts down its writes, the other side sees EOF and may keep
//! sending (`copy_bidirectional` does this). A tunnel runs until both sides are done;
//! a drain waits for it, and cuts it only at its deadline.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How long connecting to an original destination may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `dst`, sends `prefix` (the bytes already read while detecting the
/// protocol), then copies both ways until both sides are done, or until `closing`
/// resolves (the drain deadline passed), when the client is reset and the destination
/// closed. A destination that cannot be reached resets the client, as the destination
/// itself would have.
pub async fn forward(
    mut client: TcpStream,
    prefix: &[u8],
    dst: SocketAddr,
    closing: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut upstream = match connect(dst).await {
        Ok(s) => s,
        Err(e) => {
            reset(client);
            return Err(e);
        }
    };
    if !prefix.is_empty() {
        upstream.write_all(prefix).await?;
    }
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => copied.map(drop),
        () = closing => {
            reset(client);
            Err(io::Error::new(
                io::ErrorKind::Interrupted,
                format!("tunnel to {dst} closed: the drain deadline passed"),
            ))
        }
    }
}

/// Connects to `dst` within [`CONNECT_TIMEOUT`], with `TCP_NODELAY`.
pub async fn connect(dst: SocketAddr) -> io::Result<TcpStream> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(dst)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connecting to {dst} took longer than {CONNECT_TIMEOUT:?}"),
        )),
    }
}

/// Closes `tcp` with a reset (RST) instead of an orderly FIN, so the client sees
/// "connection reset" rather than an empty answer.
pub fn reset(tcp: TcpStream) {
    let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
    drop(tcp);
}
