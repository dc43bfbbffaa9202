//! Request body size limits that work on streaming bodies.
//!
//! A body announced larger than the limit (by `Content-Length`) is refused before any
//! byte is read. A body without a length streams through [`LimitedBody`], which fails the
//! stream once the limit is passed and raises a flag, so the caller can answer 413 instead
//! of blaming the backend.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::BoxError;

/// Set when a [`LimitedBody`] passed its limit.
#[derive(Debug, Clone, Default)]
pub struct Exceeded(Arc<AtomicBool>);

impl Exceeded {
    /// Whether the limit was passed.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The error a [`LimitedBody`] yields once over its limit.
#[derive(Debug, thiserror::Error)]
#[error("request body is larger than the limit of {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// A body that fails once more than `limit` bytes went through.
pub struct LimitedBody<B> {
    inner: B,
    remaining: u64,
    limit: u64,
    exceeded: Exceeded,
}

impl<B> LimitedBody<B> {
    /// Wraps `inner`; returns the body and its flag.
    pub fn new(inner: B, limit: u64) -> (Self, Exceeded) {
        let exceeded = Exceeded::default();
        (
            LimitedBody {
                inner,
                remaining: limit,
                limit,
                exceeded: exceeded.clone(),
            },
            exceeded,
        )
    }
}

impl<B> HttpBody for LimitedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        this.exceeded.0.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge(this.limit)))));
                    }
                    this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
