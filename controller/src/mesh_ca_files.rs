//! The mesh root from files (`--mesh-ca-cert-file`, `--mesh-ca-key-file`): the folder-mode source
//! of the [`RootWatch`].
//!
//! The files are read and checked at start (a certificate that may sign, a PKCS#8 key
//! that is its key), so a bad root stops the controller with a message naming the file.
//! They are then polled: a replaced root (both files rewritten) is used from the next
//! signature on; a broken replacement is logged and the previous root kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::KeyPair;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::mesh_ca::{MeshRoot, RootWatch};

/// How often the files are checked for a new root.
pub const POLL_EVERY: Duration = Duration::from_secs(10);

/// Reads and checks the root in `cert` and `key`.
pub fn load(cert: &Path, key: &Path) -> Result<MeshRoot, String> {
    let cert_pem = std::fs::read_to_string(cert)
        .map_err(|e| format!("--mesh-ca-cert-file {}: cannot read: {e}", cert.display()))?;
    let key_pem = std::fs::read_to_string(key)
        .map_err(|e| format!("--mesh-ca-key-file {}: cannot read: {e}", key.display()))?;
    let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| {
            format!(
                "--mesh-ca-cert-file {}: holds no PEM certificate",
                cert.display()
            )
        })?;
    let (_, parsed) = X509Certificate::from_der(&der).map_err(|e| {
        format!(
            "--mesh-ca-cert-file {}: not an X.509 certificate: {e}",
            cert.display()
        )
    })?;
    let is_ca = parsed
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err(format!(
            "--mesh-ca-cert-file {}: not a CA certificate (basic constraints CA:TRUE)",
            cert.display()
        ));
    }
    let pair = KeyPair::from_pem(&key_pem).map_err(|e| {
        format!(
            "--mesh-ca-key-file {}: not a PKCS#8 PEM private key ({e}); convert it with \
             `openssl pkcs8 -topk8 -nocrypt`",
            key.display()
        )
    })?;
    if parsed.public_key().subject_public_key.data.as_ref() != pair.public_key_raw() {
        return Err(format!(
            "--mesh-ca-key-file {}: is not the key of --mesh-ca-cert-file {}",
            key.display(),
            cert.display()
        ));
    }
    Ok(MeshRoot {
        cert_pem: cert_pem.trim_end().to_owned() + "\n",
        key_pem,
    })
}

/// Loads the root and keeps the returned watch current (polling every `every`), for as
/// long as a receiver exists.
pub fn watch(cert: PathBuf, key: PathBuf, every: Duration) -> Result<RootWatch, String> {
    let root = load(&cert, &key)?;
    let (tx, rx) = tokio::sync::watch::channel(Some(Arc::new(root)));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            if tx.is_closed() {
                return;
            }
            match load(&cert, &key) {
                Ok(root) => {
                    let changed = tx.borrow().as_deref() != Some(&root);
                    if changed {
                        tracing::info!(cert = %cert.display(), "mesh root CA replaced");
                        let _ = tx.send(Some(Arc::new(root)));
                    }
                }
                // Mid-rotation (one file written, not yet the other) lands here too.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reload the mesh root CA; keeping the current one")
                }
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};

    fn write_root(dir: &Path, ca: bool) -> (PathBuf, PathBuf, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        if ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        }
        params.distinguished_name.push(DnType::CommonName, "root");
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (dir.join("ca.crt"), dir.join("ca.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k, key)
    }

    #[test]
    fn a_root_needs_a_ca_certificate_and_its_own_key() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k, _) = write_root(dir.path(), true);
        assert!(load(&c, &k).is_ok());
        let other = dir.path().join("other.key");
        std::fs::write(&other, KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let err = load(&c, &other).unwrap_err();
        assert!(err.contains("is not the key of"), "{err}");
        let sub = dir.path().join("leaf");
        std::fs::create_dir(&sub).unwrap();
        let (c, k, _) = write_root(&sub, false);
        let err = load(&c, &k).unwrap_err();
        assert!(err.contains("not a CA certificate"), "{err}");
        let err = load(&dir.path().join("missing.crt"), &k).unwrap_err();
        assert!(err.starts_with("--mesh-ca-cert-file"), "{err}");
    }

    #[tokio::test]
    async fn a_replaced_root_is_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k, _) = write_root(dir.path(), true);
        let mut rx = watch(c.clone(), k.clone(), Duration::from_millis(50)).unwrap();
        let first = rx.borrow_and_update().clone().unwrap();
        write_root(dir.path(), true);
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        let second = rx.borrow().clone().unwrap();
        assert_ne!(first.cert_pem, second.cert_pem);
    }
}
