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
//! Request ids are the gateway's upstream ids (unique across clients, see `relay`), so
//! concurrent requests from many clients never collide and a client's cancellation
//! names the request the process knows. What the process writes besides answers is
//! routed as `inbox` says, like a legacy SSE stream: progress to the request whose
//! token it carries; log messages, list changes and server-to-client requests
//! (sampling, elicitation, roots) to the most recent request in flight with a relay,
//! else to the clients' server-to-client streams (`open_stream`: for a shared process,
//! the streams of every session it serves). A server request nobody takes is answered
//! (`ping` with `{}`, others with "method not found"); the client's answer to a relayed
//! one is written to the process's stdin under the process's own id.
//! Processes are killed (SIGKILL, then reaped) when ended, when idle, and when the last
//! reference goes (`kill_on_drop`); a proxy killed outright leaves them an EOF on stdin,
//! on which MCP servers exit.
//!
//! This module must not know about client sessions, names or federation.

use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use serde_json::Value;

use self::process::StdioProcess;
use super::relay::Relay;
use super::streamable::EventStream;
use super::upstream::{Reply, TargetError, UpstreamSession};

mod pool;
mod process;

pub use self::pool::StdioPool;

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
                    sse: false,
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
                    sse: false,
                };
                Ok((session, result))
            }
        }
    }

    /// Sends a request to the session's process and waits for its answer; progress it
    /// reports under the request's token goes to `relay`.
    pub async fn request(
        &self,
        session: &UpstreamSession,
        msg: &Value,
        timeout: Duration,
        relay: Option<&Relay>,
    ) -> Result<Reply, TargetError> {
        let process = self.process(session, timeout).await?;
        match (process.request(msg, timeout, relay).await, self.spec.mode) {
            // A per-session process that died: a new session gets a new one.
            (Err(TargetError::Exited), StdioMode::PerSession) => Err(TargetError::SessionGone),
            // The shared one died before this request reached it: once more, on a new one.
            (Err(TargetError::Exited), StdioMode::Shared) => {
                let process = self.shared(&session.version, timeout).await?;
                process.request(msg, timeout, relay).await
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

    /// What the session's process sends outside requests, as a server-to-client
    /// stream (a shared process is not started for it).
    pub fn open_stream(&self, session: &UpstreamSession) -> Result<EventStream, TargetError> {
        let process = match self.spec.mode {
            StdioMode::PerSession => self.per_session(session)?,
            StdioMode::Shared => self
                .pool
                .get(&(self.name.clone(), None))
                .filter(|p| p.is_running())
                .ok_or(TargetError::Exited)?,
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        process.listen(tx);
        Ok(EventStream::from_channel(rx))
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

#[cfg(test)]
mod tests {
    use super::*;

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
