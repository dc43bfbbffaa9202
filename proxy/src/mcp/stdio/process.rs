//! One stdio target process: spawning it, the tasks reading and writing its pipes,
//! requests under the process's own ids, and killing it.

use std::collections::HashMap;
use std::io;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

use super::StdioSpec;
use crate::mcp::jsonrpc::{self, code};
use crate::mcp::relay::Relay;
use crate::mcp::upstream::{
    Reply, TargetError, initialize_request, negotiated_version, reply_from,
};

/// Longest stdout line (one JSON-RPC message) read; a longer one is skipped.
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;
/// Longest stderr line logged; the rest of the line is cut.
const MAX_LOG_LINE_BYTES: usize = 4096;
/// Messages queued for a process's stdin before senders wait.
const STDIN_QUEUE: usize = 64;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>;
/// Relays of requests in flight, by their progress token (as JSON text).
type Progress = Arc<Mutex<HashMap<String, Relay>>>;

/// One running child process and the tasks reading and writing its pipes.
#[derive(Debug)]
pub(super) struct StdioProcess {
    pub(super) spec: Arc<StdioSpec>,
    stdin: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    progress: Progress,
    next_id: AtomicU64,
    exited: Arc<AtomicBool>,
    child: tokio::sync::Mutex<Child>,
    last_used: Mutex<Instant>,
    /// The negotiated version and initialize result.
    pub(super) init: OnceLock<(String, Value)>,
}

impl StdioProcess {
    pub(super) fn spawn(
        name: &Arc<str>,
        spec: &Arc<StdioSpec>,
    ) -> Result<Arc<StdioProcess>, TargetError> {
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
        let progress: Progress = Arc::default();
        let exited = Arc::new(AtomicBool::new(false));
        tokio::spawn(write_stdin(stdin, rx));
        tokio::spawn(read_stdout(
            name.clone(),
            BufReader::new(stdout),
            tx.clone(),
            pending.clone(),
            progress.clone(),
            exited.clone(),
        ));
        tokio::spawn(log_stderr(name.clone(), BufReader::new(stderr)));
        Ok(Arc::new(StdioProcess {
            spec: spec.clone(),
            stdin: tx,
            pending,
            progress,
            next_id: AtomicU64::new(1),
            exited,
            child: tokio::sync::Mutex::new(child),
            last_used: Mutex::new(Instant::now()),
            init: OnceLock::new(),
        }))
    }

    pub(super) fn is_running(&self) -> bool {
        !self.exited.load(Ordering::Acquire)
    }

    pub(super) fn touch(&self) {
        *self
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    pub(super) fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
    }

    /// `initialize`, then `notifications/initialized`.
    pub(super) async fn handshake(
        &self,
        version: &str,
        timeout: Duration,
    ) -> Result<(String, Value), TargetError> {
        let msg = initialize_request(&json!(0), version);
        let result = self
            .request(&msg, timeout, None)
            .await?
            .map_err(|e| TargetError::Protocol(format!("initialize was refused: {e}")))?;
        let negotiated = negotiated_version(&result, version);
        self.send(&jsonrpc::notification("notifications/initialized", None))
            .await?;
        let _ = self.init.set((negotiated.clone(), result.clone()));
        Ok((negotiated, result))
    }

    /// Sends `msg` under an id of this process's own and waits for the answer.
    pub(super) async fn request(
        &self,
        msg: &Value,
        timeout: Duration,
        relay: Option<&Relay>,
    ) -> Result<Reply, TargetError> {
        let _listening = relay.and_then(|r| {
            let token = r.progress_token()?.to_string();
            let mut progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
            progress.insert(token.clone(), r.clone());
            Some(ProgressGuard {
                progress: &self.progress,
                token,
            })
        });
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
    pub(super) async fn send(&self, msg: &Value) -> Result<(), TargetError> {
        let mut line = serde_json::to_vec(msg).map_err(|e| TargetError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.stdin.send(line).await.map_err(|_| TargetError::Exited)
    }

    /// SIGKILL, and waits until the process is reaped.
    pub(super) async fn kill(&self) {
        self.exited.store(true, Ordering::Release);
        let mut child = self.child.lock().await;
        if let Err(e) = child.kill().await {
            tracing::debug!(error = %e, "stdio process already gone");
        }
    }
}

/// Stops relaying a request's progress when it ends.
struct ProgressGuard<'a> {
    progress: &'a Progress,
    token: String,
}

impl Drop for ProgressGuard<'_> {
    fn drop(&mut self) {
        self.progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.token);
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
    progress: Progress,
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
            (Some("notifications/progress"), None) => {
                let token = msg.pointer("/params/progressToken").map(Value::to_string);
                let relay = token.and_then(|t| {
                    let progress = progress.lock().unwrap_or_else(PoisonError::into_inner);
                    progress.get(&t).cloned()
                });
                if !relay.is_some_and(|r| r.forward(msg)) {
                    tracing::debug!(target = %name, "stdio target progress for no waiting request dropped");
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
}
