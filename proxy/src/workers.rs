//! Serving threads, one single-thread scheduler each.
//!
//! With more than one thread the proxy does not use tokio's work-stealing scheduler:
//! every thread runs a runtime of its own and each accepted connection is handed to one
//! of them for its whole life: the one serving the fewest connections, ties taken in
//! turn. (Round robin alone would leave one thread with the long-lived connections, an
//! MCP event stream or a WebSocket, while the other's short ones come and go.) The connection's tasks (HTTP serving, the
//! upstream connections it opens, timers) then all run on that thread, and the upstream
//! pool keeps one share of connections per thread ([`current`]), so a request never
//! wakes another thread. Work stealing moved tasks between the threads and woke one
//! thread from another several times per request: the same load cost about 40% more CPU
//! per request with two workers than with one (`e2e/bench/README.md`).
//!
//! The thread that calls [`start`] runs the main runtime (admin, metrics, xDS, config
//! reloads, accept loops) and is worker 0; [`start`] adds the others. Without [`start`]
//! (one thread, tests) there is one worker and [`spawn_connection`] is `tokio::spawn`.

use std::cell::Cell;
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::runtime::Handle;

struct Workers {
    /// Every worker's runtime, worker 0's (the main runtime) first.
    runtimes: Vec<Handle>,
    /// How many connections each worker is serving.
    open: Box<[AtomicUsize]>,
    /// Where the next search for the least busy worker starts, so ties rotate.
    next: AtomicUsize,
}

impl Workers {
    /// The worker serving the fewest connections; among equals, the first from `next`.
    fn pick(&self) -> usize {
        let n = self.runtimes.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .map(|i| (start + i) % n)
            .min_by_key(|&w| self.open[w].load(Ordering::Relaxed))
            .unwrap_or(0)
    }
}

/// Counts a connection as served by its worker until the task serving it ends.
struct Serving(&'static AtomicUsize);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

static WORKERS: OnceLock<Workers> = OnceLock::new();

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// Starts `threads - 1` worker threads beside the main runtime (`main`, worker 0, run by
/// the calling thread), each running a single-thread runtime until the process exits.
/// Call once, before serving; with `threads <= 1` it starts nothing.
pub fn start(threads: usize, main: Handle) -> std::io::Result<()> {
    if threads <= 1 {
        return Ok(());
    }
    let mut runtimes = Vec::with_capacity(threads);
    runtimes.push(main);
    for id in 1..threads {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("agentmesh-w{id}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                CURRENT.with(|c| c.set(id));
                let _ = tx.send(Ok(runtime.handle().clone()));
                // Serves whatever is spawned on it until the process exits.
                runtime.block_on(std::future::pending::<()>());
            })?;
        let handle = rx
            .recv()
            .map_err(|_| std::io::Error::other(format!("worker thread {id} did not start")))??;
        runtimes.push(handle);
    }
    WORKERS
        .set(Workers {
            open: runtimes.iter().map(|_| AtomicUsize::new(0)).collect(),
            runtimes,
            next: AtomicUsize::new(0),
        })
        .map_err(|_| std::io::Error::other("worker threads already started"))
}

/// How many workers serve connections (1 without [`start`]).
pub fn count() -> usize {
    WORKERS.get().map_or(1, |w| w.runtimes.len())
}

/// The worker the calling thread is (0 on any thread that is not a worker).
pub fn current() -> usize {
    CURRENT.with(Cell::get)
}

/// Serves an accepted connection on the least busy worker: `serve(tcp)` runs there as a
/// task of that worker's runtime, with the socket registered with that runtime.
pub fn spawn_connection<F, Fut>(tcp: TcpStream, serve: F)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(workers) = WORKERS.get() else {
        tokio::spawn(serve(tcp));
        return;
    };
    let pick = workers.pick();
    workers.open[pick].fetch_add(1, Ordering::Relaxed);
    let serving = Serving(&workers.open[pick]);
    if pick == current() {
        tokio::spawn(async move {
            let _serving = serving;
            serve(tcp).await;
        });
        return;
    }
    // A tokio socket belongs to the runtime it was registered with: hand over the
    // descriptor and register it again on the chosen worker.
    let std = match tcp.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot hand an accepted connection to a worker");
            return;
        }
    };
    workers.runtimes[pick].spawn(async move {
        let _serving = serving;
        match TcpStream::from_std(std) {
            Ok(tcp) => serve(tcp).await,
            Err(e) => tracing::warn!(error = %e, "worker cannot take an accepted connection"),
        }
    });
}
