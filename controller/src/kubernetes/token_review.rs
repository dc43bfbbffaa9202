//! Proxy identity in Kubernetes mode: a projected service-account token, verified with a
//! TokenReview, must belong to the pod (sidecars) or namespace (gateways) the proxy's
//! node id claims.
//!
//! The proxy sends `authorization: Bearer <token>`, a token the kubelet projects with
//! our audience (`agentmesh` by default). The controller asks the API server
//! (`POST /apis/authentication.k8s.io/v1/tokenreviews`, audiences = ours) and admits the
//! stream only when the token is authenticated for our audience, is a service account's,
//! and its claims match the node id:
//!
//! - `sidecar~ip~<pod>.<namespace>`: the service account's namespace is `<namespace>`,
//!   and the token's pod claim (`authentication.kubernetes.io/pod-name`, and `pod-uid`
//!   when the controller knows the pod) names `<pod>`; a token without a pod claim is
//!   accepted when the pod `<namespace>/<pod>` exists and runs as that service account.
//! - `gateway~ip~<gateway>.<namespace>`: the service account's namespace is
//!   `<namespace>`.
//! - `standalone~…` nodes are not served in Kubernetes mode.
//!
//! Positive answers are cached for [`CACHE_FOR`] per (token, node id), so a reconnecting
//! proxy does not cost a TokenReview each time; refusals are never cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tonic::Status;

use crate::auth::NodeId;
use crate::objects::Objects;
use crate::snapshot::{Catalog, split_name};

/// How long an admitted (token, node id) pair is admitted without asking again.
pub const CACHE_FOR: Duration = Duration::from_secs(30);

/// The most pairs the cache holds (expired ones are dropped first).
const CACHE_LIMIT: usize = 10_000;

/// The `status.user.extra` key of the pod a token is bound to.
const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
/// The `status.user.extra` key of that pod's uid.
const POD_UID: &str = "authentication.kubernetes.io/pod-uid";

/// Verifies proxies' service-account tokens.
pub struct TokenReviewer {
    client: kube::Client,
    audience: String,
    catalogs: watch::Receiver<Arc<Catalog>>,
    admitted: Mutex<HashMap<(String, String), Instant>>,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// Who a token belongs to, as the API server says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdentity {
    /// The service account's namespace.
    pub namespace: String,
    /// The service account's name.
    pub service_account: String,
    /// The pod the token is bound to, if it is.
    pub pod_name: Option<String>,
    /// That pod's uid.
    pub pod_uid: Option<String>,
}

impl TokenIdentity {
    /// Reads a TokenReview's user; fails unless it is a service account.
    pub fn from_user(user: &UserInfo) -> Result<TokenIdentity, String> {
        let username = user.username.as_deref().unwrap_or_default();
        let Some((namespace, service_account)) = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
        else {
            return Err(format!(
                "the token belongs to {username:?}, not to a service account"
            ));
        };
        let extra = |key: &str| {
            user.extra
                .as_ref()
                .and_then(|e| e.get(key))
                .and_then(|v| v.first())
                .cloned()
        };
        Ok(TokenIdentity {
            namespace: namespace.into(),
            service_account: service_account.into(),
            pod_name: extra(POD_NAME),
            pod_uid: extra(POD_UID),
        })
    }

    /// Whether this identity may receive `node`'s configuration; the error says which
    /// claim does not match. `objects` supplies the pods the controller knows.
    pub fn may_be(&self, node: &NodeId, objects: &Objects) -> Result<(), String> {
        let account = format!("{}/{}", self.namespace, self.service_account);
        match node.role.as_str() {
            "sidecar" | "gateway" => {}
            other => {
                return Err(format!(
                    "{other} nodes are not served in Kubernetes mode; a proxy identifies as `sidecar~<ip>~<pod>.<namespace>` or `gateway~<ip>~<gateway>.<namespace>`"
                ));
            }
        }
        let (name, namespace) = split_name(&node.name)?;
        if namespace != self.namespace {
            return Err(format!(
                "node {node} claims namespace {namespace:?}, but the token belongs to service account {account} of namespace {:?}",
                self.namespace
            ));
        }
        if node.role == "gateway" {
            return Ok(());
        }
        let pod = objects.pods.iter().find(|p| {
            p.metadata.namespace.as_deref() == Some(namespace)
                && p.metadata.name.as_deref() == Some(name)
        });
        match (&self.pod_name, pod) {
            (Some(claimed), _) if claimed != name => Err(format!(
                "node {node} claims pod {namespace}/{name}, but the token was issued to pod {namespace}/{claimed}"
            )),
            (Some(_), Some(pod))
                if self
                    .pod_uid
                    .as_ref()
                    .zip(pod.metadata.uid.as_ref())
                    .is_some_and(|(claimed, known)| claimed != known) =>
            {
                Err(format!(
                    "the token was issued to an earlier pod named {namespace}/{name} (uid {}), not to the running one",
                    self.pod_uid.as_deref().unwrap_or_default()
                ))
            }
            (Some(_), _) => Ok(()),
            (None, None) => Err(format!(
                "the token of service account {account} is not bound to a pod, and pod {namespace}/{name} is unknown"
            )),
            (None, Some(pod)) => {
                let runs_as = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.as_deref())
                    .unwrap_or("default");
                if runs_as == self.service_account {
                    Ok(())
                } else {
                    Err(format!(
                        "pod {namespace}/{name} runs as service account {namespace}/{runs_as}, but the token belongs to {account}"
                    ))
                }
            }
        }
    }
}

impl TokenReviewer {
    /// Reviews tokens with `client`, for `audience`; pods are looked up in the latest of
    /// `catalogs`.
    pub fn new(
        client: kube::Client,
        audience: String,
        catalogs: watch::Receiver<Arc<Catalog>>,
    ) -> TokenReviewer {
        TokenReviewer {
            client,
            audience,
            catalogs,
            admitted: Mutex::new(HashMap::new()),
        }
    }

    /// Admits a stream presenting `authorization` for `node`, or says why not.
    pub async fn admit(&self, authorization: Option<&str>, node: &NodeId) -> Result<(), Status> {
        let token = authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated(
                    "present the pod's projected service-account token as `authorization: Bearer <token>`",
                )
            })?;
        let key = (token.to_owned(), node.to_string());
        if self.cached(&key) {
            return Ok(());
        }
        let identity = self.review(token).await?;
        let objects = self.catalogs.borrow().objects.clone();
        identity.may_be(node, &objects).map_err(|reason| {
            tracing::warn!(node = %node, reason = %reason, "stream refused");
            Status::permission_denied(reason)
        })?;
        self.remember(key);
        Ok(())
    }

    /// Asks the API server who `token` belongs to.
    async fn review(&self, token: &str) -> Result<TokenIdentity, Status> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "TokenReview failed");
                Status::unavailable(
                    "the controller cannot verify tokens right now (the TokenReview failed)",
                )
            })?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status.error.unwrap_or_else(|| "not authenticated".into());
            return Err(Status::unauthenticated(format!(
                "the Kubernetes API did not accept the token for audience {:?}: {why}",
                self.audience
            )));
        }
        // An API server that ignores `spec.audiences` answers without them: refuse,
        // since the token might have been issued for someone else.
        if !status
            .audiences
            .as_ref()
            .is_some_and(|a| a.contains(&self.audience))
        {
            return Err(Status::permission_denied(format!(
                "the token is not valid for audience {:?} (it is for {:?})",
                self.audience,
                status.audiences.unwrap_or_default()
            )));
        }
        let user = status.user.unwrap_or_default();
        TokenIdentity::from_user(&user).map_err(Status::permission_denied)
    }

    fn cached(&self, key: &(String, String)) -> bool {
        let admitted = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        admitted.get(key).is_some_and(|at| at.elapsed() < CACHE_FOR)
    }

    fn remember(&self, key: (String, String)) {
        let mut admitted = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        if admitted.len() >= CACHE_LIMIT {
            admitted.retain(|_, at| at.elapsed() < CACHE_FOR);
            if admitted.len() >= CACHE_LIMIT {
                admitted.clear();
            }
        }
        admitted.insert(key, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(namespace: &str, sa: &str, pod: Option<&str>, uid: Option<&str>) -> TokenIdentity {
        TokenIdentity {
            namespace: namespace.into(),
            service_account: sa.into(),
            pod_name: pod.map(Into::into),
            pod_uid: uid.map(Into::into),
        }
    }

    fn objects_with_pod(namespace: &str, name: &str, sa: &str, uid: &str) -> Objects {
        let mut objects = Objects::default();
        objects.insert(
            serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "uid": uid},
                "spec": {"serviceAccountName": sa, "containers": []},
            }),
            "test",
        );
        objects
    }

    fn node(id: &str) -> NodeId {
        NodeId::parse(id).expect("node id")
    }

    #[test]
    fn a_sidecar_token_must_name_the_pod_and_namespace_the_node_claims() {
        let objects = objects_with_pod("agents", "agent-0", "agent", "u-1");
        let me = identity("agents", "agent", Some("agent-0"), Some("u-1"));
        assert!(
            me.may_be(&node("sidecar~10.0.0.7~agent-0.agents"), &objects)
                .is_ok()
        );
        let other_pod = me
            .may_be(&node("sidecar~10.0.0.7~agent-1.agents"), &objects)
            .expect_err("other pod");
        assert!(
            other_pod.contains("claims pod agents/agent-1")
                && other_pod.contains("issued to pod agents/agent-0"),
            "{other_pod}"
        );
        let other_ns = me
            .may_be(&node("sidecar~10.0.0.7~agent-0.tools"), &objects)
            .expect_err("other namespace");
        assert!(
            other_ns.contains("claims namespace \"tools\""),
            "{other_ns}"
        );
        let stale = identity("agents", "agent", Some("agent-0"), Some("u-0"))
            .may_be(&node("sidecar~10.0.0.7~agent-0.agents"), &objects)
            .expect_err("stale uid");
        assert!(stale.contains("earlier pod"), "{stale}");
    }

    #[test]
    fn a_token_without_a_pod_claim_needs_the_pods_service_account() {
        let objects = objects_with_pod("agents", "agent-0", "agent", "u-1");
        let n = node("sidecar~10.0.0.7~agent-0.agents");
        assert!(
            identity("agents", "agent", None, None)
                .may_be(&n, &objects)
                .is_ok()
        );
        let wrong = identity("agents", "default", None, None)
            .may_be(&n, &objects)
            .expect_err("wrong account");
        assert!(
            wrong.contains("runs as service account agents/agent"),
            "{wrong}"
        );
        let unknown = identity("agents", "agent", None, None)
            .may_be(&node("sidecar~10.0.0.7~ghost.agents"), &objects)
            .expect_err("unknown pod");
        assert!(unknown.contains("pod agents/ghost is unknown"), "{unknown}");
    }

    #[test]
    fn gateways_need_their_namespace_and_standalone_nodes_are_refused() {
        let objects = Objects::default();
        let me = identity("edge", "gw", Some("gw-abc"), None);
        assert!(
            me.may_be(&node("gateway~10.0.0.8~public.edge"), &objects)
                .is_ok()
        );
        assert!(
            me.may_be(&node("gateway~10.0.0.8~public.other"), &objects)
                .is_err()
        );
        assert!(
            me.may_be(&node("standalone~10.0.0.8~x"), &objects)
                .expect_err("standalone")
                .contains("not served in Kubernetes mode")
        );
    }

    #[test]
    fn only_service_account_tokens_are_identities() {
        let user = UserInfo {
            username: Some("system:serviceaccount:agents:agent".into()),
            extra: Some(
                [(POD_NAME.to_owned(), vec!["agent-0".to_owned()])]
                    .into_iter()
                    .collect(),
            ),
            ..UserInfo::default()
        };
        assert_eq!(
            TokenIdentity::from_user(&user).expect("service account"),
            identity("agents", "agent", Some("agent-0"), None)
        );
        let person = UserInfo {
            username: Some("alice".into()),
            ..UserInfo::default()
        };
        assert!(TokenIdentity::from_user(&person).is_err());
    }
}
