//! Leader election with a `coordination.k8s.io/v1` Lease, the client-go
//! way: the holder renews `renewTime` every few seconds; another replica
//! takes the lease only once `renewTime + leaseDurationSeconds` has passed.
//! Every write carries the `resourceVersion` it read, so two replicas racing
//! for an expired lease cannot both win (the loser gets 409 Conflict).
//!
//! Only the leader writes to the API server (root-cert ConfigMaps, webhook
//! `caBundle`s); every replica serves xDS, the CA and the webhooks.

use std::time::Duration;

use ::kube::Client;
use ::kube::api::{Api, ObjectMeta, PostParams};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

/// Name of meshd's Lease in its namespace.
pub const LEASE_NAME: &str = "meshd-leader";

/// Who competes for which lease, and how long a lease lasts.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The Lease's name.
    pub name: String,
    /// Its namespace (meshd's).
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a lease stays valid without renewal.
    pub duration: Duration,
    /// How often the holder renews (and others retry).
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// meshd's defaults: 15 s leases renewed every 5 s.
    pub fn new(namespace: &str, identity: &str) -> Self {
        LeaseConfig {
            name: LEASE_NAME.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(5),
        }
    }
}

/// The result of one election round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The lease was free or expired and is now ours.
    Acquired,
    /// We held it and renewed it.
    Renewed,
    /// Someone else holds an unexpired lease (or won a race for it).
    HeldBy(String),
}

impl Attempt {
    /// Whether we lead after this round.
    pub fn is_leader(&self) -> bool {
        matches!(self, Attempt::Acquired | Attempt::Renewed)
    }
}

fn is_conflict(e: &::kube::Error) -> bool {
    matches!(e, ::kube::Error::Api(s) if s.code == 409)
}

fn is_not_found(e: &::kube::Error) -> bool {
    matches!(e, ::kube::Error::Api(s) if s.code == 404)
}

/// One round: acquires a free or expired lease, renews ours, or reports
/// the current holder.
pub async fn try_acquire_or_renew(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    now: Timestamp,
) -> Result<Attempt, ::kube::Error> {
    let seconds = i32::try_from(cfg.duration.as_secs()).unwrap_or(i32::MAX);
    let current = match api.get(&cfg.name).await {
        Ok(l) => l,
        Err(e) if is_not_found(&e) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Acquired),
                Err(e) if is_conflict(&e) => Ok(Attempt::HeldBy("(another replica)".into())),
                Err(e) => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    let spec = current.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let ours = holder == cfg.identity;
    if !ours && !holder.is_empty() {
        let duration_ms = i64::from(spec.lease_duration_seconds.unwrap_or(seconds)) * 1000;
        let renewed_ms = spec
            .renew_time
            .as_ref()
            .or(spec.acquire_time.as_ref())
            .map(|t| t.0.as_millisecond())
            .unwrap_or(i64::MIN / 2);
        if renewed_ms + duration_ms > now.as_millisecond() {
            return Ok(Attempt::HeldBy(holder));
        }
        tracing::info!(previous = %holder, "leader lease expired; taking it");
    }
    let mut next = current;
    let mut new_spec = spec.clone();
    new_spec.renew_time = Some(MicroTime(now));
    new_spec.lease_duration_seconds = Some(seconds);
    if !ours {
        new_spec.holder_identity = Some(cfg.identity.clone());
        new_spec.acquire_time = Some(MicroTime(now));
        new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    next.spec = Some(new_spec);
    // `next` keeps the resourceVersion we read: optimistic concurrency.
    match api.replace(&cfg.name, &PostParams::default(), &next).await {
        Ok(_) if ours => Ok(Attempt::Renewed),
        Ok(_) => Ok(Attempt::Acquired),
        Err(e) if is_conflict(&e) => Ok(Attempt::HeldBy("(another replica)".into())),
        Err(e) => Err(e),
    }
}

/// Runs the election forever; the receiver says whether this replica leads.
/// Leadership is given up when a renewal has not succeeded within the lease
/// duration (someone else may have taken it by then).
pub fn spawn(
    client: Client,
    cfg: LeaseConfig,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
        let mut last_renewal: Option<tokio::time::Instant> = None;
        let mut tick = tokio::time::interval(cfg.retry_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let leading = match try_acquire_or_renew(&api, &cfg, Timestamp::now()).await {
                Ok(a) => {
                    if a.is_leader() {
                        last_renewal = Some(tokio::time::Instant::now());
                    }
                    if a == Attempt::Acquired {
                        tracing::info!(identity = %cfg.identity, lease = %cfg.name, "became leader");
                    }
                    a.is_leader()
                }
                Err(e) => {
                    tracing::warn!(error = %e, lease = %cfg.name, "leader election request failed");
                    last_renewal.is_some_and(|t| t.elapsed() < cfg.duration)
                }
            };
            if !leading {
                last_renewal = None;
            }
            tx.send_if_modified(|was| {
                if *was && !leading {
                    tracing::warn!(identity = %cfg.identity, "lost leadership");
                }
                std::mem::replace(was, leading) != leading
            });
        }
    });
    (rx, task)
}
