//! The timer behind the request-head read timeout of one HTTP/1 client connection.
//!
//! hyper asks its timer for a new sleep every time it starts waiting for a request head
//! and drops it as soon as the head is in. With tokio's timer that is, for every request
//! on a keep-alive connection, a timer entry put into the timer wheel and taken out again
//! (a driver lock each way). This timer keeps one tokio sleep per connection for the
//! connection's whole life, and the sleeps hyper gets share it. Each head is awaited
//! later than the previous one, so the shared sleep is usually aimed at an earlier
//! deadline than the one hyper now waits for: it is left alone, and when it fires (once
//! per timeout at most) it is re-aimed at the current deadline and awaited again. A
//! deadline earlier than the sleep's re-aims it at once. Either way hyper's deadlines are
//! kept exactly, and a keep-alive request costs no timer work beyond a poll.
//!
//! It must not be shared between connections: the one sleep wakes whichever task polled
//! it last.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::time::Sleep;

/// A [`hyper::rt::Timer`] for one connection's HTTP/1 server: see the module docs.
#[derive(Clone, Default)]
pub(super) struct HeadReadTimer {
    /// The connection's sleep, made on first use.
    sleep: Arc<Mutex<Option<Pin<Box<Sleep>>>>>,
}

impl hyper::rt::Timer for HeadReadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HeadDeadline {
            sleep: self.sleep.clone(),
            deadline: tokio::time::Instant::from_std(deadline),
        })
    }

    fn now(&self) -> Instant {
        // tokio's clock, which tests can pause, as the sleeps use it.
        tokio::time::Instant::now().into_std()
    }
}

/// One deadline hyper waits for, on the connection's sleep.
struct HeadDeadline {
    sleep: Arc<Mutex<Option<Pin<Box<Sleep>>>>>,
    deadline: tokio::time::Instant,
}

impl Future for HeadDeadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Only the connection's task polls it; a panic elsewhere leaves a usable sleep.
        let mut slot = self.sleep.lock().unwrap_or_else(PoisonError::into_inner);
        let sleep = slot.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(self.deadline)));
        if sleep.deadline() > self.deadline {
            sleep.as_mut().reset(self.deadline);
        }
        loop {
            ready!(sleep.as_mut().poll(cx));
            if sleep.deadline() >= self.deadline {
                return Poll::Ready(());
            }
            // Fired at an earlier head's deadline: now wait for this one.
            sleep.as_mut().reset(self.deadline);
        }
    }
}

impl hyper::rt::Sleep for HeadDeadline {}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use hyper::rt::Timer;

    use super::*;

    /// Long enough for a test that hangs on a sleep that never wakes to fail instead.
    const GIVE_UP: Duration = Duration::from_secs(5);

    /// Whether the sleep has fired, polled once without waiting.
    async fn fired(sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>) -> bool {
        poll_fn(|cx| Poll::Ready(sleep.as_mut().poll(cx).is_ready())).await
    }

    /// Waits for the sleep and returns how long that took from `since`.
    async fn woken(sleep: Pin<Box<dyn hyper::rt::Sleep>>, since: Instant) -> Duration {
        tokio::time::timeout(GIVE_UP, sleep)
            .await
            .expect("the sleep woke its task");
        since.elapsed()
    }

    #[tokio::test]
    async fn a_later_head_deadline_wakes_at_its_own_time() {
        let timer = HeadReadTimer::default();
        let mut first = timer.sleep(Duration::from_millis(50));
        assert!(!fired(&mut first).await);
        // The head arrived; the next one is awaited with a later deadline.
        drop(first);
        let asked = Instant::now();
        let second = timer.sleep(Duration::from_millis(200));
        assert!(woken(second, asked).await >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_deadline_after_a_fired_one_waits_again() {
        let timer = HeadReadTimer::default();
        let first = timer.sleep(Duration::from_millis(20));
        woken(first, Instant::now()).await;
        let asked = Instant::now();
        let mut second = timer.sleep(Duration::from_millis(100));
        assert!(!fired(&mut second).await);
        assert!(woken(second, asked).await >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn an_earlier_deadline_is_not_held_back_by_a_later_one() {
        let timer = HeadReadTimer::default();
        let mut late = timer.sleep(Duration::from_secs(60));
        assert!(!fired(&mut late).await);
        drop(late);
        let early = timer.sleep(Duration::from_millis(50));
        woken(early, Instant::now()).await;
    }
}
