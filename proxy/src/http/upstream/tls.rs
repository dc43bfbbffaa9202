//! TLS originated towards a host backend: the rustls client configuration, built once from
//! an `UpstreamTls` spec when the client is created.
//!
//! Everything that touches the filesystem (CA bundle, client certificate and key) happens
//! here, at construction; the connector only clones the finished configuration. The ring
//! provider is named explicitly so nothing depends on a process-wide default provider.

use std::fs;
use std::io::BufReader;
use std::sync::Arc;

use agentmesh_proto::config::v1::{UpstreamProtocol, UpstreamTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::UpstreamConfigError;

/// The finished TLS settings for one backend: what the connector needs to open a session.
pub(super) struct TlsOrigination {
    /// The rustls configuration shared by every connection of the backend.
    pub(super) config: Arc<ClientConfig>,
    /// The name sent in SNI and verified in the server certificate.
    pub(super) server_name: ServerName<'static>,
}

impl TlsOrigination {
    /// Loads the files named by `spec` and builds the client configuration.
    ///
    /// `address_host` is the host part of the backend address, the server name when
    /// `spec.sni` is empty. ALPN offers what `protocol` allows.
    pub(super) fn load(
        spec: &UpstreamTls,
        address_host: &str,
        protocol: UpstreamProtocol,
    ) -> Result<Self, UpstreamConfigError> {
        let server_name = server_name(spec, address_host)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| UpstreamConfigError::Tls {
                field: "tls",
                source,
            })?;
        let builder = if spec.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert {
                    algorithms: provider.signature_verification_algorithms,
                }))
        } else {
            builder.with_root_certificates(root_store(&spec.ca_file, &spec.ca_pem)?)
        };
        let mut config = match (spec.cert_file.is_empty(), spec.key_file.is_empty()) {
            (true, true) => builder.with_no_client_auth(),
            (false, false) => {
                let chain = read_certs("tls.certFile", &spec.cert_file)?;
                let key = read_key(&spec.key_file)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|source| UpstreamConfigError::Tls {
                        field: "tls.keyFile",
                        source,
                    })?
            }
            _ => return Err(UpstreamConfigError::CertWithoutKey),
        };
        config.alpn_protocols = match protocol {
            UpstreamProtocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
            UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
        };
        Ok(Self {
            config: Arc::new(config),
            server_name,
        })
    }
}

/// The SNI: `spec.sni`, or the host of the address.
fn server_name(
    spec: &UpstreamTls,
    address_host: &str,
) -> Result<ServerName<'static>, UpstreamConfigError> {
    if spec.sni.is_empty() {
        ServerName::try_from(address_host.to_owned()).map_err(|_| UpstreamConfigError::Sni {
            sni: address_host.to_owned(),
        })
    } else {
        ServerName::try_from(spec.sni.clone()).map_err(|_| UpstreamConfigError::Sni {
            sni: spec.sni.clone(),
        })
    }
}

/// Trust anchors: the PEM bundle at `ca_file` or in `ca_pem` (at most one), or the
/// bundled web PKI roots when both are empty.
fn root_store(ca_file: &str, ca_pem: &str) -> Result<RootCertStore, UpstreamConfigError> {
    let (field, certs) = match (ca_file.is_empty(), ca_pem.is_empty()) {
        (true, true) => {
            return Ok(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            });
        }
        (false, true) => ("tls.caFile", read_certs("tls.caFile", ca_file)?),
        (true, false) => (
            "tls.caPem",
            pem_certs("tls.caPem", "caPem", ca_pem.as_bytes())?,
        ),
        (false, false) => return Err(UpstreamConfigError::CaFileAndPem),
    };
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|source| UpstreamConfigError::Tls { field, source })?;
    }
    Ok(roots)
}

/// Every certificate of a PEM file; an error when there is none.
fn read_certs(
    field: &'static str,
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, UpstreamConfigError> {
    let pem = read_file(field, path)?;
    pem_certs(field, path, &pem)
}

/// Every certificate of PEM text (from `source`: a path, or the field holding it
/// inline); an error when there is none.
fn pem_certs(
    field: &'static str,
    source: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, UpstreamConfigError> {
    let certs = rustls_pemfile::certs(&mut BufReader::new(pem))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| UpstreamConfigError::InvalidFile {
            field,
            path: source.to_owned(),
            reason: format!("invalid PEM: {err}"),
        })?;
    if certs.is_empty() {
        return Err(UpstreamConfigError::InvalidFile {
            field,
            path: source.to_owned(),
            reason: "no certificate found".to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
fn read_key(path: &str) -> Result<PrivateKeyDer<'static>, UpstreamConfigError> {
    const FIELD: &str = "tls.keyFile";
    let pem = read_file(FIELD, path)?;
    let invalid = |reason: String| UpstreamConfigError::InvalidFile {
        field: FIELD,
        path: path.to_owned(),
        reason,
    };
    rustls_pemfile::private_key(&mut BufReader::new(pem.as_slice()))
        .map_err(|err| invalid(format!("invalid PEM: {err}")))?
        .ok_or_else(|| invalid("no private key found".to_owned()))
}

fn read_file(field: &'static str, path: &str) -> Result<Vec<u8>, UpstreamConfigError> {
    fs::read(path).map_err(|source| UpstreamConfigError::ReadFile {
        field,
        path: path.to_owned(),
        source,
    })
}

/// The verifier behind `insecureSkipVerify`: accepts any server certificate, whoever
/// issued it and whatever name it carries. For tests only; handshake signatures are still
/// checked so the session itself is sound.
#[derive(Debug)]
struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
