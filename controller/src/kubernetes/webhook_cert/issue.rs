//! The webhook's certificate authority and serving certificate: issuing them with
//! rcgen, and deciding whether what the Secret holds can be kept.
//!
//! Pure: no API calls, no files, and the clock is a parameter, so every decision is
//! tested with made-up times. Private keys never appear in a `Debug` output or an error.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// How long the generated CA is valid: ten years.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a serving certificate is valid: one year.
pub const DEFAULT_SERVING_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// A certificate is renewed once less than this fraction of its lifetime is left.
pub const DEFAULT_RENEW_FRACTION: f64 = 1.0 / 3.0;
/// Certificates are valid from this long before they are issued, so an API server
/// whose clock is a little behind ours accepts them at once.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// How long certificates live and when they are renewed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lifetimes {
    /// Validity of the CA.
    pub ca: Duration,
    /// Validity of the serving certificate.
    pub serving: Duration,
    /// Renew a certificate (CA or serving) once less than this fraction of its
    /// lifetime is left (`1/3`: in the last third).
    pub renew_fraction: f64,
}

impl Default for Lifetimes {
    fn default() -> Lifetimes {
        Lifetimes {
            ca: DEFAULT_CA_VALIDITY,
            serving: DEFAULT_SERVING_VALIDITY,
            renew_fraction: DEFAULT_RENEW_FRACTION,
        }
    }
}

/// The PEM texts the Secret holds: the CA and its key, and the serving certificate and
/// its key.
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateSet {
    /// The CA certificate (`ca.crt`): what the webhook configuration's `caBundle` holds.
    pub ca_cert: String,
    /// The CA's private key (`ca.key`), kept so the serving certificate can be renewed
    /// under the same CA.
    pub ca_key: String,
    /// The serving certificate (`tls.crt`).
    pub cert: String,
    /// The serving certificate's private key (`tls.key`).
    pub key: String,
}

impl std::fmt::Debug for CertificateSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateSet")
            .field("ca_cert", &self.ca_cert)
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

/// What to do with the certificates a Secret holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep them: the serving certificate is valid for the names, chains to the CA, and
    /// is not due for renewal.
    Keep {
        /// When the serving certificate expires.
        not_after: SystemTime,
        /// When it is due for renewal.
        renew_at: SystemTime,
    },
    /// Keep the CA, issue a new serving certificate under it.
    RenewServing {
        /// Why, for the log.
        reason: String,
    },
    /// Issue a new CA and a new serving certificate.
    Replace {
        /// Why, for the log.
        reason: String,
    },
}

/// Why certificates could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// A service DNS name rcgen cannot put in a certificate.
    #[error("cannot issue a certificate for {names:?}: {reason}")]
    Names {
        /// The names asked for.
        names: Vec<String>,
        /// What rcgen said.
        reason: String,
    },
    /// Key generation or signing failed, or the stored CA cannot sign.
    #[error("cannot issue the webhook certificate: {0}")]
    Crypto(String),
}

/// The DNS names a serving certificate for Service `service` in `namespace` covers, the
/// one the API server dials (`NAME.NAMESPACE.svc`) first.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
    ]
}

/// Issues a new CA and a serving certificate for `names` under it, valid from `now`.
pub fn issue_all(
    names: &[String],
    lifetimes: &Lifetimes,
    now: SystemTime,
) -> Result<CertificateSet, IssueError> {
    let (ca_cert, ca_key) = issue_ca("agentmesh webhook CA", lifetimes.ca, now)?;
    renew_serving(&ca_cert, &ca_key, names, lifetimes, now)
}

/// Issues a self-signed CA named `common_name`, valid from `now` for `validity`, that
/// may sign end-entity certificates only (path length 0). Returns its certificate and
/// private key, PEM.
pub fn issue_ca(
    common_name: &str,
    validity: Duration,
    now: SystemTime,
) -> Result<(String, String), IssueError> {
    let crypto = |e: rcgen::Error| IssueError::Crypto(e.to_string());
    let key = KeyPair::generate().map_err(crypto)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = (now - CLOCK_SKEW).into();
    params.not_after = (now + validity).into();
    let cert = params.self_signed(&key).map_err(crypto)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Checks that `cert_pem` is a CA certificate and `key_pem` its private key; returns
/// when it expires. The reason names what is wrong, never the key.
pub fn check_ca(cert_pem: &str, key_pem: &str) -> Result<SystemTime, String> {
    let ca = Parsed::new(cert_pem, key_pem)?;
    if !ca.is_ca {
        return Err("the certificate is not a CA certificate (basicConstraints CA:FALSE)".into());
    }
    Ok(ca.not_after)
}

/// Whether the first certificate of `pem` is a CA certificate (its key unknown): what
/// may stay trusted next to a replacement for a while.
pub fn is_ca_certificate(pem: &str) -> bool {
    first_cert(pem).is_ok_and(|der| {
        x509_parser::parse_x509_certificate(&der).is_ok_and(|(_, cert)| {
            cert.basic_constraints()
                .ok()
                .flatten()
                .is_some_and(|b| b.value.ca)
        })
    })
}

/// Issues a serving certificate for `names` under the given CA (PEM), valid from `now`.
pub fn renew_serving(
    ca_cert: &str,
    ca_key: &str,
    names: &[String],
    lifetimes: &Lifetimes,
    now: SystemTime,
) -> Result<CertificateSet, IssueError> {
    let crypto = |e: rcgen::Error| IssueError::Crypto(e.to_string());
    let issuer = Issuer::from_ca_cert_pem(ca_cert, KeyPair::from_pem(ca_key).map_err(crypto)?)
        .map_err(crypto)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(|e| IssueError::Names {
        names: names.to_vec(),
        reason: e.to_string(),
    })?;
    let mut dn = DistinguishedName::new();
    if let Some(first) = names.first() {
        dn.push(DnType::CommonName, first.as_str());
    }
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = (now - CLOCK_SKEW).into();
    params.not_after = (now + lifetimes.serving).into();
    let key = KeyPair::generate().map_err(crypto)?;
    let cert = params.signed_by(&key, &issuer).map_err(crypto)?;
    Ok(CertificateSet {
        ca_cert: ca_cert.to_owned(),
        ca_key: ca_key.to_owned(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Whether the certificates held (`None`: nothing, or not all four PEM texts) can be
/// kept at `now` for `names`, must be renewed, or must be replaced.
pub fn assess(
    held: Option<&CertificateSet>,
    names: &[String],
    lifetimes: &Lifetimes,
    now: SystemTime,
) -> Verdict {
    let Some(held) = held else {
        return Verdict::Replace {
            reason: "no certificate yet".into(),
        };
    };
    let ca = match Parsed::new(&held.ca_cert, &held.ca_key) {
        Ok(ca) => ca,
        Err(reason) => {
            return Verdict::Replace {
                reason: format!("the CA is unusable: {reason}"),
            };
        }
    };
    if !ca.is_ca {
        return Verdict::Replace {
            reason: "ca.crt is not a CA certificate".into(),
        };
    }
    if let Some(reason) = ca.due(lifetimes.renew_fraction, now) {
        return Verdict::Replace {
            reason: format!("the CA {reason}"),
        };
    }
    let serving = match Parsed::new(&held.cert, &held.key) {
        Ok(serving) => serving,
        Err(reason) => {
            return Verdict::RenewServing {
                reason: format!("the serving certificate is unusable: {reason}"),
            };
        }
    };
    if let Some(reason) = serving.due(lifetimes.renew_fraction, now) {
        return Verdict::RenewServing {
            reason: format!("the serving certificate {reason}"),
        };
    }
    for name in names {
        if let Err(reason) = verify(&serving.der, &ca.der, name, now) {
            return Verdict::RenewServing {
                reason: format!("the serving certificate does not verify for {name}: {reason}"),
            };
        }
    }
    Verdict::Keep {
        not_after: serving.not_after,
        renew_at: serving.renew_at(lifetimes.renew_fraction),
    }
}

/// When the first certificate of a PEM text expires.
pub fn not_after(cert_pem: &str) -> Result<SystemTime, String> {
    let der = first_cert(cert_pem)?;
    validity(&der).map(|(_, not_after)| not_after)
}

/// A certificate and its key, read and checked to belong together.
struct Parsed {
    der: CertificateDer<'static>,
    is_ca: bool,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Parsed {
    fn new(cert_pem: &str, key_pem: &str) -> Result<Parsed, String> {
        let der = first_cert(cert_pem)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| format!("unreadable key: {e}"))?;
        if key.der_bytes() != &*cert.tbs_certificate.subject_pki.subject_public_key.data {
            return Err("the key is not the certificate's".into());
        }
        let is_ca = cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|b| b.value.ca);
        let (not_before, not_after) = validity(&der)?;
        Ok(Parsed {
            der,
            is_ca,
            not_before,
            not_after,
        })
    }

    /// When less than `fraction` of the lifetime is left.
    fn renew_at(&self, fraction: f64) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_after - lifetime.mul_f64(fraction.clamp(0.0, 1.0))
    }

    /// Why the certificate must be renewed at `now`, if it must.
    fn due(&self, fraction: f64, now: SystemTime) -> Option<String> {
        let expiry = rfc3339(self.not_after);
        if now >= self.not_after {
            Some(format!("expired at {expiry}"))
        } else if now < self.not_before {
            Some(format!("is not valid before {}", rfc3339(self.not_before)))
        } else if now >= self.renew_at(fraction) {
            Some(format!("expires at {expiry}, within its renewal window"))
        } else {
            None
        }
    }
}

fn first_cert(pem: &str) -> Result<CertificateDer<'static>, String> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .ok_or_else(|| "no PEM certificate".to_string())?
        .map_err(|e| format!("not PEM: {e}"))
}

fn validity(der: &[u8]) -> Result<(SystemTime, SystemTime), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let at = |t: x509_parser::time::ASN1Time| {
        let seconds = t.timestamp();
        u64::try_from(seconds)
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
            .map_err(|_| format!("validity time {seconds} is before 1970"))
    };
    Ok((
        at(cert.validity().not_before)?,
        at(cert.validity().not_after)?,
    ))
}

/// Verifies `leaf` for server `name` against the trust anchor `ca` at `now`, as the
/// API server will.
pub(crate) fn verify(
    leaf: &CertificateDer<'_>,
    ca: &CertificateDer<'_>,
    name: &str,
    now: SystemTime,
) -> Result<(), String> {
    let anchor = webpki::anchor_from_trusted_cert(ca).map_err(|e| e.to_string())?;
    let cert = webpki::EndEntityCert::try_from(leaf).map_err(|e| e.to_string())?;
    let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    cert.verify_for_usage(
        algs.all,
        &[anchor],
        &[],
        UnixTime::since_unix_epoch(since_epoch),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name).map_err(|e| e.to_string())?;
    cert.verify_is_valid_for_subject_name(&server_name)
        .map_err(|e| e.to_string())
}

/// A time as RFC 3339 text (UTC), for logs and reasons.
pub fn rfc3339(time: SystemTime) -> String {
    let seconds = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    k8s_openapi::jiff::Timestamp::from_second(i64::try_from(seconds).unwrap_or(i64::MAX))
        .map_or_else(|_| format!("{seconds}s after the epoch"), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn names() -> Vec<String> {
        service_names("agentmesh-controller", "agentmesh-system")
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn nothing_held_is_replaced() {
        let verdict = assess(None, &names(), &Lifetimes::default(), now());
        assert!(matches!(verdict, Verdict::Replace { .. }), "{verdict:?}");
    }

    #[test]
    fn a_fresh_set_is_kept_until_its_last_third() {
        let lifetimes = Lifetimes::default();
        let set = issue_all(&names(), &lifetimes, now()).unwrap();
        let Verdict::Keep {
            not_after,
            renew_at,
        } = assess(Some(&set), &names(), &lifetimes, now())
        else {
            panic!("a fresh set is not kept");
        };
        assert_eq!(not_after, now() + lifetimes.serving);
        // The lifetime counts from an hour before issuance (clock skew).
        let lifetime = lifetimes.serving + CLOCK_SKEW;
        assert_eq!(renew_at, not_after - lifetime / 3);
        let later = assess(
            Some(&set),
            &names(),
            &lifetimes,
            renew_at - Duration::from_secs(1),
        );
        assert!(matches!(later, Verdict::Keep { .. }), "{later:?}");
    }

    #[test]
    fn an_expiring_serving_certificate_is_renewed_under_the_same_ca() {
        let lifetimes = Lifetimes::default();
        let set = issue_all(&names(), &lifetimes, now()).unwrap();
        let late = now() + lifetimes.serving - 30 * DAY;
        let verdict = assess(Some(&set), &names(), &lifetimes, late);
        let Verdict::RenewServing { reason } = verdict else {
            panic!("{verdict:?}");
        };
        assert!(reason.contains("renewal window"), "{reason}");
        let renewed = renew_serving(&set.ca_cert, &set.ca_key, &names(), &lifetimes, late).unwrap();
        assert_eq!(renewed.ca_cert, set.ca_cert);
        assert_ne!(renewed.cert, set.cert);
        assert!(matches!(
            assess(Some(&renewed), &names(), &lifetimes, late),
            Verdict::Keep { .. }
        ));
        // Past its expiry it is renewed too.
        let expired = assess(
            Some(&set),
            &names(),
            &lifetimes,
            now() + 2 * lifetimes.serving,
        );
        assert!(
            matches!(&expired, Verdict::RenewServing { reason } if reason.contains("expired")),
            "{expired:?}"
        );
    }

    #[test]
    fn a_serving_certificate_for_other_names_is_renewed() {
        let lifetimes = Lifetimes::default();
        let set = issue_all(
            &service_names("agentmesh-controller", "elsewhere"),
            &lifetimes,
            now(),
        )
        .unwrap();
        let verdict = assess(Some(&set), &names(), &lifetimes, now());
        assert!(
            matches!(&verdict, Verdict::RenewServing { reason }
                if reason.contains("agentmesh-controller.agentmesh-system.svc")),
            "{verdict:?}"
        );
    }

    #[test]
    fn an_expiring_ca_is_replaced() {
        let lifetimes = Lifetimes::default();
        let set = issue_all(&names(), &lifetimes, now()).unwrap();
        let verdict = assess(Some(&set), &names(), &lifetimes, now() + 3000 * DAY);
        assert!(
            matches!(&verdict, Verdict::Replace { reason } if reason.starts_with("the CA")),
            "{verdict:?}"
        );
    }

    #[test]
    fn garbage_in_the_secret_is_replaced_or_renewed() {
        let lifetimes = Lifetimes::default();
        let good = issue_all(&names(), &lifetimes, now()).unwrap();
        let other = issue_all(&names(), &lifetimes, now()).unwrap();
        let cases = [
            (
                "garbage CA",
                CertificateSet {
                    ca_cert: "not a certificate".into(),
                    ..good.clone()
                },
                true,
            ),
            (
                "a CA key that is not the CA's",
                CertificateSet {
                    ca_key: other.ca_key.clone(),
                    ..good.clone()
                },
                true,
            ),
            (
                "a serving certificate as the CA",
                CertificateSet {
                    ca_cert: good.cert.clone(),
                    ca_key: good.key.clone(),
                    ..good.clone()
                },
                true,
            ),
            (
                "garbage serving key",
                CertificateSet {
                    key: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into(),
                    ..good.clone()
                },
                false,
            ),
            (
                "a serving certificate from another CA",
                CertificateSet {
                    cert: other.cert.clone(),
                    key: other.key.clone(),
                    ..good.clone()
                },
                false,
            ),
        ];
        for (case, set, replaced) in cases {
            let verdict = assess(Some(&set), &names(), &lifetimes, now());
            match verdict {
                Verdict::Replace { .. } if replaced => {}
                Verdict::RenewServing { .. } if !replaced => {}
                other => panic!("{case}: {other:?}"),
            }
        }
    }

    #[test]
    fn debug_output_shows_no_private_key() {
        let set = issue_all(&names(), &Lifetimes::default(), now()).unwrap();
        let shown = format!("{set:?}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(shown.contains("CERTIFICATE"));
    }
}
