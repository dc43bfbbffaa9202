//! Stdio targets: an MCP server the proxy runs as a child process, speaking
//! newline-delimited JSON-RPC on its stdin and stdout. Each stderr line goes to the log
//! with the target's name.
//!
//! - `PER_SESSION`: `initialize` spawns a process and hands back a random key, which the
//!   client's session id carries as the upstream session id. Requests find the process
//!   by that key; one that is gone (killed, exited, another replica, a restart) answers
//!   [`TargetError::SessionGone`], so federation re-initializes: a new process. Ending
//!   the session kills it, and so does being idle for the session idle timeout.
//! - `SHARED`: one process per target for every session, initialized once, started
//!   again on the next request when it exits.
//!
//! Request ids are the process's own (a counter), so concurrent requests from many
//! clients never collide. Server-to-client requests are answered: `ping` with `{}`,
//! others with "method not found" (relaying them to the client comes later).
//! Processes are killed (SIGKILL, then reaped) when ended, when idle, and when the last
//! reference goes (`kill_on_drop`); a proxy killed outright leaves them an EOF on stdin,
//! on which MCP servers exit.
//!
//! This module must not know about client sessions, names or federation.

use std::collections::HashMap;
use std::io;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use rand::RngCore;
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

use super::jsonrpc::{self, code};
use super::upstream::{
    Reply, TargetError, UpstreamSession, initialize_request, negotiated_version, reply_from,
};

/// Longest stdout line (one JSON-RPC message) read; a longer one is skipped.
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;
/// Longest stderr line logged; the rest of the line is cut.
const MAX_LOG_LINE_BYTES: usize = 4096;
/// Messages queued for a process's stdin before senders wait.
const STDIN_QUEUE: usize = 64;

/// How many processes a stdio target runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdioMode {
    /// One per client session.
    PerSession,
    /// One for all sessions.
    Shared,
}

/// The command of a stdio target.
#[derive(Clone, PartialEq, Eq)]
pub struct StdioSpec {
    /// Program (path or name in `PATH`).
    pub command: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Processes per target.
    pub mode: StdioMode,
}

impl std::fmt::Debug for StdioSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Environment values may be secrets: names only.
        let env: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("StdioSpec")
            .field("command", &self.command)
            .field("args", &self.args)
            .field("env", &env)
            .field("mode", &self.mode)
            .finish()
    }
}

/// One target run as a child process.
#[derive(Debug)]
pub struct StdioTarget {
    name: Arc<str>,
    spec: Arc<StdioSpec>,
    pool: Arc<StdioPool>,
}

impl StdioTarget {
    /// A target named `name` running `spec`, its processes kept in `pool`.
    pub fn new(name: &str, spec: StdioSpec, pool: Arc<StdioPool>) -> StdioTarget {
        StdioTarget {
            name: name.into(),
            spec: Arc::new(spec),
            pool,
        }
    }

    /// The target's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The program it runs.
    pub fn command(&self) -> &str {
        &self.spec.command
    }

    /// Opens a session: a new process (per session) or the shared one.
    pub async fn initialize(
        &self,
        version: &str,
        timeout: Duration,
    ) -> Result<(UpstreamSession, Value), TargetError> {
        match self.spec.mode {
            StdioMode::PerSession => {
                let process = StdioProcess::spawn(&self.name, &self.spec)?;
                let (negotiated, result) = process.handshake(version, timeout).await?;
                let key = process_key();
                self.pool
                    .insert((self.name.clone(), Some(key.clone())), process);
                let session = UpstreamSession {
                    target: self.name.to_string(),
                    id: Some(key),
                    version: negotiated,
                };
                Ok((session, result))
            }
            StdioMode::Shared => {
                let process = self.shared(version, timeout).await?;
                let (negotiated, result) = process.init.get().cloned().unwrap_or_default();
                let session = UpstreamSession {
                    target: self.name.to_string(),
                    id: None,
                    version: negotiated,
                };
                Ok((session, result))
            }
        }
    }

    /// Sends a request to the session's process and waits for its answer.
    pub async fn request(
        &self,
        session: &UpstreamSession,
        msg: &Value,
        timeout: Duration,
    ) -> Result<Reply, TargetError> {
        let process = self.process(session, timeout).await?;
        match (process.request(msg, timeout).await, self.spec.mode) {
            // A per-session process that died: a new session gets a new one.
            (Err(TargetError::Exited), StdioMode::PerSession) => Err(TargetError::SessionGone),
            // The shared one died before this request reached it: once more, on a new one.
            (Err(TargetError::Exited), StdioMode::Shared) => {
                let process = self.shared(&session.version, timeout).await?;
                process.request(msg, timeout).await
            }
            (other, _) => other,
        }
    }

    /// Sends a notification to the session's process.
    pub async fn notify(&self, session: &UpstreamSession, msg: &Value) -> Result<(), TargetError> {
        let process = match self.spec.mode {
            StdioMode::PerSession => self.per_session(session)?,
            // A notification is not worth starting the shared process for.
            StdioMode::Shared => self
                .pool
                .get(&(self.name.clone(), None))
                .ok_or(TargetError::Exited)?,
        };
        process.send(msg).await
    }

    /// Ends a session: its process is killed (a shared process lives on).
    pub async fn end(&self, session: &UpstreamSession) {
        if self.spec.mode == StdioMode::PerSession
            && let Some(key) = &session.id
            && let Some(process) = self.pool.remove(&(self.name.clone(), Some(key.clone())))
        {
            tracing::debug!(target = %self.name, "session ended; stopping its stdio process");
            process.kill().await;
        }
    }

    async fn process(
        &self,
        session: &UpstreamSession,
        timeout: Duration,
    ) -> Result<Arc<StdioProcess>, TargetError> {
        match self.spec.mode {
            StdioMode::PerSession => self.per_session(session),
            StdioMode::Shared => self.shared(&session.version, timeout).await,
        }
    }

    fn per_session(&self, session: &UpstreamSession) -> Result<Arc<StdioProcess>, TargetError> {
        let key = (
            self.name.clone(),
            Some(session.id.clone().ok_or(TargetError::SessionGone)?),
        );
        match self.pool.get(&key) {
            Some(p) if p.is_running() && p.spec == self.spec => {
                p.touch();
                Ok(p)
            }
            Some(p) => {
                // Exited, or started from an older config: this session needs a new one.
                self.pool.remove(&key);
                tokio::spawn(async move { p.kill().await });
                Err(TargetError::SessionGone)
            }
            None => Err(TargetError::SessionGone),
        }
    }

    /// The shared process, started (and initialized at `version`) when not running.
    async fn shared(
        &self,
        version: &str,
        timeout: Duration,
    ) -> Result<Arc<StdioProcess>, TargetError> {
        let key = (self.name.clone(), None);
        let running = |p: &Arc<StdioProcess>| p.is_running() && p.spec == self.spec;
        if let Some(p) = self.pool.get(&key).filter(running) {
            p.touch();
            return Ok(p);
        }
        // One start at a time, so concurrent first requests share one process.
        let _starting = self.pool.starting.lock().await;
        if let Some(p) = self.pool.get(&key).filter(running) {
            return Ok(p);
        }
        if self.pool.get(&key).is_some() {
            tracing::info!(target = %self.name, "shared stdio process is not running; starting it again");
        }
        let process = StdioProcess::spawn(&self.name, &self.spec)?;
        process.handshake(version, timeout).await?;
        if let Some(old) = self.pool.insert(key, process.clone()) {
            old.kill().await;
        }
        Ok(process)
    }
}

/// A random key naming a per-session process.
fn process_key() -> String {
    let mut k = [0u8; 16];
    rand::rng().fill_bytes(&mut k);
    k.iter().map(|b| format!("{b:02x}")).collect()
}

type ProcessKey = (Arc<str>, Option<String>);

/// The processes of one backend's stdio targets, kept across config reloads. A
/// background task (started with the first process) kills per-session processes idle
/// for longer than the session idle timeout, and forgets exited ones.
#[derive(Debug)]
pub struct StdioPool {
    processes: Mutex<HashMap<ProcessKey, Arc<StdioProcess>>>,
    starting: tokio::sync::Mutex<()>,
    idle_ms: AtomicU64,
    reaper_started: AtomicBool,
}

impl StdioPool {
    /// An empty pool; per-session processes idle for `idle` are killed.
    pub fn new(idle: Duration) -> StdioPool {
        StdioPool {
            processes: Mutex::default(),
            starting: tokio::sync::Mutex::default(),
            idle_ms: AtomicU64::new(idle.as_millis() as u64),
            reaper_started: AtomicBool::new(false),
        }
    }

    /// Changes the idle timeout (a config reload).
    pub fn set_idle_timeout(&self, idle: Duration) {
        self.idle_ms
            .store(idle.as_millis() as u64, Ordering::Relaxed);
    }

    /// Processes currently running.
    pub fn running(&self) -> usize {
        self.lock().values().filter(|p| p.is_running()).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ProcessKey, Arc<StdioProcess>>> {
        self.processes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, key: &ProcessKey) -> Option<Arc<StdioProcess>> {
        self.lock().get(key).cloned()
    }

    fn remove(&self, key: &ProcessKey) -> Option<Arc<StdioProcess>> {
        self.lock().remove(key)
    }

    fn insert(
        self: &Arc<Self>,
        key: ProcessKey,
        process: Arc<StdioProcess>,
    ) -> Option<Arc<StdioProcess>> {
        let old = self.lock().insert(key, process);
        if !self.reaper_started.swap(true, Ordering::Relaxed) {
            tokio::spawn(reap_forever(Arc::downgrade(self)));
        }
        old
    }

    /// Takes out the processes to kill: idle per-session ones and exited ones.
    fn doomed(&self) -> Vec<Arc<StdioProcess>> {
        let idle = Duration::from_millis(self.idle_ms.load(Ordering::Relaxed));
        let mut doomed = Vec::new();
        self.lock().retain(|(target, key), p| {
            let idle_session = key.is_some() && p.idle_for() > idle;
            if idle_session {
                tracing::debug!(target = %target, "stdio process idle for the session timeout; stopping it");
            }
            let keep = p.is_running() && !idle_session;
            if !keep {
                doomed.push(p.clone());
            }
            keep
        });
        doomed
    }

    fn tick(&self) -> Duration {
        (Duration::from_millis(self.idle_ms.load(Ordering::Relaxed)) / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(30))
    }
}

async fn reap_forever(pool: std::sync::Weak<StdioPool>) {
    loop {
        let Some(p) = pool.upgrade() else {
            return;
        };
        let tick = p.tick();
        let doomed = p.doomed();
        drop(p);
        for process in doomed {
            process.kill().await;
        }
        tokio::time::sleep(tick).await;
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>;

/// One running child process and the tasks reading and writing its pipes.
#[derive(Debug)]
struct StdioProcess {
    spec: Arc<StdioSpec>,
    stdin: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    next_id: AtomicU64,
    exited: Arc<AtomicBool>,
    child: tokio::sync::Mutex<Child>,
    last_used: Mutex<Instant>,
    /// The negotiated version and initialize result.
    init: OnceLock<(String, Value)>,
}

impl StdioProcess {
    fn spawn(name: &Arc<str>, spec: &Arc<StdioSpec>) -> Result<Arc<StdioProcess>, TargetError> {
        let mut child = Command::new(&spec.command)
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                tracing::warn!(target = %name, command = %spec.command, error = %e, "stdio target could not be started");
                TargetError::Spawn(e)
            })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(TargetError::Spawn(io::Error::other("no pipes")));
        };
        tracing::info!(target = %name, command = %spec.command, pid = child.id().unwrap_or(0), "stdio target started");
        let (tx, rx) = mpsc::channel(STDIN_QUEUE);
        let pending: Pending = Arc::default();
        let exited = Arc::new(AtomicBool::new(false));
        tokio::spawn(write_stdin(stdin, rx));
        tokio::spawn(read_stdout(
            name.clone(),
            BufReader::new(stdout),
            tx.clone(),
            pending.clone(),
            exited.clone(),
        ));
        tokio::spawn(log_stderr(name.clone(), BufReader::new(stderr)));
        Ok(Arc::new(StdioProcess {
            spec: spec.clone(),
            stdin: tx,
            pending,
            next_id: AtomicU64::new(1),
            exited,
            child: tokio::sync::Mutex::new(child),
            last_used: Mutex::new(Instant::now()),
            init: OnceLock::new(),
        }))
    }

    fn is_running(&self) -> bool {
        !self.exited.load(Ordering::Acquire)
    }

    fn touch(&self) {
        *self
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
    }

    /// `initialize`, then `notifications/initialized`.
    async fn handshake(
        &self,
        version: &str,
        timeout: Duration,
    ) -> Result<(String, Value), TargetError> {
        let msg = initialize_request(&json!(0), version);
        let result = self
            .request(&msg, timeout)
            .await?
            .map_err(|e| TargetError::Protocol(format!("initialize was refused: {e}")))?;
        let negotiated = negotiated_version(&result, version);
        self.send(&jsonrpc::notification("notifications/initialized", None))
            .await?;
        let _ = self.init.set((negotiated.clone(), result.clone()));
        Ok((negotiated, result))
    }

    /// Sends `msg` under an id of this process's own and waits for the answer.
    async fn request(&self, msg: &Value, timeout: Duration) -> Result<Reply, TargetError> {
        self.touch();
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = msg.clone();
        msg["id"] = json!(n);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(n, tx);
        let forget = || {
            self.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&n);
        };
        // Checked after registering: the reader clears `pending` once, on exit.
        if !self.is_running() {
            forget();
            return Err(TargetError::Exited);
        }
        if let Err(e) = self.send(&msg).await {
            forget();
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(TargetError::Exited),
            Err(_) => {
                forget();
                Err(TargetError::Timeout(timeout))
            }
        }
    }

    /// Writes one message line.
    async fn send(&self, msg: &Value) -> Result<(), TargetError> {
        let mut line = serde_json::to_vec(msg).map_err(|e| TargetError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.stdin.send(line).await.map_err(|_| TargetError::Exited)
    }

    /// SIGKILL, and waits until the process is reaped.
    async fn kill(&self) {
        self.exited.store(true, Ordering::Release);
        let mut child = self.child.lock().await;
        if let Err(e) = child.kill().await {
            tracing::debug!(error = %e, "stdio process already gone");
        }
    }
}

async fn write_stdin(mut stdin: tokio::process::ChildStdin, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(line) = rx.recv().await {
        if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
            return;
        }
    }
}

/// Reads messages until EOF: answers go to their waiting request, server requests
/// get an answer, notifications are dropped. On EOF every waiting request fails.
async fn read_stdout<R: AsyncBufRead + Unpin>(
    name: Arc<str>,
    mut stdout: R,
    stdin: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    exited: Arc<AtomicBool>,
) {
    let mut buf = Vec::new();
    loop {
        match read_line(&mut stdout, &mut buf, MAX_LINE_BYTES).await {
            Ok(Some(true)) => {}
            Ok(Some(false)) => {
                tracing::warn!(target = %name, "stdio target wrote a line over {MAX_LINE_BYTES} bytes; skipped");
                continue;
            }
            Ok(None) | Err(_) => break,
        }
        let Ok(msg) = serde_json::from_slice::<Value>(&buf) else {
            tracing::debug!(target = %name, "stdio target wrote a line that is not JSON; skipped");
            continue;
        };
        match (msg.get("method").and_then(Value::as_str), msg.get("id")) {
            (Some(method), Some(id)) => {
                let answer = if method == "ping" {
                    jsonrpc::result(id, json!({}))
                } else {
                    json!({ "jsonrpc": "2.0", "id": id, "error": {
                        "code": code::METHOD_NOT_FOUND,
                        "message": format!("the gateway does not relay {method} to clients"),
                    }})
                };
                if let Ok(mut line) = serde_json::to_vec(&answer) {
                    line.push(b'\n');
                    let _ = stdin.send(line).await;
                }
            }
            (Some(method), None) => {
                tracing::debug!(target = %name, method, "stdio target notification dropped")
            }
            (None, Some(id)) => {
                let waiter = id.as_u64().and_then(|n| {
                    pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&n)
                });
                if let (Some(waiter), Some(reply)) = (waiter, reply_from(&msg, id)) {
                    let _ = waiter.send(reply);
                }
            }
            (None, None) => {}
        }
    }
    exited.store(true, Ordering::Release);
    pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    tracing::info!(target = %name, "stdio target closed its stdout");
}

/// Reads one line into `buf` (without the newline): `Some(true)`, or `Some(false)` when
/// the line was longer than `max` (its rest is discarded), or `None` at EOF.
async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<bool>> {
    buf.clear();
    let n = (&mut *r)
        .take(max as u64 + 1)
        .read_until(b'\n', buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        return Ok(Some(true));
    }
    if buf.len() <= max {
        return Ok(Some(true)); // the last line, without a newline
    }
    let mut rest = Vec::new();
    loop {
        rest.clear();
        let n = (&mut *r)
            .take(64 * 1024)
            .read_until(b'\n', &mut rest)
            .await?;
        if n == 0 || rest.last() == Some(&b'\n') {
            return Ok(Some(false));
        }
    }
}

async fn log_stderr<R: AsyncBufRead + Unpin>(name: Arc<str>, mut stderr: R) {
    let mut buf = Vec::new();
    while let Ok(Some(_)) = read_line(&mut stderr, &mut buf, MAX_LINE_BYTES).await {
        let cut = &buf[..buf.len().min(MAX_LOG_LINE_BYTES)];
        let line = String::from_utf8_lossy(cut);
        if !line.trim().is_empty() {
            tracing::info!(target = %name, line = %line.trim_end(), "stdio target stderr");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_split_and_overlong_ones_skipped() {
        let input: &[u8] = b"{\"a\":1}\r\n0123456789abc\nlast";
        let mut r = BufReader::new(input);
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut r, &mut buf, 10).await.ok(), Some(Some(true)));
        assert_eq!(buf, b"{\"a\":1}");
        assert_eq!(
            read_line(&mut r, &mut buf, 10).await.ok(),
            Some(Some(false))
        );
        assert_eq!(read_line(&mut r, &mut buf, 10).await.ok(), Some(Some(true)));
        assert_eq!(buf, b"last");
        assert_eq!(read_line(&mut r, &mut buf, 10).await.ok(), Some(None));
    }

    #[test]
    fn env_values_stay_out_of_debug_output() {
        let spec = StdioSpec {
            command: "srv".into(),
            args: vec![],
            env: vec![("TOKEN".into(), "s3cret".into())],
            mode: StdioMode::PerSession,
        };
        let shown = format!("{spec:?}");
        assert!(
            shown.contains("TOKEN") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
