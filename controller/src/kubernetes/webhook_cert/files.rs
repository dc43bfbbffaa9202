//! The certificate files the webhook's HTTPS server reads: `tls.crt`, `tls.key` and
//! `ca.crt` in one directory.
//!
//! [`write`] replaces all three at once, the way the kubelet updates a Secret volume: the
//! files live in a fresh hidden directory, the symlink `..data` is renamed onto it (one
//! atomic step), and `tls.crt` and the others are symlinks through `..data`. A reader
//! that opens `tls.crt` and then `tls.key` may see an old pair or a new pair, never half
//! of each, as long as it opens both within one swap (the server re-reads on change).
//! [`check`] is for files someone else writes (cert-manager through a Secret volume).
//!
//! This module must not decide what to write: it only writes and reads files.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::issue::CertificateSet;

/// The serving certificate file.
pub const CERT_FILE: &str = "tls.crt";
/// The serving key file.
pub const KEY_FILE: &str = "tls.key";
/// The CA certificate file.
pub const CA_FILE: &str = "ca.crt";
/// The symlink naming the directory of the current files.
const DATA_LINK: &str = "..data";

/// Why the certificate files could not be written or are not a usable pair. Each names
/// the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum CertFileError {
    /// A file or directory could not be read, written or linked.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file does not hold what it must.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertFileError {
    move |source| CertFileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes the serving certificate, its key and the CA into `dir` (created if missing),
/// replacing the three at once. Returns false when the files already held exactly
/// this, and nothing was written.
pub fn write(dir: &Path, set: &CertificateSet) -> Result<bool, CertFileError> {
    let contents = [
        (CERT_FILE, set.cert.as_str()),
        (KEY_FILE, set.key.as_str()),
        (CA_FILE, set.ca_cert.as_str()),
    ];
    let unchanged = contents.iter().all(|(name, text)| {
        std::fs::read_to_string(dir.join(name)).is_ok_and(|held| held == *text)
    });
    if unchanged {
        return Ok(false);
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let version = format!("..{stamp}.{}", std::process::id());
    let version_dir = dir.join(&version);
    std::fs::create_dir(&version_dir).map_err(io(&version_dir))?;
    for (name, text) in contents {
        let path = version_dir.join(name);
        write_private(&path, text)?;
    }
    // Swap `..data` onto the new directory in one rename.
    let staged = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&staged);
    std::os::unix::fs::symlink(&version, &staged).map_err(io(&staged))?;
    let data = dir.join(DATA_LINK);
    let previous = std::fs::read_link(&data).ok();
    std::fs::rename(&staged, &data).map_err(io(&data))?;
    // The visible names point through `..data` (made once; a plain file left by an
    // older writer is replaced by the link, again by a rename).
    for (name, _) in contents {
        let path = dir.join(name);
        let target = Path::new(DATA_LINK).join(name);
        if std::fs::read_link(&path).ok().as_deref() == Some(target.as_path()) {
            continue;
        }
        let staged = dir.join(format!("..{name}_tmp"));
        let _ = std::fs::remove_file(&staged);
        std::os::unix::fs::symlink(&target, &staged).map_err(io(&staged))?;
        std::fs::rename(&staged, &path).map_err(io(&path))?;
    }
    if let Some(previous) = previous
        && previous != Path::new(&version)
    {
        let old = dir.join(previous);
        // Only our own versions: names that start with "..".
        if old
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".."))
        {
            let _ = std::fs::remove_dir_all(old);
        }
    }
    Ok(true)
}

/// Writes `text` to a new file only its owner can read.
fn write_private(path: &Path, text: &str) -> Result<(), CertFileError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    file.write_all(text.as_bytes()).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

/// Checks that `dir` holds `tls.crt` and `tls.key`, a certificate and the key that
/// belongs to it; returns when the certificate expires.
pub fn check(dir: &Path) -> Result<SystemTime, CertFileError> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let cert_text = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
    let key_text = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
    let invalid = |path: &Path, reason: String| CertFileError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(&cert_path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(&cert_path, "holds no PEM certificate".into()));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_text.as_bytes())
        .map_err(|e| invalid(&key_path, format!("not a PEM key file: {e}")))?
        .ok_or_else(|| invalid(&key_path, "holds no PEM private key".into()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| invalid(&key_path, format!("unusable private key: {e}")))?;
    rustls::sign::CertifiedKey::new(certs, signing)
        .keys_match()
        .map_err(|e| {
            invalid(
                &key_path,
                format!("is not the key of {}: {e}", cert_path.display()),
            )
        })?;
    super::issue::not_after(&cert_text).map_err(|reason| invalid(&cert_path, reason))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::kubernetes::webhook_cert::issue::{Lifetimes, issue_all, service_names};

    fn set() -> CertificateSet {
        issue_all(
            &service_names("agentmesh-controller", "agentmesh-system"),
            &Lifetimes::default(),
            SystemTime::now(),
        )
        .unwrap()
    }

    #[test]
    fn written_files_are_replaced_at_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("webhook");
        let first = set();
        assert!(write(&files, &first).unwrap());
        assert!(!write(&files, &first).unwrap(), "rewrote identical files");
        assert_eq!(
            std::fs::read_to_string(files.join(CERT_FILE)).unwrap(),
            first.cert
        );
        check(&files).unwrap();
        let second = set();
        assert!(write(&files, &second).unwrap());
        assert_eq!(
            std::fs::read_to_string(files.join(KEY_FILE)).unwrap(),
            second.key
        );
        assert_eq!(
            std::fs::read_to_string(files.join(CA_FILE)).unwrap(),
            second.ca_cert
        );
        // One version directory is left, the current one.
        let versions = std::fs::read_dir(&files)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_dir())
            .count();
        assert_eq!(versions, 1);
    }

    #[test]
    fn a_missing_or_mismatched_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = check(dir.path()).unwrap_err().to_string();
        assert!(err.contains("tls.crt"), "{err}");
        let (a, b) = (set(), set());
        std::fs::write(dir.path().join(CERT_FILE), &a.cert).unwrap();
        let err = check(dir.path()).unwrap_err().to_string();
        assert!(err.contains("tls.key"), "{err}");
        std::fs::write(dir.path().join(KEY_FILE), &b.key).unwrap();
        let err = check(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("tls.key") && err.contains("is not the key of"),
            "{err}"
        );
        std::fs::write(dir.path().join(KEY_FILE), &a.key).unwrap();
        check(dir.path()).unwrap();
        std::fs::write(dir.path().join(CERT_FILE), "garbage").unwrap();
        let err = check(dir.path()).unwrap_err().to_string();
        assert!(err.contains("tls.crt"), "{err}");
    }
}
