//! The mesh CA the controller issues (`meshCa.controller` in the sidecar settings): an
//! intermediate CA this proxy asks for, holds, and renews.
//!
//! The proxy generates an ECDSA P-256 key, sends a CSR to the controller's
//! `agentmesh.ca.v1.MeshCertificates/SignIntermediate` (the xDS address, the xDS
//! credentials), and gets back the intermediate (constrained by the controller to the
//! names the pod's policies intercept) and the mesh root. The key lives only in the
//! [`MeshCa`] built from them: it is never written, logged or dumped.
//!
//! The xDS client drives this (`config::xds`): before it compiles a config that asks for
//! a controller-issued CA it makes sure one is held for that config's INTERCEPT
//! hostnames ([`Wants`]), so the config is applied (and the proxy reports ready) only
//! with a CA that can mint for it. It renews at two thirds of the validity and whenever
//! the hostnames change; a failed request keeps the current intermediate, is logged and
//! counted, and is retried with backoff. The compiler reads the held CA from the
//! [`IssuedCa`] slot of the compile context.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use agentmesh_proto::ca::v1::SignIntermediateRequest;
use agentmesh_proto::ca::v1::mesh_certificates_client::MeshCertificatesClient;
use agentmesh_proto::config::v1 as pb;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

use super::file::Resources;
use crate::listen::capture::mesh_ca::{self, MeshCa};

/// How long a request to the controller may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a config needs of a controller-issued CA: the hostnames of its INTERCEPT rules
/// (lowercase; `""` for a rule without hostnames, which intercepts anything) and the leaf
/// cache size. A held intermediate issued for other hostnames is replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wants {
    /// Hostname patterns of the intercepting rules, as configured (`*.example.com`).
    pub hostnames: BTreeSet<String>,
    /// `meshCa.cacheSize`, resolved.
    pub cache_size: usize,
}

impl Wants {
    /// What `resources` need, or `None` when their mesh CA is not controller-issued.
    pub fn of(resources: &Resources) -> Option<Wants> {
        let settings = resources.sidecar.as_ref()?;
        let ca = settings
            .mesh_ca
            .as_ref()
            .filter(|ca| ca.controller.is_some())?;
        let mut hostnames = BTreeSet::new();
        for rule in &settings.egress {
            if rule.tls != pb::EgressTls::Intercept as i32
                || rule.action != pb::OutboundAction::Allow as i32
            {
                continue;
            }
            if rule.hostnames.is_empty() {
                hostnames.insert(String::new());
            }
            for h in &rule.hostnames {
                hostnames.insert(h.trim_end_matches('.').to_ascii_lowercase());
            }
        }
        Some(Wants {
            hostnames,
            cache_size: match ca.cache_size {
                0 => mesh_ca::DEFAULT_CACHE_SIZE,
                n => usize::try_from(n).unwrap_or(usize::MAX),
            },
        })
    }

    /// A name inside the intermediate's constraints, to prove it signs what verifies: a
    /// child of the first hostname (whose subtree the controller permits), or any name
    /// when a rule intercepts without hostnames.
    fn probe_name(&self) -> String {
        match self.hostnames.iter().find(|h| !h.is_empty()) {
            Some(h) if !self.hostnames.contains("") => {
                format!("agentmesh-probe.{}", h.strip_prefix("*.").unwrap_or(h))
            }
            _ => "agentmesh-probe.invalid".into(),
        }
    }
}

/// An intermediate the controller issued, and what for.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The CA minting leaves with it.
    pub ca: Arc<MeshCa>,
    /// The config's needs it was issued for.
    pub wants: Wants,
    /// When it expires.
    pub not_after: SystemTime,
    /// When to ask for the next one: two thirds into its validity.
    pub renew_at: SystemTime,
    /// The DNS subtrees the controller constrained it to (empty: none), for logs.
    pub permitted_dns: Vec<String>,
}

/// The held intermediate, shared by the xDS client (which fills it) and the compiler
/// (which reads it).
#[derive(Debug, Default)]
pub struct IssuedCa {
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    current: Option<Issued>,
    /// Failed requests since the last success.
    failures: u32,
    /// When the last request failed.
    failed_at: Option<Instant>,
}

impl IssuedCa {
    /// The CA of the held intermediate, if any.
    pub fn current_ca(&self) -> Option<Arc<MeshCa>> {
        self.lock().current.as_ref().map(|i| i.ca.clone())
    }

    /// The held intermediate, if it was issued for `wants` and has not expired.
    pub fn usable_for(&self, wants: &Wants) -> Option<Issued> {
        self.lock()
            .current
            .as_ref()
            .filter(|i| i.wants == *wants && SystemTime::now() < i.not_after)
            .cloned()
    }

    /// Holds a new intermediate.
    pub fn set(&self, issued: Issued) {
        let mut state = self.lock();
        state.current = Some(issued);
        state.failures = 0;
        state.failed_at = None;
    }

    /// Records a failed request; returns how many failed in a row.
    pub fn failed(&self) -> u32 {
        let mut state = self.lock();
        state.failures = state.failures.saturating_add(1);
        state.failed_at = Some(Instant::now());
        state.failures
    }

    /// Forgets the intermediate (the config no longer needs one).
    pub fn clear(&self) {
        *self.lock() = SlotState::default();
    }

    /// When the xDS client should next ask for an intermediate, given whether its config
    /// needs one: after a failure, `backoff(failures)` later; else at the held one's
    /// renewal time; `None` when nothing is due.
    pub fn next_attempt(&self, needed: bool, backoff: impl Fn(u32) -> Duration) -> Option<Instant> {
        if !needed {
            return None;
        }
        let state = self.lock();
        if let Some(failed_at) = state.failed_at {
            return Some(failed_at + backoff(state.failures));
        }
        let renew_at = state.current.as_ref()?.renew_at;
        let wait = renew_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        Some(Instant::now() + wait)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How to reach the controller's CA service: the xDS connection settings.
#[derive(Debug, Clone)]
pub struct CaClient {
    /// The controller, like `http://127.0.0.1:16010`.
    pub address: String,
    /// This proxy's node id.
    pub node_id: String,
    /// The bearer token file (read per request, so it can rotate).
    pub token_file: Option<PathBuf>,
}

impl CaClient {
    /// Asks the controller for an intermediate for `wants`.
    pub async fn request(&self, wants: &Wants) -> Result<Issued, String> {
        let key = KeyPair::generate().map_err(|e| format!("cannot generate a key: {e}"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, self.node_id.as_str());
        params.distinguished_name = dn;
        let csr = params
            .serialize_request(&key)
            .and_then(|csr| csr.pem())
            .map_err(|e| format!("cannot write the CSR: {e}"))?;
        let mut request = tonic::Request::new(SignIntermediateRequest {
            node_id: self.node_id.clone(),
            csr_pem: csr,
        });
        request.set_timeout(REQUEST_TIMEOUT);
        if let Some(path) = &self.token_file {
            let token = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let value = format!("Bearer {}", token.trim())
                .parse()
                .map_err(|_| "the token file holds invalid characters".to_string())?;
            request.metadata_mut().insert("authorization", value);
        }
        let channel = tonic::transport::Endpoint::from_shared(self.address.clone())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.address))?;
        let requested_at = SystemTime::now();
        let response = MeshCertificatesClient::new(channel)
            .sign_intermediate(request)
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        let mut chain = rustls_pemfile::certs(&mut response.chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the controller's chain is not PEM: {e}"))?;
        if chain.len() < 2 {
            return Err("the controller's chain needs the intermediate and the root".into());
        }
        let root = chain.pop().ok_or("empty chain")?;
        let intermediate = chain.swap_remove(0);
        let not_after = response
            .not_after
            .and_then(|t| u64::try_from(t.seconds).ok())
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
            .ok_or("the controller's answer has no expiry")?;
        let validity = not_after
            .duration_since(requested_at)
            .map_err(|_| "the controller issued an intermediate that has already expired")?;
        let ca = MeshCa::from_issued(
            intermediate,
            key,
            &root,
            not_after,
            &wants.probe_name(),
            wants.cache_size,
        )?;
        Ok(Issued {
            ca: Arc::new(ca),
            wants: wants.clone(),
            not_after,
            renew_at: requested_at + validity * 2 / 3,
            permitted_dns: response.permitted_dns,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn resources(rules: Vec<pb::EgressRule>, controller: bool) -> Resources {
        Resources {
            sidecar: Some(pb::SidecarSettings {
                egress: rules,
                mesh_ca: Some(pb::MeshCa {
                    controller: controller.then_some(pb::ControllerIssuedCa {}),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn intercept(hosts: &[&str]) -> pb::EgressRule {
        pb::EgressRule {
            hostnames: hosts.iter().map(|h| h.to_string()).collect(),
            tls: pb::EgressTls::Intercept as i32,
            ..Default::default()
        }
    }

    #[test]
    fn wants_follow_the_intercepting_rules() {
        assert_eq!(
            Wants::of(&resources(vec![intercept(&["a.test"])], false)),
            None
        );
        let wants = Wants::of(&resources(
            vec![
                intercept(&["*.Example.com"]),
                pb::EgressRule {
                    hostnames: vec!["passthrough.test".into()],
                    ..Default::default()
                },
            ],
            true,
        ))
        .unwrap();
        assert_eq!(wants.hostnames, ["*.example.com".to_string()].into());
        assert_eq!(wants.cache_size, mesh_ca::DEFAULT_CACHE_SIZE);
        assert_eq!(wants.probe_name(), "agentmesh-probe.example.com");
        let any = Wants::of(&resources(
            vec![intercept(&["x.test"]), intercept(&[])],
            true,
        ))
        .unwrap();
        assert_eq!(any.probe_name(), "agentmesh-probe.invalid");
    }

    #[test]
    fn attempts_back_off_after_failures_and_wait_for_renewal_otherwise() {
        let slot = IssuedCa::default();
        let backoff = |n: u32| Duration::from_secs(u64::from(n));
        assert_eq!(slot.next_attempt(true, backoff), None);
        assert_eq!(slot.failed(), 1);
        assert_eq!(slot.failed(), 2);
        let next = slot.next_attempt(true, backoff).unwrap();
        let wait = next.saturating_duration_since(Instant::now());
        assert!(wait > Duration::from_millis(1500) && wait <= Duration::from_secs(2));
        assert_eq!(slot.next_attempt(false, backoff), None);
        slot.clear();
        assert_eq!(slot.next_attempt(true, backoff), None);
    }
}
