//! Leader election between controller replicas, with a `coordination.k8s.io/v1` Lease.
//!
//! Every replica reads the cluster and serves xDS; only the leader writes: status
//! write-back and the server-side apply of the gateways' Deployments and Services run
//! while this replica holds the Lease ([`while_leading`]), so two replicas never fight
//! over an object's status.
//!
//! The protocol is the one client-go's leader election uses: the holder renews the
//! Lease's `renewTime` every retry period; a candidate takes the Lease over once its
//! record (holder, renew time, resourceVersion) has not changed for the lease duration,
//! as measured by the candidate's own clock (clocks of different machines are never
//! compared). Every write carries the `resourceVersion` it was computed from, so of two
//! candidates only one wins. A leader that cannot renew for two thirds of the lease
//! duration steps down before anyone else may take over.
//!
//! This module must not know what the leader does: callers hand [`while_leading`] the
//! work to start.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The name of the Lease the replicas compete for.
pub const LEASE_NAME: &str = "agentmesh-controller";

/// Where and how replicas elect their leader (Kubernetes mode).
#[derive(Debug, Clone, clap::Args)]
pub struct ElectionOptions {
    /// The namespace of the Lease `agentmesh-controller` (the controller's own).
    #[arg(
        long = "leader-election-namespace",
        env = "POD_NAMESPACE",
        value_name = "NAMESPACE",
        default_value = "agentmesh-system"
    )]
    pub namespace: String,
    /// This replica's identity in the Lease (default: the pod name, `POD_NAME`, else the
    /// host name and process id).
    #[arg(long = "leader-election-id", env = "POD_NAME", value_name = "ID")]
    pub identity: Option<String>,
    /// How long a Lease not renewed stays its holder's (`15s`, `500ms`).
    #[arg(long = "leader-lease-duration", value_name = "DURATION", default_value = "15s", value_parser = duration)]
    pub lease_duration: Duration,
    /// How often the Lease is renewed or tried for.
    #[arg(long = "leader-retry-period", value_name = "DURATION", default_value = "2s", value_parser = duration)]
    pub retry_period: Duration,
}

fn duration(text: &str) -> Result<Duration, String> {
    let d = crate::crd::parse_duration(text)?;
    if d < Duration::from_millis(100) {
        return Err(format!("{text:?} is too short (at least 100ms)"));
    }
    Ok(d)
}

impl ElectionOptions {
    /// The identity to hold the Lease as.
    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default();
            let host = if host.is_empty() {
                "agentmesh-controller".into()
            } else {
                host
            };
            format!("{host}-{}", std::process::id())
        })
    }
}

/// Starts competing for the Lease; the receiver says whether this replica leads now.
pub fn spawn(client: kube::Client, options: &ElectionOptions) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let elector = Elector {
        api: Api::namespaced(client, &options.namespace),
        namespace: options.namespace.clone(),
        identity: options.identity(),
        lease_duration: options.lease_duration,
        renew_deadline: options.lease_duration * 2 / 3,
        retry_period: options.retry_period,
        observed: None,
        last_renewed: None,
    };
    tokio::spawn(elector.run(tx));
    rx
}

/// Runs `start` whenever this replica becomes the leader, and aborts what it started
/// when leadership is lost. Runs until the election ends.
pub async fn while_leading(
    mut leading: watch::Receiver<bool>,
    start: impl Fn() -> Vec<JoinHandle<()>>,
) {
    loop {
        if leading.wait_for(|l| *l).await.is_err() {
            return;
        }
        tracing::info!("leading: writing status and applying gateway workloads");
        let tasks = start();
        let lost = leading.wait_for(|l| !*l).await.is_err();
        for t in &tasks {
            t.abort();
        }
        if lost {
            return;
        }
        tracing::warn!("leadership lost: no longer writing to the API server");
    }
}

/// One replica's view of the election.
struct Elector {
    api: Api<Lease>,
    namespace: String,
    identity: String,
    lease_duration: Duration,
    renew_deadline: Duration,
    retry_period: Duration,
    /// The other holder's record as last seen, and since when it has not changed.
    observed: Option<(Record, Instant)>,
    /// When this replica last created or renewed the Lease as its holder.
    last_renewed: Option<Instant>,
}

/// What tells a live holder from a gone one: any change means it renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<String>,
    resource_version: Option<String>,
}

impl Elector {
    async fn run(mut self, tx: watch::Sender<bool>) {
        loop {
            let leading = self.round().await;
            if *tx.borrow() != leading {
                tracing::info!(identity = %self.identity, leading, "leader election");
            }
            tx.send_if_modified(|l| std::mem::replace(l, leading) != leading);
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(self.retry_period).await;
        }
    }

    /// One try: create, renew or take over the Lease. Returns whether this replica leads.
    async fn round(&mut self) -> bool {
        let now = k8s_openapi::jiff::Timestamp::now();
        let current = match self.api.get_opt(LEASE_NAME).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the leader Lease");
                return self.still_leading();
            }
        };
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, 0, Some(now))),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => self.renewed(),
                Err(e) => {
                    tracing::debug!(error = %e, "another replica created the leader Lease first");
                    false
                }
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let transitions = spec.lease_transitions.unwrap_or_default();
        if holder.as_deref() == Some(self.identity.as_str()) {
            lease.spec = Some(self.spec(now, transitions, spec.acquire_time.map(|t| t.0)));
            return match self
                .api
                .replace(LEASE_NAME, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => self.renewed(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the leader Lease");
                    self.still_leading()
                }
            };
        }
        self.last_renewed = None;
        let record = Record {
            holder: holder.clone(),
            renew_time: spec.renew_time.as_ref().map(|t| t.0.to_string()),
            resource_version: lease.metadata.resource_version.clone(),
        };
        let since = match &self.observed {
            Some((seen, since)) if *seen == record => *since,
            _ => Instant::now(),
        };
        self.observed = Some((record, since));
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.lease_duration, Duration::from_secs)
            .max(self.lease_duration);
        if holder.is_some() && since.elapsed() < duration {
            return false;
        }
        lease.spec = Some(self.spec(now, transitions + 1, Some(now)));
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                tracing::info!(previous = ?holder, "took over the leader Lease");
                self.observed = None;
                self.renewed()
            }
            Err(e) => {
                tracing::debug!(error = %e, "another replica took the leader Lease first");
                false
            }
        }
    }

    /// The Lease spec with this replica holding it, renewed `now`.
    fn spec(
        &self,
        now: k8s_openapi::jiff::Timestamp,
        transitions: i32,
        acquired: Option<k8s_openapi::jiff::Timestamp>,
    ) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX),
            ),
            acquire_time: acquired.map(MicroTime),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    fn renewed(&mut self) -> bool {
        self.last_renewed = Some(Instant::now());
        true
    }

    /// After a failed renewal: still the leader until the renew deadline passes.
    fn still_leading(&self) -> bool {
        self.last_renewed
            .is_some_and(|t| t.elapsed() < self.renew_deadline)
    }
}
