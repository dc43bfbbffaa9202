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

/// Parses a PEM certificate chain given inline (`what` names it in messages).
pub fn parse_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} is not a PEM certificate chain: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} holds no PEM certificate"));
    }
    Ok(certs)
}

/// Parses a PEM private key given inline (PKCS#8, PKCS#1 or SEC1). The message never
/// quotes the key.
pub fn parse_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>, String> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| format!("{what} is not a PEM private key: {e}"))?
        .ok_or_else(|| format!("{what} holds no PEM private key"))
}

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
        // Each of certificate and key comes from a file or inline PEM, not both.
        let certs = match (c.cert_file.is_empty(), c.cert_pem.is_empty()) {
            (false, false) => Err(("certPem", "set certFile or certPem, not both".into())),
            (true, false) => parse_certs(&c.cert_pem, "the inline PEM").map_err(|e| ("certPem", e)),
            _ => read_certs(&c.cert_file).map_err(|e| ("certFile", e)),
        }
        .map_err(|(f, e)| err(f, e));
        let key = match (c.key_file.is_empty(), c.private_key_pem.is_empty()) {
            (false, false) => Err((
                "privateKeyPem",
                "set keyFile or privateKeyPem, not both".into(),
            )),
            (true, false) => {
                parse_key(&c.private_key_pem, "the inline PEM").map_err(|e| ("privateKeyPem", e))
            }
            _ => read_key(&c.key_file).map_err(|e| ("keyFile", e)),
        }
        .map_err(|(f, e)| err(f, e));
        let key_field = if c.private_key_pem.is_empty() {
            "keyFile"
        } else {
            "privateKeyPem"
        };
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
                    key_field,
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn inline(names: &[&str]) -> ServerCertificate {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let generated = rcgen::generate_simple_self_signed(names).unwrap();
        ServerCertificate {
            cert_pem: generated.cert.pem(),
            private_key_pem: generated.signing_key.serialize_pem(),
            ..ServerCertificate::default()
        }
    }

    fn entry(c: ServerCertificate) -> Vec<(String, String, ServerCertificate)> {
        vec![("listener \"l\"".into(), "tls.certificates[0]".into(), c)]
    }

    #[test]
    fn a_certificate_given_as_inline_pem_is_served() {
        let config = server_config(&entry(inline(&["a.example.com"]))).unwrap();
        assert_eq!(config.alpn_protocols[0], b"h2");
    }

    #[test]
    fn inline_pem_and_a_file_for_the_same_part_are_refused() {
        let mut c = inline(&["a.example.com"]);
        c.cert_file = "/etc/cert.pem".into();
        c.key_file = "/etc/key.pem".into();
        let errors = server_config(&entry(c)).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "tls.certificates[0].certPem",
                "tls.certificates[0].privateKeyPem"
            ]
        );
    }

    #[test]
    fn a_key_that_does_not_match_is_reported_without_quoting_it() {
        let mut c = inline(&["a.example.com"]);
        let other = inline(&["b.example.com"]);
        c.private_key_pem = other.private_key_pem.clone();
        let errors = server_config(&entry(c)).unwrap_err();
        assert_eq!(errors[0].field, "tls.certificates[0].privateKeyPem");
        let body: String = other.private_key_pem.lines().nth(1).unwrap().into();
        assert!(!errors[0].reason.contains(&body), "{}", errors[0].reason);
    }
}
