//! Serving a connection while watching the proxy's drain signal, without paying for the
//! watch on every wake-up of the connection.
//!
//! A client connection's task wakes several times per request (the request head, the
//! upstream response, each write), and polling the signal's `changed()` future on each
//! wake-up takes its notifier's lock every time. Here the signal gets a waker of its own,
//! which marks the signal as woken before waking the connection's task, so the signal is
//! polled only after it may have changed; any other wake-up costs two atomic operations.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Wake, Waker};

use futures_util::task::AtomicWaker;
use tokio::sync::watch;

/// Drives `conn` to its end. When `drain` changes (or its sender is gone, the proxy
/// stopping), `shutdown` is called once on the connection, which then finishes its
/// in-flight requests and closes.
pub(super) async fn serve_until_drained<C: Future>(
    mut conn: Pin<&mut C>,
    mut drain: watch::Receiver<bool>,
    mut shutdown: impl FnMut(Pin<&mut C>),
) -> C::Output {
    let signal = Arc::new(SignalWake {
        // Polled once at the start, to register for the first change.
        woken: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    let signal_waker = Waker::from(signal.clone());
    let mut changed = pin!(drain.changed());
    let mut draining = false;
    poll_fn(|cx| {
        if !draining {
            signal.task.register(cx.waker());
            if signal.woken.swap(false, Ordering::AcqRel)
                && changed
                    .as_mut()
                    .poll(&mut Context::from_waker(&signal_waker))
                    .is_ready()
            {
                draining = true;
                shutdown(conn.as_mut());
            }
        }
        conn.as_mut().poll(cx)
    })
    .await
}

/// The drain signal's own waker: remembers that the signal may have changed, then wakes
/// the connection's task.
struct SignalWake {
    woken: AtomicBool,
    /// The connection task's waker, as of its last poll.
    task: AtomicWaker,
}

impl Wake for SignalWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

#[cfg(test)]
mod tests {
    use std::task::Poll;
    use std::time::Duration;

    use super::*;

    /// A connection that ends only once it has been asked to shut down, counting its polls.
    #[derive(Default)]
    struct FakeConn {
        shut_down: bool,
        polls: usize,
    }

    impl Future for FakeConn {
        type Output = usize;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            self.polls += 1;
            if self.shut_down {
                Poll::Ready(self.polls)
            } else {
                // Wakes itself, as a busy connection's I/O would.
                if self.polls < 5 {
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }

    fn shut_down(conn: Pin<&mut FakeConn>) {
        conn.get_mut().shut_down = true;
    }

    #[tokio::test]
    async fn a_drain_asks_the_connection_to_shut_down() {
        let (tx, rx) = watch::channel(false);
        let served = tokio::spawn(async move {
            let conn = pin!(FakeConn::default());
            serve_until_drained(conn, rx, shut_down).await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !served.is_finished(),
            "the connection ended before the drain"
        );
        tx.send_replace(true);
        let polls = tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("the drain woke the connection")
            .expect("no panic");
        assert!(polls > 5, "polled {polls} times");
    }

    #[tokio::test]
    async fn a_dropped_signal_counts_as_a_drain() {
        let (tx, rx) = watch::channel(false);
        let served = tokio::spawn(async move {
            let conn = pin!(FakeConn::default());
            serve_until_drained(conn, rx, shut_down).await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("the connection was asked to shut down")
            .expect("no panic");
    }

    #[tokio::test]
    async fn a_connection_that_ends_by_itself_is_not_shut_down() {
        let (_tx, rx) = watch::channel(false);
        let conn = pin!(async { 7 });
        let out = serve_until_drained(conn, rx, |_| panic!("shut down without a drain")).await;
        assert_eq!(out, 7);
    }
}
