//! Who may receive configuration.
//!
//! A proxy names itself with a node id `<role>~<ip>~<name>` (role `standalone`,
//! `gateway` or `sidecar`). In folder mode, with a shared token file the proxy must
//! present `authorization: Bearer <token>`; without one, only clients on loopback are
//! served. In Kubernetes mode the proxy presents its projected service-account token,
//! which a TokenReview must show to belong to the pod or namespace the node id claims
//! ([`TokenReviewer`](crate::kubernetes::token_review::TokenReviewer)).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tonic::Status;

use crate::kubernetes::token_review::TokenReviewer;

/// A parsed node id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeId {
    /// `standalone`, `gateway` or `sidecar`.
    pub role: String,
    /// The proxy's IP address, as it claims.
    pub ip: String,
    /// The proxy's name (`<pod>.<namespace>` for a sidecar, a gateway's name).
    pub name: String,
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}~{}~{}", self.role, self.ip, self.name)
    }
}

impl NodeId {
    /// Parses `<role>~<ip>~<name>`.
    pub fn parse(id: &str) -> Result<NodeId, Status> {
        let bad = || {
            Status::invalid_argument(format!(
                "node id {id:?} is not `<role>~<ip>~<name>` with role standalone, gateway or sidecar"
            ))
        };
        let mut parts = id.splitn(3, '~');
        let (Some(role), Some(ip), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        if !["standalone", "gateway", "sidecar"].contains(&role)
            || ip.parse::<std::net::IpAddr>().is_err()
            || name.is_empty()
        {
            return Err(bad());
        }
        Ok(NodeId {
            role: role.into(),
            ip: ip.into(),
            name: name.into(),
        })
    }
}

/// How streams are authorized.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Only loopback clients.
    LoopbackOnly,
    /// Clients presenting the token in this file (read per stream, so it can rotate).
    TokenFile(PathBuf),
    /// Clients presenting a service-account token that a TokenReview shows to belong
    /// to the pod (sidecars) or namespace (gateways) of their node id.
    TokenReview(Arc<TokenReviewer>),
}

impl Auth {
    /// Checks one stream's peer address and `authorization` header.
    pub fn check(
        &self,
        peer: Option<SocketAddr>,
        authorization: Option<&str>,
    ) -> Result<(), Status> {
        match self {
            Auth::LoopbackOnly => match peer {
                Some(p) if p.ip().is_loopback() => Ok(()),
                _ => Err(Status::permission_denied(
                    "without --token-file the controller serves loopback clients only",
                )),
            },
            Auth::TokenFile(path) => {
                let expected = std::fs::read_to_string(path).map_err(|e| {
                    tracing::error!(file = %path.display(), error = %e, "cannot read the token file");
                    Status::unavailable("the controller cannot read its token file")
                })?;
                let expected = expected.trim();
                let presented = authorization.and_then(|a| a.strip_prefix("Bearer "));
                match presented {
                    Some(t)
                        if !expected.is_empty()
                            && constant_time_eq(t.as_bytes(), expected.as_bytes()) =>
                    {
                        Ok(())
                    }
                    _ => Err(Status::unauthenticated("missing or wrong bearer token")),
                }
            }
            // Checked by `admit`, once the node id is known; a stream without any
            // token is refused before it is read.
            Auth::TokenReview(_) => match authorization {
                Some(a) if a.starts_with("Bearer ") => Ok(()),
                _ => Err(Status::unauthenticated(
                    "present the pod's projected service-account token as `authorization: Bearer <token>`",
                )),
            },
        }
    }

    /// [`Auth::check`] on a gRPC request's peer and `authorization` metadata; returns
    /// that header, for [`Auth::admit`] once the node id is read.
    pub fn check_request<T>(&self, request: &tonic::Request<T>) -> Result<Option<String>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.check(request.remote_addr(), authorization.as_deref())?;
        Ok(authorization)
    }

    /// Checks that the client `check` let in may receive `node`'s configuration (only
    /// [`Auth::TokenReview`] ties a credential to a node).
    pub async fn admit(&self, node: &NodeId, authorization: Option<&str>) -> Result<(), Status> {
        match self {
            Auth::LoopbackOnly | Auth::TokenFile(_) => Ok(()),
            Auth::TokenReview(reviewer) => reviewer.admit(authorization, node).await,
        }
    }
}

/// Compares without an early exit, so timing does not reveal a matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_need_a_known_role_an_ip_and_a_name() {
        let n = NodeId::parse("sidecar~10.0.0.7~agent-0.tools").expect("valid");
        assert_eq!(
            (n.role.as_str(), n.name.as_str()),
            ("sidecar", "agent-0.tools")
        );
        for bad in [
            "",
            "standalone",
            "router~1.2.3.4~x",
            "gateway~nope~x",
            "gateway~::1~",
        ] {
            assert!(NodeId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn token_must_match_and_loopback_is_needed_without_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").expect("write");
        let auth = Auth::TokenFile(file);
        let remote: SocketAddr = "10.1.2.3:5000".parse().expect("addr");
        assert!(auth.check(Some(remote), Some("Bearer s3cret")).is_ok());
        assert!(auth.check(Some(remote), Some("Bearer s3cre")).is_err());
        assert!(auth.check(Some(remote), None).is_err());
        let local: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        assert!(Auth::LoopbackOnly.check(Some(local), None).is_ok());
        assert!(Auth::LoopbackOnly.check(Some(remote), None).is_err());
    }
}
