//! Client sessions: the self-describing, encrypted `Mcp-Session-Id`, and the small
//! per-process table that expires idle sessions and remembers upstream sessions opened
//! after the id was issued.
//!
//! Session id format: `base64url(0x01 || nonce[12] || AES-256-GCM(json))`, unpadded, with
//! the backend key as associated data (an id from one backend is refused by another).
//! The JSON is a [`SessionState`]: the protocol version negotiated with the client and,
//! per target, its upstream session id and version. Any replica holding the key can
//! serve the session, with no shared store; the table only adds what one process
//! learned later (a re-initialized upstream session) and idle expiry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;

use super::upstream::UpstreamSession;

/// Version byte leading every session id.
const FORMAT_V1: u8 = 1;
/// Largest session id accepted (a bigger one is not ours).
const MAX_ID_LEN: usize = 8 * 1024;

/// What a client session id carries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionState {
    /// Protocol version negotiated with the client.
    #[serde(rename = "v")]
    pub version: String,
    /// The upstream sessions opened at `initialize`, by target.
    #[serde(rename = "t")]
    pub upstreams: Vec<UpstreamSession>,
}

/// Why a session id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Not an id this backend issued (bad encoding, wrong key, tampered).
    #[error("unknown session")]
    Unknown,
    /// Ended by the client (DELETE) or expired after being idle.
    #[error("session ended or expired")]
    Ended,
}

/// Encrypts and decrypts session ids of one backend.
pub struct SessionCipher {
    cipher: Aes256Gcm,
    aad: Vec<u8>,
}

impl std::fmt::Debug for SessionCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionCipher(<key>)")
    }
}

impl SessionCipher {
    /// A cipher with `key`, binding ids to `backend`.
    pub fn new(key: &[u8; 32], backend: &str) -> SessionCipher {
        SessionCipher {
            cipher: Aes256Gcm::new(key.into()),
            aad: backend.as_bytes().to_vec(),
        }
    }

    /// The session id for `state`.
    pub fn seal(&self, state: &SessionState) -> String {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        // Serializing plain strings cannot fail; encrypting fails only on absurd lengths.
        let plain = serde_json::to_vec(state).unwrap_or_default();
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &self.aad,
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + nonce.len() + sealed.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The state in a session id, if this backend issued it.
    pub fn open(&self, id: &str) -> Result<SessionState, SessionError> {
        if id.len() > MAX_ID_LEN {
            return Err(SessionError::Unknown);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(id)
            .map_err(|_| SessionError::Unknown)?;
        let Some((&FORMAT_V1, rest)) = raw.split_first() else {
            return Err(SessionError::Unknown);
        };
        if rest.len() < 12 + 16 {
            return Err(SessionError::Unknown);
        }
        let (nonce, sealed) = rest.split_at(12);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &self.aad,
                },
            )
            .map_err(|_| SessionError::Unknown)?;
        serde_json::from_slice(&plain).map_err(|_| SessionError::Unknown)
    }
}

/// Reads a session key file: 32 bytes, base64 (standard alphabet), surrounding
/// whitespace ignored. The error never contains the file's content.
pub fn read_key_file(path: &str) -> Result<[u8; 32], String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| format!("{path} does not hold base64 text"))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "{path} must hold a 256-bit key (32 bytes, base64), not {} bytes",
            bytes.len()
        )
    })
}

/// The key used when none is configured: generated once per process, so config reloads
/// keep sessions valid (a restart does not).
pub fn generated_key() -> [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    *KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        rand::rng().fill_bytes(&mut k);
        k
    })
}

/// What this process knows about the sessions it served.
#[derive(Debug, Default)]
struct Entry {
    last_seen: Option<Instant>,
    ended: bool,
    /// Upstream sessions opened after the id was issued (target added, target down at
    /// `initialize`, upstream session re-initialized), by target.
    later: HashMap<String, UpstreamSession>,
}

/// Sessions seen by this process: idle expiry, ends, and later upstream sessions.
#[derive(Debug)]
pub struct SessionTable {
    entries: Mutex<HashMap<String, Entry>>,
    idle_ms: AtomicU64,
    last_sweep: Mutex<Option<Instant>>,
}

impl SessionTable {
    /// An empty table expiring sessions idle for longer than `idle`.
    pub fn new(idle: Duration) -> SessionTable {
        SessionTable {
            entries: Mutex::default(),
            idle_ms: AtomicU64::new(idle.as_millis() as u64),
            last_sweep: Mutex::default(),
        }
    }

    /// Changes the idle timeout (a config reload).
    pub fn set_idle_timeout(&self, idle: Duration) {
        self.idle_ms
            .store(idle.as_millis() as u64, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms.load(Ordering::Relaxed))
    }

    /// Records use of session `id` now. A session this process has not seen (issued by
    /// another replica, or before a restart) is taken in. Returns the upstream sessions
    /// opened later, by target.
    pub fn touch(&self, id: &str) -> Result<HashMap<String, UpstreamSession>, SessionError> {
        let now = Instant::now();
        let idle = self.idle();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.entry(id.to_owned()).or_default();
        if entry.ended {
            return Err(SessionError::Ended);
        }
        if entry
            .last_seen
            .is_some_and(|t| now.duration_since(t) > idle)
        {
            entry.ended = true;
            entry.last_seen = Some(now);
            return Err(SessionError::Ended);
        }
        entry.last_seen = Some(now);
        Ok(entry.later.clone())
    }

    /// Records use of a session the gateway holds itself (no client-facing id): like
    /// [`SessionTable::touch`], but an ended or expired one starts over, empty.
    pub fn touch_held(&self, id: &str) -> HashMap<String, UpstreamSession> {
        if let Ok(later) = self.touch(id) {
            return later;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.entry(id.to_owned()).or_default();
        *entry = Entry {
            last_seen: Some(Instant::now()),
            ..Entry::default()
        };
        HashMap::new()
    }

    /// Remembers an upstream session opened for `id` after the id was issued.
    pub fn remember(&self, id: &str, session: UpstreamSession) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.get_mut(id) {
            entry.later.insert(session.target.clone(), session);
        }
    }

    /// Marks `id` ended; returns the later upstream sessions to end with it.
    pub fn end(&self, id: &str) -> Vec<UpstreamSession> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.entry(id.to_owned()).or_default();
        entry.ended = true;
        entry.last_seen = Some(Instant::now());
        entry.later.drain().map(|(_, s)| s).collect()
    }

    /// At most once per quarter of the idle timeout: marks idle sessions ended and
    /// forgets ended ones after a further idle period. Returns the ids newly expired (with
    /// their later upstream sessions), whose upstream sessions the caller should end.
    pub fn sweep(&self) -> Vec<(String, Vec<UpstreamSession>)> {
        let now = Instant::now();
        let idle = self.idle();
        {
            let mut last = self
                .last_sweep
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|t| now.duration_since(t) < idle / 4) {
                return Vec::new();
            }
            *last = Some(now);
        }
        let mut expired = Vec::new();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|id, e| {
            let quiet = e.last_seen.is_none_or(|t| now.duration_since(t) > idle);
            if e.ended {
                return !quiet;
            }
            if quiet {
                e.ended = true;
                e.last_seen = Some(now);
                expired.push((id.clone(), e.later.drain().map(|(_, s)| s).collect()));
            }
            true
        });
        expired
    }

    /// Sessions currently open (seen, not ended).
    pub fn active(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|e| !e.ended)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> SessionState {
        SessionState {
            version: "2025-06-18".into(),
            upstreams: vec![UpstreamSession {
                target: "docs".into(),
                id: Some("abc".into()),
                version: "2025-06-18".into(),
                sse: false,
            }],
        }
    }

    #[test]
    fn session_id_round_trips_and_is_opaque() {
        let c = SessionCipher::new(&[7; 32], "mcp");
        let id = c.seal(&state());
        assert!(!id.contains("docs") && !id.contains("abc"), "{id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(c.open(&id), Ok(state()));
        assert_ne!(c.seal(&state()), id, "a fresh nonce per id");
    }

    #[test]
    fn tampered_foreign_or_garbage_ids_are_unknown() {
        let c = SessionCipher::new(&[7; 32], "mcp");
        let id = c.seal(&state());
        let mut raw = URL_SAFE_NO_PAD.decode(&id).unwrap_or_default();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(
            c.open(&URL_SAFE_NO_PAD.encode(raw)),
            Err(SessionError::Unknown)
        );
        assert_eq!(
            SessionCipher::new(&[8; 32], "mcp").open(&id),
            Err(SessionError::Unknown)
        );
        assert_eq!(
            SessionCipher::new(&[7; 32], "other").open(&id),
            Err(SessionError::Unknown)
        );
        for junk in [
            "",
            "AQ",
            "not base64!",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(c.open(junk), Err(SessionError::Unknown), "{junk}");
        }
    }

    #[test]
    fn ended_and_idle_sessions_are_refused() {
        let t = SessionTable::new(Duration::from_millis(30));
        assert!(t.touch("a").is_ok());
        assert!(t.touch("b").is_ok());
        t.end("a");
        assert_eq!(t.touch("a"), Err(SessionError::Ended));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(t.touch("b"), Err(SessionError::Ended));
        assert_eq!(t.active(), 0);
    }

    #[test]
    fn held_sessions_start_over_after_expiry() {
        let t = SessionTable::new(Duration::from_millis(30));
        assert!(t.touch_held("held:x").is_empty());
        t.remember("held:x", state().upstreams[0].clone());
        assert_eq!(t.touch_held("held:x").len(), 1);
        std::thread::sleep(Duration::from_millis(40));
        assert!(t.touch_held("held:x").is_empty(), "expired: starts over");
        assert_eq!(t.active(), 1);
    }

    #[test]
    fn later_upstream_sessions_are_remembered() {
        let t = SessionTable::new(Duration::from_secs(60));
        t.touch("a").ok();
        t.remember("a", state().upstreams[0].clone());
        assert_eq!(t.touch("a").map(|m| m.len()), Ok(1));
        assert_eq!(t.end("a").len(), 1);
    }

    #[test]
    fn key_file_must_hold_32_base64_bytes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{}\n", STANDARD.encode([1u8; 32]))).unwrap_or_default();
        assert_eq!(read_key_file(&path.display().to_string()), Ok([1; 32]));
        std::fs::write(&path, STANDARD.encode([1u8; 16])).unwrap_or_default();
        let err = read_key_file(&path.display().to_string())
            .err()
            .unwrap_or_default();
        assert!(err.contains("256-bit") && !err.contains("AQEB"), "{err}");
    }
}
