//! TLS termination: server configs with certificates chosen by SNI.
//!
//! Certificates are loaded when a config is compiled, never while a handshake runs. A
//! bind with several HTTPS listeners gets one rustls config whose resolver picks the
//! certificate by SNI; the first certificate is the default when SNI is absent or unknown.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::sync::Arc;

use agentmesh_proto::config::v1::ServerCertificate;
use rustls::ServerConfig;
use rustls::crypto::ring;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::FieldError;
use crate::http::route::HostPattern;

/// Reads a PEM certificate chain.
pub fn read_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let file = File::open(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{path} is not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path} holds no PEM certificate"));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    let file = File::open(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|e| format!("{path} is not a PEM key file: {e}"))?
        .ok_or_else(|| format!("{path} holds no PEM private key"))
}

/// Builds the server config for a bind from `(resource, field, certificate)` entries.
pub fn server_config(
    certificates: &[(String, String, ServerCertificate)],
) -> Result<Arc<ServerConfig>, Vec<FieldError>> {
    let provider = Arc::new(ring::default_provider());
    let mut errors = Vec::new();
    let mut resolver = SniResolver::default();
    for (res, field, c) in certificates {
        let mut err = |f: &str, reason: String| {
            errors.push(FieldError {
                resource: res.clone(),
                field: format!("{field}.{f}"),
                reason,
            })
        };
        let certs = read_certs(&c.cert_file).map_err(|e| err("certFile", e));
        let key = read_key(&c.key_file).map_err(|e| err("keyFile", e));
        let mut configured = Vec::new();
        for (i, h) in c.hostnames.iter().enumerate() {
            match HostPattern::parse(h) {
                Ok(_) => configured.push(h.trim().to_ascii_lowercase()),
                Err(e) => err(&format!("hostnames[{i}]"), e),
            }
        }
        let (Ok(certs), Ok(key)) = (certs, key) else {
            continue;
        };
        let names = if c.hostnames.is_empty() {
            dns_names(&certs[0])
        } else {
            configured
        };
        let key = match CertifiedKey::from_der(certs, key, &provider) {
            Ok(k) => Arc::new(k),
            Err(e) => {
                err(
                    "keyFile",
                    format!("does not match the certificate or is unsupported: {e}"),
                );
                continue;
            }
        };
        resolver.add(names, key);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            vec![FieldError {
                resource: "bind".into(),
                field: "tls".into(),
                reason: e.to_string(),
            }]
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The DNS names (subject alternative names) of a certificate.
fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    webpki::EndEntityCert::try_from(cert)
        .map(|c| c.valid_dns_names().map(str::to_ascii_lowercase).collect())
        .unwrap_or_default()
}

/// Picks a certificate by SNI: exact names, then wildcards, then the default.
#[derive(Debug, Default)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: Vec<(HostPattern, Arc<CertifiedKey>)>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn add(&mut self, names: Vec<String>, key: Arc<CertifiedKey>) {
        if self.default.is_none() {
            self.default = Some(key.clone());
        }
        for name in names {
            match HostPattern::parse(&name) {
                Ok(HostPattern::Exact(h)) => {
                    self.exact.entry(h).or_insert_with(|| key.clone());
                }
                Ok(p @ HostPattern::Wildcard(_)) => self.wildcard.push((p, key.clone())),
                Err(_) => {}
            }
        }
        self.wildcard
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.specificity()));
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(sni) = hello.server_name() else {
            return self.default.clone();
        };
        let sni = sni.to_ascii_lowercase();
        self.exact
            .get(&sni)
            .or_else(|| {
                self.wildcard
                    .iter()
                    .find(|(p, _)| p.matches(&sni))
                    .map(|(_, k)| k)
            })
            .or(self.default.as_ref())
            .cloned()
    }
}
