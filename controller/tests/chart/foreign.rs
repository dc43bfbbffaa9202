//! Objects of other projects' CRDs, which Kubernetes' own schemas do not cover.

use serde_json::Value;

/// Kinds without a schema in Kubernetes' OpenAPI (other projects' CRDs).
/// kubernetes-validate has no schema for them and says so with a warning (it has no
/// flag to load CRD schemas); [`check_foreign`] checks them instead. Our own CRDs are
/// `CustomResourceDefinition` objects, which it does validate.
pub const FOREIGN_KINDS: &[&str] = &["GatewayClass", "Certificate", "Issuer"];

/// Checks an object of another project's CRD as strictly as what we have offline allows:
/// a GatewayClass round-trips through the Gateway API's Rust types unchanged (so it has
/// no field they lack), and cert-manager objects use only fields and enum values of
/// cert-manager's `v1` API.
pub fn check_foreign(option: &str, object: &Value) {
    let kind = object["kind"].as_str().unwrap();
    match kind {
        "GatewayClass" => {
            use gateway_api::apis::standard::gatewayclasses::GatewayClass;
            assert_eq!(object["apiVersion"], "gateway.networking.k8s.io/v1");
            let typed: GatewayClass = serde_json::from_value(object.clone())
                .unwrap_or_else(|e| panic!("{option}: GatewayClass: {e}"));
            assert_eq!(
                &serde_json::to_value(&typed).unwrap(),
                object,
                "{option}: the GatewayClass has fields the Gateway API lacks"
            );
        }
        "Certificate" | "Issuer" => {
            assert_eq!(object["apiVersion"], "cert-manager.io/v1", "{option}");
            let spec = object["spec"].as_object().unwrap();
            let allowed: &[&str] = if kind == "Issuer" {
                &["selfSigned", "ca", "acme", "vault", "venafi"]
            } else {
                &[
                    "additionalOutputFormats",
                    "commonName",
                    "dnsNames",
                    "duration",
                    "emailAddresses",
                    "encodeUsagesInRequest",
                    "ipAddresses",
                    "isCA",
                    "issuerRef",
                    "keystores",
                    "literalSubject",
                    "nameConstraints",
                    "otherNames",
                    "privateKey",
                    "renewBefore",
                    "renewBeforePercentage",
                    "revisionHistoryLimit",
                    "secretName",
                    "secretTemplate",
                    "signatureAlgorithm",
                    "subject",
                    "uris",
                    "usages",
                ]
            };
            for field in spec.keys() {
                assert!(
                    allowed.contains(&field.as_str()),
                    "{option}: {kind} has no field spec.{field}"
                );
            }
            if kind == "Issuer" {
                assert_eq!(spec.len(), 1, "{option}: an Issuer has one type");
                return;
            }
            for field in ["secretName", "issuerRef", "dnsNames"] {
                assert!(
                    spec.contains_key(field),
                    "{option}: Certificate lacks {field}"
                );
            }
            for field in object["spec"]["issuerRef"].as_object().unwrap().keys() {
                assert!(
                    ["name", "kind", "group"].contains(&field.as_str()),
                    "{field}"
                );
            }
            for field in object["spec"]["privateKey"].as_object().unwrap().keys() {
                let known = ["algorithm", "encoding", "rotationPolicy", "size"];
                assert!(known.contains(&field.as_str()), "{field}");
            }
            let algorithm = &object["spec"]["privateKey"]["algorithm"];
            assert!(["RSA", "ECDSA", "Ed25519"].contains(&algorithm.as_str().unwrap()));
            for usage in object["spec"]["usages"].as_array().unwrap() {
                let known = [
                    "signing",
                    "digital signature",
                    "content commitment",
                    "key encipherment",
                    "key agreement",
                    "data encipherment",
                    "cert sign",
                    "crl sign",
                    "encipher only",
                    "decipher only",
                    "any",
                    "server auth",
                    "client auth",
                    "code signing",
                    "email protection",
                    "s/mime",
                    "ipsec end system",
                    "ipsec tunnel",
                    "ipsec user",
                    "timestamping",
                    "ocsp signing",
                    "microsoft sgc",
                    "netscape sgc",
                ];
                assert!(known.contains(&usage.as_str().unwrap()), "{usage}");
            }
        }
        other => panic!("{option}: no check for foreign kind {other}"),
    }
}
