//! Private keys out of printed output: `agentmesh-controller translate` prints what each
//! proxy is served, and a listener's certificate key (from a Kubernetes Secret) must not
//! reach a terminal, a log or a golden file.
//!
//! Each `privateKeyPem` value becomes a marker carrying a SHA-256 fingerprint of the key
//! (`<redacted sha256:0123456789abcdef>`): a changed key still shows as a changed line,
//! and two listeners using the same key show the same marker. The resources served over
//! xDS are not touched; this is for printing only.

use serde_json::Value;

/// The field (proto3 JSON name of `ServerCertificate.private_key_pem`) redacted.
const PRIVATE_KEY_FIELD: &str = "privateKeyPem";

/// The marker that replaces a private key: its SHA-256, first 16 hex digits.
pub fn marker(key_pem: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key_pem.as_bytes());
    let hex: String = digest
        .as_ref()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("<redacted sha256:{hex}>")
}

/// Replaces every non-empty `privateKeyPem` string in `value`, at any depth, with its
/// [`marker`].
pub fn private_keys(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match v {
                    Value::String(key) if k == PRIVATE_KEY_FIELD && !key.is_empty() => {
                        *v = Value::String(marker(key));
                    }
                    _ => private_keys(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(private_keys),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_fingerprints_and_nothing_else_changes() {
        let key = "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n";
        let mut v = serde_json::json!({"gateways": {"a": {"listener": {"tls": {"certificates": [
            {"certPem": "CERT", "privateKeyPem": key},
            {"certPem": "CERT2", "privateKeyPem": key, "keyFile": "k.pem"}
        ]}}}}});
        private_keys(&mut v);
        let text = v.to_string();
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        let certs = &v["gateways"]["a"]["listener"]["tls"]["certificates"];
        assert_eq!(certs[0]["privateKeyPem"], certs[1]["privateKeyPem"]);
        assert_eq!(certs[0]["privateKeyPem"], marker(key));
        assert!(marker(key).starts_with("<redacted sha256:"));
        assert_ne!(marker(key), marker("another key"));
        assert_eq!(certs[1]["keyFile"], "k.pem");
        assert_eq!(certs[0]["certPem"], "CERT");
    }
}
