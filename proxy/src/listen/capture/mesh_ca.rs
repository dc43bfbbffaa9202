//! The mesh CA of intercepted TLS: loads the CA certificate and key once, mints a leaf
//! certificate for each server name the app connects to, and keeps the minted leaves in
//! a bounded cache (least recently used evicted) so a name is minted once, not per
//! connection.
//!
//! The CA is either loaded from files ([`MeshCa::load`]) or an intermediate the
//! controller issued to this proxy ([`MeshCa::from_issued`], see
//! `config::issued_ca`): then the leaves chain leaf → intermediate, and the app's trust in
//! the mesh root verifies them.
//!
//! A name that is an IP address (a ClientHello without SNI is minted for its original
//! destination's address) gets an IP SAN. Minting is CPU work only (one ECDSA P-256 key
//! and one signature, well under a millisecond); it never touches the filesystem. The CA
//! key never leaves this struct: `Debug` shows where the CA came from, not its key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::listen::tls::read_certs;
use crate::telemetry::sidecar::{LeafCert, SidecarMetrics};

/// Minted leaves kept by default.
pub const DEFAULT_CACHE_SIZE: usize = 1024;
/// How long a minted leaf is valid (from an hour before it was minted, for clock skew).
const LEAF_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// A cached leaf older than this is minted again, so no client ever sees one about to
/// expire.
const LEAF_REFRESH: Duration = Duration::from_secs(12 * 3600);
/// Tolerated clock skew between the proxy and the app.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// Why a leaf could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The name cannot be put in a certificate.
    #[error("cannot mint a certificate for {name:?}: {reason}")]
    Name {
        /// The server name.
        name: String,
        /// What rcgen said.
        reason: String,
    },
    /// Key generation, signing or rustls rejected the result.
    #[error("cannot mint a certificate for {name:?}: {reason}")]
    Crypto {
        /// The server name.
        name: String,
        /// What failed.
        reason: String,
    },
}

/// A loaded mesh CA with its cache of minted leaves.
pub struct MeshCa {
    /// Where the CA came from (its certificate file, or the controller), for `Debug`.
    source: String,
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    /// When the CA itself expires, if known (an issued intermediate): no leaf is minted to
    /// outlive it, since a client refuses the chain once any link has expired.
    expires: Option<SystemTime>,
    cache: Mutex<LeafCache>,
}

impl std::fmt::Debug for MeshCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshCa")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Leaves by server name, with when each was minted and last used.
struct LeafCache {
    capacity: usize,
    /// Bumped on every use: the entry with the smallest value is the least recently used.
    clock: u64,
    leaves: HashMap<String, CachedLeaf>,
}

struct CachedLeaf {
    config: Arc<ServerConfig>,
    minted: Instant,
    used: u64,
}

impl MeshCa {
    /// Loads the CA certificate and key (PEM files). Errors name the field at fault
    /// (`certFile` or `keyFile`) and why.
    pub fn load(
        cert_file: &str,
        key_file: &str,
        cache_size: usize,
    ) -> Result<MeshCa, (&'static str, String)> {
        let certs = read_certs(cert_file).map_err(|e| ("certFile", e))?;
        let ca_der = certs[0].clone();
        let key_pem = std::fs::read_to_string(key_file)
            .map_err(|e| ("keyFile", format!("cannot read {key_file}: {e}")))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| {
            (
                "keyFile",
                format!("{key_file} is not a PEM PKCS#8 private key rcgen can sign with: {e}"),
            )
        })?;
        let issuer = Issuer::from_ca_cert_der(&ca_der, key).map_err(|e| {
            (
                "certFile",
                format!("{cert_file} is not a CA certificate rcgen can read: {e}"),
            )
        })?;
        let ca = MeshCa::new(cert_file.to_owned(), issuer, ca_der, cache_size);
        // Prove the key matches the certificate now, not on the first intercepted call.
        let probe = ca
            .mint("agentmesh-probe.invalid")
            .map_err(|e| ("keyFile", e.to_string()))?;
        verify_chain(&probe, &ca.ca_der, &[]).map_err(|e| {
            (
                "keyFile",
                format!("{key_file} does not sign certificates that {cert_file} verifies: {e}"),
            )
        })?;
        Ok(ca)
    }

    /// A CA from an intermediate the controller issued: `intermediate` (DER) is the
    /// certificate of `key`, signed by `root` (DER), the anchor the app trusts. `probe` is
    /// a name the intermediate may sign for (inside its name constraints): a leaf for it
    /// must verify against `root` through the intermediate before the CA is used.
    /// `expires` is the intermediate's `notAfter`: minted leaves never outlive it.
    pub fn from_issued(
        intermediate: CertificateDer<'static>,
        key: KeyPair,
        root: &CertificateDer<'static>,
        expires: SystemTime,
        probe: &str,
        cache_size: usize,
    ) -> Result<MeshCa, String> {
        let issuer = Issuer::from_ca_cert_der(&intermediate, key)
            .map_err(|e| format!("the intermediate is not a CA certificate rcgen can read: {e}"))?;
        let mut ca = MeshCa::new(
            "intermediate issued by the controller".into(),
            issuer,
            intermediate.clone(),
            cache_size,
        );
        ca.expires = Some(expires);
        let minted = ca.mint(probe).map_err(|e| e.to_string())?;
        verify_chain(&minted, root, &[intermediate]).map_err(|e| {
            format!("a leaf minted with the intermediate does not verify against the root: {e}")
        })?;
        Ok(ca)
    }

    fn new(
        source: String,
        issuer: Issuer<'static, KeyPair>,
        ca_der: CertificateDer<'static>,
        cache_size: usize,
    ) -> MeshCa {
        MeshCa {
            source,
            issuer,
            ca_der,
            expires: None,
            cache: Mutex::new(LeafCache {
                capacity: cache_size.max(1),
                clock: 0,
                leaves: HashMap::new(),
            }),
        }
    }

    /// The CA certificate (DER), as the app must trust it.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// The TLS server config presenting a leaf for `name` (a DNS name or an IP address):
    /// from the cache, else minted and cached. ALPN offers h2 and http/1.1.
    pub fn server_config(
        &self,
        name: &str,
        metrics: &SidecarMetrics,
    ) -> Result<Arc<ServerConfig>, MintError> {
        let name = name.to_ascii_lowercase();
        {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            cache.clock += 1;
            let now = cache.clock;
            if let Some(leaf) = cache.leaves.get_mut(&name)
                && leaf.minted.elapsed() < LEAF_REFRESH
            {
                leaf.used = now;
                metrics.leaf_cert(LeafCert::Cached);
                return Ok(leaf.config.clone());
            }
        }
        // Minted outside the lock: two connections racing for a new name may both mint;
        // the second simply replaces the first.
        let (chain, key) = self.mint(&name)?;
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
                .map_err(|e| MintError::Crypto {
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let config = Arc::new(config);
        metrics.leaf_cert(LeafCert::Minted);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.leaves.len() >= cache.capacity
            && !cache.leaves.contains_key(&name)
            && let Some(oldest) = cache
                .leaves
                .iter()
                .min_by_key(|(_, l)| l.used)
                .map(|(k, _)| k.clone())
        {
            cache.leaves.remove(&oldest);
        }
        let used = cache.clock;
        cache.leaves.insert(
            name,
            CachedLeaf {
                config: config.clone(),
                minted: Instant::now(),
                used,
            },
        );
        Ok(config)
    }

    /// Mints a leaf for `name`: its chain (leaf, CA) and its private key.
    fn mint(
        &self,
        name: &str,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), MintError> {
        let crypto = |e: rcgen::Error| MintError::Crypto {
            name: name.to_owned(),
            reason: e.to_string(),
        };
        let mut params =
            CertificateParams::new(vec![name.to_owned()]).map_err(|e| MintError::Name {
                name: name.to_owned(),
                reason: e.to_string(),
            })?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        let now = SystemTime::now();
        params.not_before = (now - CLOCK_SKEW).into();
        let not_after = now + LEAF_VALIDITY;
        params.not_after = self.expires.map_or(not_after, |e| e.min(not_after)).into();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(crypto)?;
        let leaf = params.signed_by(&key, &self.issuer).map_err(crypto)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((vec![leaf.der().clone(), self.ca_der.clone()], key))
    }

    /// Cached leaves (for tests and the admin view).
    pub fn cached(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .leaves
            .len()
    }
}

/// Checks that the probe leaf chains to `anchor` (through `intermediates`).
fn verify_chain(
    (chain, _): &(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    anchor: &CertificateDer<'static>,
    intermediates: &[CertificateDer<'static>],
) -> Result<(), String> {
    let anchor = webpki::anchor_from_trusted_cert(anchor).map_err(|e| e.to_string())?;
    let leaf = webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| e.to_string())?;
    let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    leaf.verify_for_usage(
        algs.all,
        &[anchor],
        intermediates,
        rustls::pki_types::UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ca_files(dir: &std::path::Path) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params
            .distinguished_name
            .push(DnType::CommonName, "test mesh CA");
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (dir.join("ca.crt"), dir.join("ca.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c.display().to_string(), k.display().to_string())
    }

    #[test]
    fn leaves_are_cached_and_the_least_recently_used_is_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = ca_files(dir.path());
        let ca = MeshCa::load(&c, &k, 2).unwrap();
        let metrics = SidecarMetrics::default();
        let a = ca.server_config("a.test", &metrics).unwrap();
        let _ = ca.server_config("b.test", &metrics).unwrap();
        assert!(Arc::ptr_eq(
            &a,
            &ca.server_config("A.test", &metrics).unwrap()
        ));
        // c.test evicts b.test, the least recently used.
        let _ = ca.server_config("c.test", &metrics).unwrap();
        assert_eq!(ca.cached(), 2);
        assert!(Arc::ptr_eq(
            &a,
            &ca.server_config("a.test", &metrics).unwrap()
        ));
        // An address (a ClientHello without SNI) gets an IP SAN.
        let _ = ca.server_config("10.0.0.1", &metrics).unwrap();
    }

    #[test]
    fn a_key_that_is_not_the_cas_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = ca_files(dir.path());
        let other = dir.path().join("other.key");
        std::fs::write(&other, KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let (field, reason) = MeshCa::load(&c, &other.display().to_string(), 8).unwrap_err();
        assert_eq!(field, "keyFile");
        assert!(reason.contains("does not sign"), "{reason}");
    }

    #[test]
    fn leaves_of_an_issued_intermediate_never_outlive_it() {
        // A root, and an intermediate of it that expires in two hours.
        let root_key = KeyPair::generate().unwrap();
        let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
        root.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        root.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        root.distinguished_name.push(DnType::CommonName, "root");
        let root_cert = root.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root, root_key);
        let key = KeyPair::generate().unwrap();
        let expires = SystemTime::now() + Duration::from_secs(2 * 3600);
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.distinguished_name.push(DnType::CommonName, "pod");
        params.not_after = expires.into();
        let intermediate = params.signed_by(&key, &root_issuer).unwrap();

        let ca = MeshCa::from_issued(
            intermediate.der().clone(),
            key,
            root_cert.der(),
            expires,
            "api.example.com",
            4,
        )
        .unwrap();
        let (chain, _) = ca.mint("api.example.com").unwrap();
        assert_eq!(chain.len(), 2, "leaf and intermediate");
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        let leaf_expiry = SystemTime::UNIX_EPOCH
            + Duration::from_secs(leaf.validity().not_after.timestamp().try_into().unwrap());
        // Minted for 24 hours otherwise; capped at the intermediate's expiry (whole
        // seconds in the certificate).
        assert!(leaf_expiry <= expires, "{leaf_expiry:?} > {expires:?}");
        assert!(leaf_expiry + Duration::from_secs(2) >= expires);
    }
}
