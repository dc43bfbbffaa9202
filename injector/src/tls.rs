//! The webhook's serving certificate, from PEM files that are read again when they change
//! (the controller or cert-manager rotates them; the kubelet swaps a mounted Secret's
//! files in place), so a rotation needs no restart.
//!
//! The files are checked at most once per interval, on a TLS handshake; a rotation that
//! leaves them unreadable or mismatched keeps the previous certificate and logs why. This
//! module must not generate certificates (the controller does).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often, at most, the files are looked at.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// rustls refused the key or the configuration.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Where the serving certificate comes from.
#[derive(Clone, Debug)]
pub enum TlsSource {
    /// PEM files, re-read when they change.
    Files {
        /// The certificate chain (`tls.crt`).
        cert: PathBuf,
        /// The private key (`tls.key`).
        key: PathBuf,
    },
    /// A resolver of the host's own (a controller keeping its certificate in memory).
    Resolver(Arc<dyn ResolvesServerCert>),
}

impl TlsSource {
    /// `tls.crt` and `tls.key` in `dir`: a mounted `kubernetes.io/tls` Secret.
    pub fn dir(dir: &Path) -> TlsSource {
        TlsSource::Files {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        }
    }

    /// The rustls server configuration (HTTP/2 and HTTP/1.1 offered by ALPN). Files are
    /// read once here, so a bad path fails at start-up, not at the first handshake.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let resolver: Arc<dyn ResolvesServerCert> = match self {
            TlsSource::Files { cert, key } => Arc::new(ReloadingCert::new(
                cert.clone(),
                key.clone(),
                provider.clone(),
            )?),
            TlsSource::Resolver(r) => r.clone(),
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// What identifies a version of the two files.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp([(Option<SystemTime>, u64); 2]);

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: Stamp,
    checked: Instant,
}

/// A certificate and key from files, reloaded when either file changes.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    interval: Duration,
    loaded: Mutex<Loaded>,
}

impl ReloadingCert {
    /// Loads the files now; an error if they are not a certificate and its key.
    pub fn new(
        cert: PathBuf,
        key: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> Result<ReloadingCert, TlsError> {
        let stamp = stamp(&cert, &key);
        let certified = load(&cert, &key, &provider)?;
        Ok(ReloadingCert {
            cert,
            key,
            provider,
            interval: DEFAULT_CHECK_INTERVAL,
            loaded: Mutex::new(Loaded {
                key: Arc::new(certified),
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// Looks at the files at most this often (tests use zero).
    pub fn with_check_interval(mut self, interval: Duration) -> ReloadingCert {
        self.interval = interval;
        self
    }

    /// The current certificate, reloaded first if the files changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut loaded = match self.loaded.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        if loaded.checked.elapsed() >= self.interval {
            loaded.checked = Instant::now();
            let now = stamp(&self.cert, &self.key);
            if now != loaded.stamp {
                match load(&self.cert, &self.key, &self.provider) {
                    Ok(key) => {
                        tracing::info!(cert = %self.cert.display(), "webhook certificate reloaded");
                        loaded.key = Arc::new(key);
                        loaded.stamp = now;
                    }
                    // Mid-rotation (one file new, one old) or broken: keep serving the
                    // previous certificate, and try again at the next check.
                    Err(e) => tracing::warn!(error = %e, "webhook certificate not reloaded"),
                }
            }
        }
        loaded.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let one = |p: &Path| match fs::metadata(p) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    };
    Stamp([one(cert), one(key)])
}

fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        fs::read(path).map_err(|source| TlsError::Read {
            path: path.into(),
            source,
        })
    };
    let pem_error = |path: &Path, what: String| TlsError::Pem {
        path: path.into(),
        what,
    };
    let cert_pem = read(cert)?;
    let chain = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(cert, "no CERTIFICATE in the file".into()));
    }
    let key_pem = read(key)?;
    let private = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| pem_error(key, e.to_string()))?
        .ok_or_else(|| pem_error(key, "no PRIVATE KEY in the file".into()))?;
    let signing = provider.key_provider.load_private_key(private)?;
    let certified = CertifiedKey::new(chain, signing);
    // A certificate whose key is not this one fails here rather than at handshakes.
    certified.keys_match()?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generate() -> rcgen::CertifiedKey<rcgen::KeyPair> {
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate")
    }

    fn first_cert(key: &CertifiedKey) -> Vec<u8> {
        key.cert.first().map(|c| c.to_vec()).unwrap_or_default()
    }

    #[test]
    fn a_half_rotated_pair_keeps_the_previous_certificate_until_both_files_match() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let old = generate();
        fs::write(&cert, old.cert.pem()).expect("cert");
        fs::write(&key, old.signing_key.serialize_pem()).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let reloading = ReloadingCert::new(cert.clone(), key.clone(), provider)
            .expect("loads")
            .with_check_interval(Duration::ZERO);
        assert_eq!(first_cert(&reloading.current()), old.cert.der().to_vec());

        // The certificate is new, the key still the old one: not a usable pair yet.
        let new = generate();
        fs::write(&cert, new.cert.pem()).expect("cert");
        assert_eq!(first_cert(&reloading.current()), old.cert.der().to_vec());

        // The key arrives: the new pair is served.
        fs::write(&key, new.signing_key.serialize_pem()).expect("key");
        assert_eq!(first_cert(&reloading.current()), new.cert.der().to_vec());
    }

    #[test]
    fn a_missing_or_empty_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let missing = ReloadingCert::new(
            dir.path().join("tls.crt"),
            dir.path().join("tls.key"),
            provider.clone(),
        )
        .expect_err("missing");
        assert!(missing.to_string().contains("tls.crt"), "{missing}");
        fs::write(dir.path().join("tls.crt"), "not pem").expect("write");
        let empty = ReloadingCert::new(
            dir.path().join("tls.crt"),
            dir.path().join("tls.key"),
            provider,
        )
        .expect_err("empty");
        assert!(empty.to_string().contains("no CERTIFICATE"), "{empty}");
    }
}
