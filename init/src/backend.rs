//! The iptables backend: choosing legacy or nft, and running `*-save` and
//! `*-restore --noflush` for a family.
//!
//! This is the only module that runs external programs. It knows nothing about which
//! rules we want; it reads and writes restore text. Every program run is bounded by a
//! timeout, and no file is written (the xtables lock is iptables' own business).

use std::fmt;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::identity::{effective_ids, is_root};
use crate::net::Family;
use crate::settings::IptablesMode;

/// How long any one iptables program may run.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(30);
/// Seconds `iptables-legacy-restore` waits for the xtables lock, which every network
/// namespace on the host shares.
const LOCK_WAIT_SECS: &str = "10";
/// The chain the probe creates and deletes in one transaction.
pub const PROBE_CHAIN: &str = "AGENTMESH_PROBE";

/// An iptables implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// x_tables, through `iptables-legacy*`.
    Legacy,
    /// nf_tables, through `iptables-nft*`.
    Nft,
}

impl Backend {
    /// Both backends, legacy first (the order `cleanup` visits them in).
    pub const ALL: [Backend; 2] = [Backend::Legacy, Backend::Nft];

    /// The program that prints the family's tables.
    pub fn save_program(self, family: Family) -> &'static str {
        match (self, family) {
            (Backend::Legacy, Family::V4) => "iptables-legacy-save",
            (Backend::Legacy, Family::V6) => "ip6tables-legacy-save",
            (Backend::Nft, Family::V4) => "iptables-nft-save",
            (Backend::Nft, Family::V6) => "ip6tables-nft-save",
        }
    }

    /// The program that loads restore text for the family.
    pub fn restore_program(self, family: Family) -> &'static str {
        match (self, family) {
            (Backend::Legacy, Family::V4) => "iptables-legacy-restore",
            (Backend::Legacy, Family::V6) => "ip6tables-legacy-restore",
            (Backend::Nft, Family::V4) => "iptables-nft-restore",
            (Backend::Nft, Family::V6) => "ip6tables-nft-restore",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
        })
    }
}

/// A failure to run an iptables program, or its refusal.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The program is not installed (or not on `PATH`).
    #[error("{program} not found: install the iptables package ({source})")]
    Missing {
        /// The program.
        program: &'static str,
        /// The spawn error.
        source: std::io::Error,
    },
    /// The program could not be started or talked to.
    #[error("{program} could not be run: {source}")]
    Io {
        /// The program.
        program: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The program ran longer than allowed and was killed.
    #[error("{program} did not finish within {}s and was killed", PROGRAM_TIMEOUT.as_secs())]
    Timeout {
        /// The program.
        program: &'static str,
    },
    /// The program exited non-zero.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: &'static str,
        /// Its exit status.
        status: String,
        /// What it printed on stderr, trimmed.
        stderr: String,
    },
    /// No backend passed the probe in `auto` mode.
    #[error("no usable iptables backend: nft: {nft}; legacy: {legacy}")]
    NoneUsable {
        /// Why nft failed.
        nft: Box<BackendError>,
        /// Why legacy failed.
        legacy: Box<BackendError>,
    },
}

/// One family of one backend: the handle every read and write goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Iptables {
    /// The backend.
    pub backend: Backend,
    /// The family.
    pub family: Family,
}

impl Iptables {
    /// The `*nat` section of `*-save` (without the `-t` flag, which would make legacy
    /// create the table just to print it); empty when the table does not exist.
    ///
    /// Without root, legacy cannot list its tables (`/proc/net/ip_tables_names` is
    /// root-only); then the nat table is asked for by name, which works with
    /// CAP_NET_ADMIN + CAP_NET_RAW.
    pub fn save_nat(&self) -> Result<String, BackendError> {
        let program = self.backend.save_program(self.family);
        let output = match run(program, &[], None) {
            Ok(output) => output,
            Err(BackendError::Failed { .. }) if !is_root() => run(program, &["-t", "nat"], None)?,
            Err(e) => return Err(e),
        };
        Ok(nat_section(&output))
    }

    /// Loads `text` with `*-restore --noflush`, in one transaction.
    pub fn restore(&self, text: &str) -> Result<(), BackendError> {
        let program = self.backend.restore_program(self.family);
        let mut args = vec!["--noflush"];
        if self.backend == Backend::Legacy {
            args.extend(["--wait", LOCK_WAIT_SECS]);
        }
        run(program, &args, Some(text)).map(|_| ())
    }

    /// Proves we can write this family's nat table: creates and deletes
    /// [`PROBE_CHAIN`] in one restore, which leaves nothing behind.
    pub fn probe(&self) -> Result<(), BackendError> {
        self.restore(&format!(
            "*nat\n:{PROBE_CHAIN} - [0:0]\n-X {PROBE_CHAIN}\nCOMMIT\n"
        ))
    }

    /// Whether legacy (or nft) tables of this family already hold any rule or
    /// user-defined chain. A failure to read counts as "none" (the backend cannot be the
    /// one in use if we cannot even read it) and is returned for the log.
    ///
    /// Without root, legacy cannot list its tables, so nat and filter are asked for by
    /// name (which creates them, empty, if they did not exist: harmless, and only then).
    pub fn has_rules(&self) -> (bool, Option<BackendError>) {
        let program = self.backend.save_program(self.family);
        let text = match run(program, &[], None) {
            Err(BackendError::Failed { .. }) if !is_root() => run(program, &["-t", "nat"], None)
                .and_then(|nat| run(program, &["-t", "filter"], None).map(|filter| nat + &filter)),
            other => other,
        };
        match text {
            Ok(text) => (text.lines().any(is_rule_or_user_chain), None),
            Err(e) => (false, Some(e)),
        }
    }
}

/// Whether a save line is a rule or a user-defined chain (built-ins are upper case and
/// have a policy, user chains have `-`).
fn is_rule_or_user_chain(line: &str) -> bool {
    line.starts_with("-A ")
        || (line.starts_with(':') && line.split_whitespace().nth(1) == Some("-"))
}

/// The lines between `*nat` and its `COMMIT`, without counters' comment lines.
pub fn nat_section(save: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in save.lines() {
        let line = line.trim_end();
        if line == "*nat" {
            inside = true;
        } else if inside && line == "COMMIT" {
            break;
        } else if inside && !line.starts_with('#') && !line.is_empty() {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Picks the backend for `families` and proves it with the probe.
///
/// `auto`: legacy when legacy tables already hold rules, else nft; if the nft probe
/// fails (a kernel without nf_tables), legacy is probed as a fallback.
pub fn choose(
    mode: IptablesMode,
    families: &[Family],
    log: &mut dyn FnMut(String),
) -> Result<Backend, BackendError> {
    let probe_all = |backend: Backend| -> Result<(), BackendError> {
        families
            .iter()
            .try_for_each(|&family| Iptables { backend, family }.probe())
    };
    match mode {
        IptablesMode::Legacy => probe_all(Backend::Legacy).map(|_| Backend::Legacy),
        IptablesMode::Nft => probe_all(Backend::Nft).map(|_| Backend::Nft),
        IptablesMode::Auto => {
            let mut legacy_in_use = false;
            for &family in families {
                let (has, err) = Iptables {
                    backend: Backend::Legacy,
                    family,
                }
                .has_rules();
                if let Some(e) = err {
                    log(format!(
                        "{family}: cannot read legacy tables, assuming none: {e}"
                    ));
                }
                legacy_in_use |= has;
            }
            if legacy_in_use {
                log("legacy iptables rules exist in this namespace: using legacy".into());
                return probe_all(Backend::Legacy).map(|_| Backend::Legacy);
            }
            match probe_all(Backend::Nft) {
                Ok(()) => Ok(Backend::Nft),
                Err(nft) => {
                    log(format!("nft probe failed, trying legacy: {nft}"));
                    match probe_all(Backend::Legacy) {
                        Ok(()) => Ok(Backend::Legacy),
                        Err(legacy) => Err(BackendError::NoneUsable {
                            nft: Box::new(nft),
                            legacy: Box::new(legacy),
                        }),
                    }
                }
            }
        }
    }
}

/// Runs `program` with `args`, feeding `stdin`, and returns its stdout; kills it after
/// [`PROGRAM_TIMEOUT`].
fn run(program: &'static str, args: &[&str], stdin: Option<&str>) -> Result<String, BackendError> {
    let io = |source| BackendError::Io { program, source };
    let mut command = Command::new(program);
    // Without root the default xtables lock, /run/xtables.lock, is not writable (and we
    // write nowhere but /tmp): legacy gets a per-UID lock there unless one is set.
    if let Some((uid, _)) = effective_ids().filter(|&(uid, _)| uid != 0)
        && std::env::var_os("XTABLES_LOCKFILE").is_none()
    {
        command.env(
            "XTABLES_LOCKFILE",
            format!("/tmp/agentmesh-xtables-{uid}.lock"),
        );
    }
    let mut child = command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                BackendError::Missing { program, source }
            } else {
                BackendError::Io { program, source }
            }
        })?;
    let stdout = child.stdout.take().map(read_in_background);
    let stderr = child.stderr.take().map(read_in_background);
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Dropping the pipe after writing closes it, so the program sees end of input.
        pipe.write_all(text.as_bytes()).map_err(io)?;
    }
    let deadline = Instant::now() + PROGRAM_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(io)? {
            break status;
        }
        if Instant::now() >= deadline {
            // Best effort: the program may exit between the check and the kill.
            let _ = child.kill();
            let _ = child.wait();
            return Err(BackendError::Timeout { program });
        }
        thread::sleep(Duration::from_millis(5));
    };
    let stdout = stdout.map(collect).unwrap_or_default();
    let stderr = stderr.map(collect).unwrap_or_default();
    if status.success() {
        Ok(stdout)
    } else {
        Err(BackendError::Failed {
            program,
            status: status.to_string(),
            stderr: stderr.trim().to_string(),
        })
    }
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        // A read error leaves what was read so far; the exit status tells the story.
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn collect(handle: thread::JoinHandle<String>) -> String {
    handle.join().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_section_skips_other_tables_and_comments() {
        let save = "# Generated by iptables-save\n*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n\
                    COMMIT\n*nat\n:OUTPUT ACCEPT [3:180]\n-A OUTPUT -j RETURN\nCOMMIT\n# Completed\n";
        assert_eq!(
            nat_section(save),
            ":OUTPUT ACCEPT [3:180]\n-A OUTPUT -j RETURN\n"
        );
        assert_eq!(nat_section(""), "");
    }

    #[test]
    fn built_in_chains_alone_are_not_rules() {
        assert!(!is_rule_or_user_chain(":OUTPUT ACCEPT [0:0]"));
        assert!(is_rule_or_user_chain(":KUBE-SERVICES - [0:0]"));
        assert!(is_rule_or_user_chain("-A INPUT -j ACCEPT"));
    }

    #[test]
    fn missing_program_is_reported_as_missing() {
        let err = run("agentmesh-no-such-iptables", &[], None).expect_err("missing");
        assert!(matches!(err, BackendError::Missing { .. }), "{err}");
    }
}
