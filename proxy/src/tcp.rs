//! A TCP stream whose vectored writes are `sendmsg` calls.
//!
//! tokio writes an `IoSlice` list with `writev`, which reaches the socket through the
//! generic file layer (file position lock, `write_iter`); hyper writes every message
//! head and body that way. `sendmsg` (and `send` for a single buffer) go to the socket
//! directly. On the benchmark's keep-alive requests the `writev` path was about 3% of
//! the proxy's kernel time (`perf`, e2e/bench/README.md); the bytes sent are the same.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// A connected TCP stream (see the module documentation).
#[derive(Debug)]
pub struct SendStream(pub TcpStream);

impl SendStream {
    /// The stream underneath, for socket options and addresses.
    pub fn get_ref(&self) -> &TcpStream {
        &self.0
    }
}

impl AsyncRead for SendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // tokio already writes a single buffer with `send`.
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let tcp = &self.get_mut().0;
        loop {
            ready!(tcp.poll_write_ready(cx))?;
            // `try_io` clears the readiness when the call would block, so the next
            // `poll_write_ready` waits for the socket again.
            let sent = tcp.try_io(Interest::WRITABLE, || {
                let socket = socket2::SockRef::from(tcp);
                match bufs {
                    [] => Ok(0),
                    [one] => socket.send(one),
                    _ => socket.send_vectored(bufs),
                }
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Vectored writes arrive whole and in order, including past a full socket buffer
    /// (the writer waits for the reader instead of failing or dropping bytes).
    #[tokio::test]
    async fn vectored_writes_arrive_in_order_past_a_full_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let writer = tokio::spawn(async move {
            let mut out = SendStream(TcpStream::connect(addr).await.unwrap());
            let head = vec![b'h'; 300];
            let body: Vec<u8> = (0..=255u8).cycle().take(64 * 1024).collect();
            // 16 MiB: more than loopback's largest send and receive buffers together.
            for _ in 0..256 {
                let mut parts = [io::IoSlice::new(&head), io::IoSlice::new(&body)];
                let mut slices = &mut parts[..];
                while !slices.is_empty() {
                    let n = out.write_vectored(slices).await.unwrap();
                    assert!(n > 0);
                    io::IoSlice::advance_slices(&mut slices, n);
                }
            }
            out.write_all(b"end").await.unwrap();
            out.shutdown().await.unwrap();
        });
        let (mut inp, _) = listener.accept().await.unwrap();
        // Let the writer fill the socket buffers before reading.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut got = Vec::new();
        inp.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        let one: Vec<u8> = std::iter::repeat_n(b'h', 300)
            .chain((0..=255u8).cycle().take(64 * 1024))
            .collect();
        assert_eq!(got.len(), one.len() * 256 + 3);
        for chunk in got[..one.len() * 256].chunks(one.len()) {
            assert!(chunk == one.as_slice());
        }
        assert_eq!(&got[one.len() * 256..], b"end");
    }
}
