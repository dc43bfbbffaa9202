//! The mesh CA: the root that intercepted TLS chains up to.
//!
//! The apps of an injected pod trust the mesh root (the injector mounts its certificate
//! from the ConfigMap `agentmesh-mesh-ca` of the pod's namespace). The root's key stays
//! in the controller: where the root comes from (files in folder mode, a Secret the
//! controller generates or an operator provides in Kubernetes mode) is the source's
//! business; it hands the current root to the rest of the controller through a
//! [`RootWatch`], so a replaced root is used from the next signature on.

use std::sync::Arc;

/// The mesh root CA: its certificate and private key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct MeshRoot {
    /// The CA certificate, PEM (one certificate; it must be allowed to sign).
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1). Never logged.
    pub key_pem: String,
}

impl std::fmt::Debug for MeshRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshRoot")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The current mesh root, `None` until one is known (or when mesh TLS is not set up).
pub type RootWatch = tokio::sync::watch::Receiver<Option<Arc<MeshRoot>>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let root = MeshRoot {
            cert_pem: "CERT".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----secret".into(),
        };
        let shown = format!("{root:?}");
        assert!(shown.contains("CERT") && shown.contains("<redacted>"));
        assert!(!shown.contains("secret"));
    }
}
