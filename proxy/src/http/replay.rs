//! A request body that can be sent again without being read up front.
//!
//! The first attempt streams the client's body as it arrives and keeps a copy of what it
//! forwarded, up to a limit. A retry replays the copy and then continues with whatever
//! the client has not sent yet, so a retry works even when the first attempt failed
//! half-way through the body, or before reading any of it (a refused connection). Once
//! more than the limit has gone through, the copy is dropped and the body can no longer
//! be replayed. Nothing is buffered beyond the limit and nothing delays the first attempt.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::BoxError;
use crate::http::body::Body;

struct State {
    /// The client's body; polled by whichever attempt reaches its unread part first.
    source: Body,
    /// Data forwarded so far, in order, while within the limit.
    frames: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    size: usize,
    limit: usize,
    overflowed: bool,
    done: bool,
}

/// Shares one client body between successive attempts.
#[derive(Clone)]
pub struct Replay {
    state: Arc<Mutex<State>>,
}

impl Replay {
    /// Wraps `source`, keeping up to `limit` bytes for replay.
    pub fn new(source: Body, limit: usize) -> Self {
        let state = State {
            source,
            frames: Vec::new(),
            trailers: None,
            size: 0,
            limit,
            overflowed: false,
            done: false,
        };
        Replay {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// A body for the next attempt: the kept copy first, then the rest of the client's body.
    pub fn attempt(&self) -> ReplayBody {
        ReplayBody {
            state: self.state.clone(),
            pos: 0,
            trailers_sent: false,
        }
    }

    /// Whether a new attempt would send the whole body (nothing was dropped).
    pub fn can_replay(&self) -> bool {
        !self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .overflowed
    }
}

/// One attempt's view of a [`Replay`].
pub struct ReplayBody {
    state: Arc<Mutex<State>>,
    pos: usize,
    trailers_sent: bool,
}

impl HttpBody for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut state = this.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.overflowed && this.pos < state.size {
            // The copy is gone; this attempt cannot be completed faithfully.
            return Poll::Ready(Some(Err(
                "request body is too large to be sent again".into()
            )));
        }
        if let Some(data) = state.frames.get(this.pos) {
            this.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(data.clone()))));
        }
        if state.done {
            if !this.trailers_sent
                && let Some(t) = state.trailers.clone()
            {
                this.trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(t))));
            }
            return Poll::Ready(None);
        }
        let state = &mut *state;
        match Pin::new(&mut state.source).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    state.size += data.len();
                    if state.overflowed || state.size > state.limit {
                        state.overflowed = true;
                        state.frames = Vec::new();
                    } else {
                        state.frames.push(data.clone());
                    }
                    this.pos = if state.overflowed {
                        state.size
                    } else {
                        state.frames.len()
                    };
                } else if let Some(t) = frame.trailers_ref() {
                    state.trailers = Some(t.clone());
                    this.trailers_sent = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                state.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.done
            && self.pos >= state.frames.len()
            && (self.trailers_sent || state.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let kept: u64 = state.frames[self.pos.min(state.frames.len())..]
            .iter()
            .map(|b| b.len() as u64)
            .sum();
        let source = if state.done {
            SizeHint::with_exact(0)
        } else {
            state.source.size_hint()
        };
        let mut hint = SizeHint::new();
        // Upper first: `set_lower` checks lower <= upper.
        if let Some(upper) = source.upper() {
            hint.set_upper(upper + kept);
        }
        hint.set_lower(source.lower() + kept);
        hint
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use http_body_util::BodyExt;

    use super::*;
    use crate::http::body;

    fn chunks(parts: &[&'static str]) -> Body {
        let frames = parts
            .iter()
            .map(|p| Ok::<_, BoxError>(Frame::data(Bytes::from_static(p.as_bytes()))));
        body::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames.collect::<Vec<_>>(),
        )))
    }

    #[tokio::test]
    async fn a_second_attempt_gets_the_whole_body_after_a_partial_first_one() {
        let replay = Replay::new(chunks(&["ab", "cd", "ef"]), 100);
        let mut first = replay.attempt();
        let f = first.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "ab");
        drop(first);
        assert!(replay.can_replay());
        let all = replay.attempt().collect().await.unwrap().to_bytes();
        assert_eq!(all, "abcdef");
        let again = replay.attempt().collect().await.unwrap().to_bytes();
        assert_eq!(again, "abcdef");
    }

    #[tokio::test]
    async fn an_unread_body_survives_a_failed_attempt() {
        let replay = Replay::new(chunks(&["x", "y"]), 100);
        drop(replay.attempt());
        assert_eq!(replay.attempt().collect().await.unwrap().to_bytes(), "xy");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_streams_once_and_cannot_be_replayed() {
        let replay = Replay::new(chunks(&["1234", "5678", "9"]), 6);
        assert_eq!(
            replay.attempt().collect().await.unwrap().to_bytes(),
            "123456789"
        );
        assert!(!replay.can_replay());
    }
}
