//! Protocol detection on a captured connection's first bytes: TLS ClientHello (with its
//! SNI), an HTTP/1.x request line, the HTTP/2 preface, or anything else (opaque).
//!
//! The bytes are read, not peeked: a peek returns at once while bytes are waiting, so
//! waiting for "more" would spin. They are kept and handed back in front of the stream
//! by [`Prefixed`], so whoever serves the connection sees every byte the client sent.
//!
//! Bounded in size ([`MAX_SNIFF`]) and time: `first` for the first byte (after which the
//! connection counts as server-speaks-first), [`REST_TIMEOUT`] for the rest of the
//! evidence (a slow client whose bytes never add up is treated as opaque).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::client_hello::{self, Hello};

/// The most bytes read before deciding: a maximal ClientHello and its record headers.
pub const MAX_SNIFF: usize = client_hello::MAX_HELLO + 1024;
/// How long the rest of the evidence may take once the first byte came.
pub const REST_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest HTTP/1 request line accepted as evidence of HTTP/1.
const MAX_REQUEST_LINE: usize = 8 * 1024;
/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a captured connection speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    /// An HTTP/1.x request line.
    Http1,
    /// The HTTP/2 preface (h2c, prior knowledge).
    Http2,
    /// A TLS ClientHello, with its SNI.
    Tls {
        /// Host name from the `server_name` extension, lowercase.
        sni: Option<String>,
    },
    /// Something else.
    Opaque,
    /// Nothing within the first-byte timeout: the server is expected to speak first.
    ServerFirst,
}

/// Reads from `io` until the first bytes say what protocol it is. Returns what was read
/// (to be replayed with [`Prefixed`]).
pub async fn detect<IO: AsyncRead + Unpin>(
    io: &mut IO,
    first: Duration,
) -> io::Result<(Detected, BytesMut)> {
    let mut buf = BytesMut::with_capacity(1024);
    let rest_deadline = tokio::time::Instant::now() + first + REST_TIMEOUT;
    loop {
        if let Some(d) = classify(&buf) {
            return Ok((d, buf));
        }
        if buf.len() >= MAX_SNIFF {
            return Ok((Detected::Opaque, buf));
        }
        let read = if buf.is_empty() {
            tokio::time::timeout(first, io.read_buf(&mut buf)).await
        } else {
            tokio::time::timeout_at(rest_deadline, io.read_buf(&mut buf)).await
        };
        match read {
            Err(_) if buf.is_empty() => return Ok((Detected::ServerFirst, buf)),
            // Evidence that never adds up, or a client that half-closed mid-way: what
            // there is gets forwarded as is.
            Err(_) | Ok(Ok(0)) => return Ok((Detected::Opaque, buf)),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// Decides from the bytes so far; `None` when more are needed.
pub fn classify(buf: &[u8]) -> Option<Detected> {
    let first = *buf.first()?;
    if first == 0x16 {
        return match client_hello::parse(buf) {
            Hello::Complete { sni } => Some(Detected::Tls { sni }),
            Hello::Incomplete => None,
            Hello::Invalid => Some(Detected::Opaque),
        };
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return (buf.len() >= H2_PREFACE.len()).then_some(Detected::Http2);
    }
    http1_request_line(buf)
}

/// Whether `buf` starts with `METHOD SP target SP HTTP/1.x CRLF`.
fn http1_request_line(buf: &[u8]) -> Option<Detected> {
    // The method: uppercase letters (and `-`/`_` as in some extension methods).
    let method_len = buf
        .iter()
        .position(|b| !(b.is_ascii_uppercase() || *b == b'-' || *b == b'_'))
        .unwrap_or(buf.len());
    if method_len == buf.len() {
        return (method_len > 20).then_some(Detected::Opaque);
    }
    if method_len == 0 || method_len > 20 || buf[method_len] != b' ' {
        return Some(Detected::Opaque);
    }
    let Some(eol) = buf.iter().position(|b| *b == b'\n') else {
        return (buf.len() >= MAX_REQUEST_LINE).then_some(Detected::Opaque);
    };
    let line = buf[..eol].strip_suffix(b"\r").unwrap_or(&buf[..eol]);
    if line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0") {
        Some(Detected::Http1)
    } else {
        Some(Detected::Opaque)
    }
}

/// A stream that first yields bytes already read from it, then the stream itself.
#[derive(Debug)]
pub struct Prefixed<IO> {
    prefix: BytesMut,
    io: IO,
}

impl<IO> Prefixed<IO> {
    /// `prefix` is read before `io`.
    pub fn new(prefix: BytesMut, io: IO) -> Self {
        Prefixed { prefix, io }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn classifies_the_first_bytes() {
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"GET /x HTT"), None);
        assert_eq!(
            classify(b"GET /x HTTP/1.1\r\nHost: a\r\n"),
            Some(Detected::Http1)
        );
        assert_eq!(classify(b"M-SEARCH * HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), None);
        assert_eq!(classify(H2_PREFACE), Some(Detected::Http2));
        // A text protocol that is not HTTP, and binary ones.
        assert_eq!(classify(b"EHLO mail.example\r\n"), Some(Detected::Opaque));
        assert_eq!(classify(b"ping\n"), Some(Detected::Opaque));
        assert_eq!(
            classify(&[0, 0, 0, 8, 4, 210, 22, 47]),
            Some(Detected::Opaque)
        );
        assert_eq!(classify(&[0x16, 0x01]), Some(Detected::Opaque));
    }

    #[tokio::test]
    async fn silence_means_server_first_and_bytes_are_replayed() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let (d, buf) = detect(&mut server, Duration::from_millis(30))
            .await
            .unwrap();
        assert_eq!(d, Detected::ServerFirst);
        assert!(buf.is_empty());

        use tokio::io::AsyncWriteExt;
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let (d, buf) = detect(&mut server, Duration::from_millis(500))
            .await
            .unwrap();
        assert_eq!(d, Detected::Http1);
        client.write_all(b"Host: x\r\n\r\n").await.unwrap();
        drop(client);
        let mut replay = Prefixed::new(buf, server);
        let mut all = String::new();
        replay.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    }
}
