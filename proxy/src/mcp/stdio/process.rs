//! One stdio target process: spawning it, the tasks reading and writing its pipes,
//! requests (under the gateway's upstream ids, so cancellations name them), what its
//! stdout carries routed by an [`Inbox`], and killing it.

use std::io;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

use super::StdioSpec;
use crate::mcp::inbox::Inbox;
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

/// One running child process and the tasks reading and writing its pipes.
#[derive(Debug)]
pub(super) struct StdioProcess {
    pub(super) spec: Arc<StdioSpec>,
    stdin: mpsc::Sender<Vec<u8>>,
    /// Where what the process writes goes; closed when its stdout ends.
    inbox: Arc<Inbox>,
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
        let inbox = Arc::new(Inbox::default());
        tokio::spawn(write_stdin(stdin, rx));
        tokio::spawn(read_stdout(
            name.clone(),
            BufReader::new(stdout),
            tx.clone(),
            inbox.clone(),
        ));
        tokio::spawn(log_stderr(name.clone(), BufReader::new(stderr)));
        Ok(Arc::new(StdioProcess {
            spec: spec.clone(),
            stdin: tx,
            inbox,
            child: tokio::sync::Mutex::new(child),
            last_used: Mutex::new(Instant::now()),
            init: OnceLock::new(),
        }))
    }

    pub(super) fn is_running(&self) -> bool {
        !self.inbox.is_closed()
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

    /// Sends `msg` (under its own id: the gateway's upstream ids are unique across
    /// clients, see `relay`) and waits for the answer; what the process sends meanwhile
    /// goes to `relay` (see `inbox`).
    pub(super) async fn request(
        &self,
        msg: &Value,
        timeout: Duration,
        relay: Option<&Relay>,
    ) -> Result<Reply, TargetError> {
        self.touch();
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        let (tx, rx) = oneshot::channel();
        let _waiting = self.inbox.wait(id.to_string(), tx, relay.cloned());
        // Checked after registering: the reader closes the inbox once, on exit.
        if !self.is_running() {
            return Err(TargetError::Exited);
        }
        self.send(msg).await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(TargetError::Exited),
            Err(_) => Err(TargetError::Timeout(timeout)),
        }
    }

    /// Routes what the process sends outside requests (list changes, log messages,
    /// server requests) to `to` as well, until its receiver is dropped.
    pub(super) fn listen(&self, to: mpsc::UnboundedSender<Value>) {
        self.inbox.listen(to);
    }

    /// Writes one message line.
    pub(super) async fn send(&self, msg: &Value) -> Result<(), TargetError> {
        let mut line = serde_json::to_vec(msg).map_err(|e| TargetError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.stdin.send(line).await.map_err(|_| TargetError::Exited)
    }

    /// SIGKILL, and waits until the process is reaped.
    pub(super) async fn kill(&self) {
        self.inbox.close();
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

/// Reads messages until EOF, routed by the inbox: answers to their waiting request,
/// the rest to relays and listeners; a server request nobody takes is answered here
/// (`ping` with `{}`, others with "method not found") so the process does not wait, a
/// notification nobody takes is dropped. On EOF every waiting request fails.
async fn read_stdout<R: AsyncBufRead + Unpin>(
    name: Arc<str>,
    mut stdout: R,
    stdin: mpsc::Sender<Vec<u8>>,
    inbox: Arc<Inbox>,
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
        let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
        let id = msg.get("id").cloned();
        match (method, id) {
            (Some(method), id) => {
                let Some(msg) = inbox.route(msg) else {
                    continue;
                };
                drop(msg);
                let Some(id) = id else {
                    tracing::debug!(target = %name, method, "stdio target notification for nobody dropped");
                    continue;
                };
                let answer = if method == "ping" {
                    jsonrpc::result(&id, json!({}))
                } else {
                    json!({ "jsonrpc": "2.0", "id": id, "error": {
                        "code": code::METHOD_NOT_FOUND,
                        "message": format!("no client is listening for {method}"),
                    }})
                };
                if let Ok(mut line) = serde_json::to_vec(&answer) {
                    line.push(b'\n');
                    let _ = stdin.send(line).await;
                }
            }
            (None, Some(id)) => {
                if let Some(reply) = reply_from(&msg, &id) {
                    inbox.answer(&id, reply);
                }
            }
            (None, None) => {}
        }
    }
    inbox.close();
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
