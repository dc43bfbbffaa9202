//! TLS termination of HTTPS listeners and TLS listeners in mode Terminate:
//! `tls.certificateRefs` to `kubernetes.io/tls` Secrets, sent to the proxy as inline PEM.
//!
//! Each certificate is checked with the proxy's own TLS loader (the chain parses, the key
//! parses and matches it), so a bad Secret is reported on its listener
//! (ResolvedRefs=False, `InvalidCertificateRef`) instead of making the proxy reject the
//! whole update. A Secret in another namespace needs a ReferenceGrant there
//! (`RefNotPermitted` otherwise). Certificates are served for the listener's hostname
//! when it has one, else for the DNS names they carry.

use agentmesh_proto::config::v1 as pb;
use gateway_api::apis::standard::gateways::{GatewayListenersTls, GatewayListenersTlsMode};
use k8s_openapi::api::core::v1::Secret;

use super::Problem;
use super::backends::{Grants, RefSide};
use crate::objects::{GATEWAY_GROUP, ObjectRef, Objects};

/// Why a listener's TLS settings cannot be served.
pub(super) enum TlsProblem {
    /// The settings themselves are invalid (Accepted=False).
    Invalid(Problem),
    /// Certificate references do not resolve (ResolvedRefs=False).
    Refs(Vec<Problem>),
}

/// The TLS termination settings of an HTTPS or TLS Terminate listener (at `field`,
/// `spec.listeners[i]`).
pub(super) fn server_tls(
    gateway: &ObjectRef,
    field: &str,
    protocol: super::Protocol,
    hostname: Option<&str>,
    settings: Option<&GatewayListenersTls>,
    objects: &Objects,
    grants: &Grants<'_>,
) -> Result<pb::ServerTls, TlsProblem> {
    let invalid = |m: String| TlsProblem::Invalid(Problem::new("UnsupportedValue", m));
    let what = match protocol {
        super::Protocol::Https => "an HTTPS listener",
        _ => "a TLS listener in mode Terminate",
    };
    let Some(settings) = settings else {
        return Err(invalid(format!("{field}.tls: required for {what}")));
    };
    if protocol == super::Protocol::Https
        && matches!(settings.mode, Some(GatewayListenersTlsMode::Passthrough))
    {
        return Err(invalid(format!(
            "{field}.tls.mode: Passthrough is not supported on an HTTPS listener (it terminates TLS)"
        )));
    }
    let refs = settings.certificate_refs.as_deref().unwrap_or_default();
    if refs.is_empty() {
        return Err(invalid(format!(
            "{field}.tls.certificateRefs: {what} needs at least one certificate"
        )));
    }
    let mut certificates = Vec::new();
    let mut problems = Vec::new();
    for (k, r) in refs.iter().enumerate() {
        let rfield = format!("{field}.tls.certificateRefs[{k}]");
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("Secret");
        if !group.is_empty() || kind != "Secret" {
            problems.push(Problem::new(
                "InvalidCertificateRef",
                format!("{rfield}: {kind} is not a supported certificate kind (Secret)"),
            ));
            continue;
        }
        let namespace = r.namespace.as_deref().unwrap_or(&gateway.namespace);
        let from = RefSide {
            group: GATEWAY_GROUP,
            kind: "Gateway",
            namespace: &gateway.namespace,
        };
        let to = RefSide {
            group: "",
            kind: "Secret",
            namespace,
        };
        if !grants.permits(from, to, &r.name) {
            problems.push(Problem::new(
                "RefNotPermitted",
                format!(
                    "{rfield}: Secret {namespace}/{} is in another namespace and no ReferenceGrant there allows Gateways from {} to refer to it",
                    r.name, gateway.namespace
                ),
            ));
            continue;
        }
        match certificate(objects, namespace, &r.name, hostname) {
            Ok(c) => certificates.push(c),
            Err(why) => problems.push(Problem::new(
                "InvalidCertificateRef",
                format!("{rfield}: Secret {namespace}/{}: {why}", r.name),
            )),
        }
    }
    if !problems.is_empty() {
        return Err(TlsProblem::Refs(problems));
    }
    Ok(pb::ServerTls { certificates })
}

/// The certificate of one Secret, checked by the proxy's TLS loader.
fn certificate(
    objects: &Objects,
    namespace: &str,
    name: &str,
    hostname: Option<&str>,
) -> Result<pb::ServerCertificate, String> {
    let secret = objects
        .secrets
        .iter()
        .find(|s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.metadata.name.as_deref() == Some(name)
        })
        .ok_or("does not exist")?;
    if let Some(t) = secret.type_.as_deref()
        && t != "kubernetes.io/tls"
    {
        return Err(format!("type is {t:?}, not kubernetes.io/tls"));
    }
    let cert_pem = secret_text(secret, "tls.crt")?;
    let private_key_pem = secret_text(secret, "tls.key")?;
    let certificate = pb::ServerCertificate {
        cert_file: String::new(),
        key_file: String::new(),
        hostnames: hostname.iter().map(|h| h.to_string()).collect(),
        cert_pem,
        private_key_pem,
    };
    agentmesh_proxy::listen::tls::server_config(&[(
        String::new(),
        String::new(),
        certificate.clone(),
    )])
    .map_err(|errors| {
        errors
            .iter()
            .map(|e| {
                // The field is `.certPem` / `.privateKeyPem`: say which Secret key it is.
                let key = if e.field.ends_with("certPem") {
                    "tls.crt"
                } else {
                    "tls.key"
                };
                format!("{key}: {}", e.reason)
            })
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    Ok(certificate)
}

/// A Secret's entry as text (`data`, base64 in the manifest, or `stringData`).
fn secret_text(secret: &Secret, key: &str) -> Result<String, String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.clone().into_bytes())
        })
        .ok_or_else(|| format!("has no {key}"))?;
    String::from_utf8(bytes).map_err(|_| format!("{key} is not PEM text"))
}
