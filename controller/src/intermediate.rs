//! Per-pod intermediate CAs for intercepted TLS, signed with the mesh root.
//!
//! A sidecar whose policies intercept TLS mints leaf certificates for the servers its
//! app calls. It does so with an intermediate CA of its own: it generates the key, sends
//! a CSR, and the controller signs a CA certificate that
//!
//! - may only sign leaves (basic constraints `pathlen:0`, key usage `keyCertSign`),
//! - lives a short time ([`DEFAULT_VALIDITY`] unless `--mesh-ca-intermediate-validity`
//!   says otherwise),
//! - names the pod in its subject, and
//! - carries **name constraints** limiting it to what the pod's INTERCEPT rules cover, as
//!   the controller computes them from its own view of the pod's policies, never from
//!   the CSR ([`InterceptNames`]).
//!
//! So a compromised pod can forge certificates only for the names its own policies
//! already intercept, for a day at most, and the root's key never leaves the
//! controller. This module signs; it neither authenticates callers nor reads policies
//! (`ca_service` does both).

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use agentmesh_proto::config::v1 as pb;
use rcgen::{
    BasicConstraints, CertificateSigningRequestParams, CidrSubnet, DistinguishedName, DnType,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints, SerialNumber,
};

use crate::mesh_ca::MeshRoot;

/// How long an intermediate is valid by default. The sidecar renews at two thirds.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// Tolerated clock skew between the controller and the sidecars.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// The names an intermediate may sign for, from the INTERCEPT rules of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterceptNames {
    /// No rule intercepts: no intermediate is issued.
    Nothing,
    /// A rule intercepts without hostnames (any name, or a ClientHello without SNI,
    /// which is minted for its destination's IP address): the intermediate cannot be
    /// constrained.
    Any,
    /// Every intercepting rule lists hostnames: the DNS subtrees covering them. An exact
    /// `api.example.com` and a wildcard `*.example.com` give the subtrees
    /// `api.example.com` and `example.com`: a DNS subtree covers a name and everything
    /// below it, the narrowest a name constraint can say. IP addresses are excluded
    /// entirely, since a rule with hostnames never intercepts a connection without SNI.
    Dns(BTreeSet<String>),
}

impl InterceptNames {
    /// What the INTERCEPT rules of `settings` cover (a rule that denies never intercepts).
    pub fn of(settings: Option<&pb::SidecarSettings>) -> InterceptNames {
        let mut subtrees = BTreeSet::new();
        let mut any_rule = false;
        for rule in settings.iter().flat_map(|s| &s.egress) {
            if rule.tls != pb::EgressTls::Intercept as i32
                || rule.action != pb::OutboundAction::Allow as i32
            {
                continue;
            }
            any_rule = true;
            if rule.hostnames.is_empty() {
                return InterceptNames::Any;
            }
            for host in &rule.hostnames {
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                let host = host.strip_prefix("*.").unwrap_or(&host);
                subtrees.insert(host.to_owned());
            }
        }
        if !any_rule {
            return InterceptNames::Nothing;
        }
        // A subtree inside another adds nothing (`api.example.com` under `example.com`).
        let all = subtrees.clone();
        subtrees.retain(|s| {
            !all.iter()
                .any(|other| other != s && s.ends_with(&format!(".{other}")))
        });
        InterceptNames::Dns(subtrees)
    }
}

/// A signed intermediate.
#[derive(Debug, Clone)]
pub struct Intermediate {
    /// PEM: the intermediate, then the root.
    pub chain_pem: String,
    /// When it expires.
    pub not_after: SystemTime,
    /// Its permitted DNS subtrees (empty: unconstrained).
    pub permitted_dns: Vec<String>,
}

/// Why an intermediate could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The CSR is not PEM, not a CSR, or its signature does not verify.
    #[error("the CSR cannot be used: {0}")]
    Csr(String),
    /// The mesh root cannot sign (its key or certificate is unusable).
    #[error("the mesh root cannot sign: {0}")]
    Root(String),
    /// The pod intercepts nothing, so it gets no CA.
    #[error("the policies of {0} intercept no TLS (no egress rule with `tls: Intercept`)")]
    NothingIntercepted(String),
    /// A hostname cannot be a name constraint.
    #[error("cannot constrain the intermediate to {0:?}")]
    Name(String),
}

/// Signs `csr_pem` as the intermediate CA of `pod` (`<pod>.<namespace>`), valid from
/// `now` for `validity`, constrained to `names`.
pub fn sign(
    root: &MeshRoot,
    pod: &str,
    csr_pem: &str,
    names: &InterceptNames,
    validity: Duration,
    now: SystemTime,
) -> Result<Intermediate, SignError> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| SignError::Csr(e.to_string()))?;
    let key = KeyPair::from_pem(&root.key_pem).map_err(|e| {
        SignError::Root(format!(
            "its key is not a PKCS#8 PEM key rcgen can sign with ({e}); convert it with \
             `openssl pkcs8 -topk8 -nocrypt`"
        ))
    })?;
    let issuer = Issuer::from_ca_cert_pem(&root.cert_pem, key)
        .map_err(|e| SignError::Root(format!("its certificate cannot be read: {e}")))?;

    let (permitted_dns, constraints) = match names {
        InterceptNames::Nothing => return Err(SignError::NothingIntercepted(pod.to_owned())),
        InterceptNames::Any => (Vec::new(), None),
        InterceptNames::Dns(subtrees) => {
            for s in subtrees {
                // A subtree is a DNS name: letters, digits, `-` and dots, no empty label.
                let valid = !s.is_empty()
                    && s.split('.').all(|label| {
                        !label.is_empty()
                            && label
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if !valid {
                    return Err(SignError::Name(s.clone()));
                }
            }
            let constraints = NameConstraints {
                permitted_subtrees: subtrees
                    .iter()
                    .cloned()
                    .map(GeneralSubtree::DnsName)
                    .collect(),
                excluded_subtrees: vec![
                    GeneralSubtree::IpAddress(CidrSubnet::from_v4_prefix([0; 4], 0)),
                    GeneralSubtree::IpAddress(CidrSubnet::from_v6_prefix([0; 16], 0)),
                ],
            };
            (subtrees.iter().cloned().collect(), Some(constraints))
        }
    };

    // Only the CSR's public key is used (its signature was checked above): everything
    // the certificate says is decided here.
    let mut params = rcgen::CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "agentmesh");
    dn.push(
        DnType::CommonName,
        format!("agentmesh intercept CA for {pod}"),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.name_constraints = constraints;
    params.use_authority_key_identifier_extension = true;
    params.not_before = (now - CLOCK_SKEW).into();
    let not_after = now + validity;
    params.not_after = not_after.into();
    params.serial_number = Some(random_serial()?);
    let request = CertificateSigningRequestParams {
        params,
        public_key: csr.public_key,
    };
    let cert = request
        .signed_by(&issuer)
        .map_err(|e| SignError::Root(e.to_string()))?;
    let mut chain_pem = cert.pem();
    if !chain_pem.ends_with('\n') {
        chain_pem.push('\n');
    }
    chain_pem.push_str(root.cert_pem.trim_end());
    chain_pem.push('\n');
    Ok(Intermediate {
        chain_pem,
        not_after,
        permitted_dns,
    })
}

/// A random, positive 128-bit serial number.
fn random_serial() -> Result<SerialNumber, SignError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SignError::Root("no randomness for a serial number".into()))?;
    // Positive in DER: the top bit clear.
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::{FromDer, X509Certificate};

    /// A root CA, as a folder-mode operator would make it.
    pub(crate) fn test_root() -> MeshRoot {
        let key = KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params
            .distinguished_name
            .push(DnType::CommonName, "test mesh root");
        let cert = params.self_signed(&key).unwrap();
        MeshRoot {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn csr() -> (KeyPair, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["evil.example".into()]).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        (key, csr)
    }

    fn rule(hosts: &[&str], tls: pb::EgressTls) -> pb::EgressRule {
        pb::EgressRule {
            hostnames: hosts.iter().map(|h| h.to_string()).collect(),
            tls: tls as i32,
            ..Default::default()
        }
    }

    fn der_of_first(pem: &str) -> Vec<u8> {
        rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn intercept_names_come_from_intercepting_rules_only() {
        let settings = pb::SidecarSettings {
            egress: vec![
                rule(&["passthrough.example"], pb::EgressTls::Passthrough),
                rule(
                    &["*.Example.com", "api.example.com"],
                    pb::EgressTls::Intercept,
                ),
                rule(&["llm.test."], pb::EgressTls::Intercept),
            ],
            ..Default::default()
        };
        assert_eq!(
            InterceptNames::of(Some(&settings)),
            InterceptNames::Dns(["example.com".to_string(), "llm.test".to_string()].into())
        );
        let mut any = settings.clone();
        any.egress.push(rule(&[], pb::EgressTls::Intercept));
        assert_eq!(InterceptNames::of(Some(&any)), InterceptNames::Any);
        let mut denied = pb::SidecarSettings::default();
        denied.egress.push(pb::EgressRule {
            action: pb::OutboundAction::Deny as i32,
            ..rule(&["x.test"], pb::EgressTls::Intercept)
        });
        assert_eq!(InterceptNames::of(Some(&denied)), InterceptNames::Nothing);
        assert_eq!(InterceptNames::of(None), InterceptNames::Nothing);
    }

    #[test]
    fn the_intermediate_is_a_constrained_short_lived_ca_for_the_csr_key() {
        let root = test_root();
        let (key, csr) = csr();
        let names = InterceptNames::Dns(["example.com".to_string()].into());
        let now = SystemTime::now();
        let issued = sign(
            &root,
            "agent-0.tools",
            &csr,
            &names,
            Duration::from_secs(3600),
            now,
        )
        .unwrap();
        assert_eq!(issued.permitted_dns, ["example.com"]);
        let der = der_of_first(&issued.chain_pem);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        // The CSR's key, not the names or CA settings it asked for.
        assert_eq!(
            cert.public_key().subject_public_key.data,
            key.public_key_raw()
        );
        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        assert!(cert.key_usage().unwrap().unwrap().value.key_cert_sign());
        assert!(cert.subject_alternative_name().unwrap().is_none());
        assert!(cert.subject().to_string().contains("agent-0.tools"));
        let lifetime = cert.validity().not_after.timestamp()
            - i64::try_from(
                now.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_secs(),
            )
            .unwrap();
        assert!((3590..=3600).contains(&lifetime), "{lifetime}");
        let constraints = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::NameConstraints(nc) => Some(nc.clone()),
                _ => None,
            })
            .expect("name constraints");
        let permitted: Vec<String> = constraints
            .permitted_subtrees
            .unwrap()
            .iter()
            .map(|s| match &s.base {
                GeneralName::DNSName(d) => d.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(permitted, ["example.com"]);
        assert_eq!(constraints.excluded_subtrees.unwrap().len(), 2);
        // The chain ends with the root, and the intermediate's signature is the root's.
        assert!(
            issued
                .chain_pem
                .trim_end()
                .ends_with(root.cert_pem.trim_end())
        );
        let root_der = der_of_first(&root.cert_pem);
        let (_, root_cert) = X509Certificate::from_der(&root_der).unwrap();
        cert.verify_signature(Some(root_cert.public_key())).unwrap();
    }

    #[test]
    fn a_rule_without_hostnames_gives_an_unconstrained_intermediate() {
        let (_, csr) = csr();
        let issued = sign(
            &test_root(),
            "a.b",
            &csr,
            &InterceptNames::Any,
            DEFAULT_VALIDITY,
            SystemTime::now(),
        )
        .unwrap();
        let der = der_of_first(&issued.chain_pem);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert!(
            !cert
                .extensions()
                .iter()
                .any(|e| matches!(e.parsed_extension(), ParsedExtension::NameConstraints(_)))
        );
    }

    #[test]
    fn a_csr_whose_signature_does_not_verify_is_refused() {
        use base64::Engine;
        let (_, csr) = csr();
        let mut der = rustls_pemfile::csr(&mut csr.as_bytes())
            .unwrap()
            .unwrap()
            .as_ref()
            .to_vec();
        // The last byte is in the signature.
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let pem = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64::engine::general_purpose::STANDARD.encode(&der)
        );
        for bad in [pem.as_str(), "not a csr"] {
            let err = sign(
                &test_root(),
                "a.b",
                bad,
                &InterceptNames::Any,
                DEFAULT_VALIDITY,
                SystemTime::now(),
            )
            .unwrap_err();
            assert!(matches!(err, SignError::Csr(_)), "{err}");
        }
    }

    #[test]
    fn a_pod_that_intercepts_nothing_gets_no_ca() {
        let (_, csr) = csr();
        let err = sign(
            &test_root(),
            "a.b",
            &csr,
            &InterceptNames::Nothing,
            DEFAULT_VALIDITY,
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("a.b"), "{err}");
    }
}
