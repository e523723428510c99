//! Leader election on a `coordination.k8s.io/v1` Lease, so several operator replicas are safe:
//! only the holder runs the controller. The algorithm is client-go's `leaderelection`:
//! - expiry is judged on this process's monotonic clock from the moment the current lease record
//!   was first *observed*, never by comparing timestamps written by another machine, so clock
//!   skew between nodes cannot make two replicas lead at once;
//! - writes use the Lease's resourceVersion, so of two candidates racing for an expired lease one
//!   gets a 409 Conflict and stays a follower;
//! - a leader that cannot renew within `renew_deadline` (shorter than the lease duration) steps
//!   down before anyone else may take over;
//! - on shutdown the leader releases the lease (empty holder, 1 s duration) so a standby takes
//!   over at once instead of waiting for expiry.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica's identity in `holderIdentity` (its pod name in a cluster).
    pub identity: String,
    /// How long a lease holds without renewal.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long steps down; less than `lease_duration`.
    pub renew_deadline: Duration,
    /// Pause between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(name: &str, namespace: &str, identity: &str) -> LeaseConfig {
        LeaseConfig {
            name: name.to_string(),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What to do with the lease as last read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease object: create one naming us.
    Create,
    /// We hold it: write a new renewTime.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it over.
    TakeOver,
    /// Someone else holds a live lease.
    Follow { holder: String },
}

/// Pure decision. `expired` says whether the record has gone unchanged for its full duration
/// since this process first observed it.
pub fn decide(lease: Option<&LeaseSpec>, identity: &str, expired: bool) -> Decision {
    let Some(spec) = lease else { return Decision::Create };
    match spec.holder_identity.as_deref().filter(|h| !h.is_empty()) {
        Some(holder) if holder == identity => Decision::Renew,
        Some(holder) if !expired => Decision::Follow { holder: holder.to_string() },
        _ => Decision::TakeOver,
    }
}

/// The spec we write when taking over or renewing (`previous` is the record we read).
pub fn next_spec(previous: Option<&LeaseSpec>, config: &LeaseConfig, now: Timestamp) -> LeaseSpec {
    let duration = i32::try_from(config.lease_duration.as_secs()).unwrap_or(i32::MAX);
    match previous {
        Some(p) if p.holder_identity.as_deref() == Some(config.identity.as_str()) => LeaseSpec {
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(duration),
            ..p.clone()
        },
        _ => LeaseSpec {
            holder_identity: Some(config.identity.clone()),
            lease_duration_seconds: Some(duration),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(
                previous.and_then(|p| p.lease_transitions).unwrap_or(0)
                    + i32::from(previous.is_some()),
            ),
            ..LeaseSpec::default()
        },
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The last lease record read and when (on our clock) it was first seen.
    observed: Option<(LeaseSpec, Instant)>,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> LeaderElector {
        LeaderElector { api: Api::namespaced(client, &config.namespace), config, observed: None }
    }

    fn observe(&mut self, spec: &LeaseSpec) -> Instant {
        match &self.observed {
            Some((seen, at)) if seen == spec => *at,
            _ => {
                let now = Instant::now();
                self.observed = Some((spec.clone(), now));
                now
            }
        }
    }

    /// One attempt: Ok(true) when we hold the lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(&self.config.name).await?;
        let spec = current.as_ref().map(|l| l.spec.clone().unwrap_or_default());
        let expired = match &spec {
            Some(s) => {
                let seen_at = self.observe(s);
                let duration = s
                    .lease_duration_seconds
                    .and_then(|d| u64::try_from(d).ok())
                    .map_or(self.config.lease_duration, Duration::from_secs);
                seen_at.elapsed() >= duration
            }
            None => true,
        };
        let decision = decide(spec.as_ref(), &self.config.identity, expired);
        if let Decision::Follow { .. } = decision {
            return Ok(false);
        }
        let new_spec = next_spec(spec.as_ref(), &self.config, Timestamp::now());
        let written = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(new_spec.clone()),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                // resourceVersion stays set: a concurrent writer makes this a 409.
                lease.spec = Some(new_spec.clone());
                self.api.replace(&self.config.name, &PostParams::default(), &lease).await
            }
        };
        match written {
            Ok(_) => {
                self.observed = Some((new_spec, Instant::now()));
                if decision != Decision::Renew {
                    info!(identity = %self.config.identity, lease = %self.config.name, "acquired leadership");
                }
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up if we hold it, so a standby takes over without waiting for expiry.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else { return Ok(()) };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..spec
        });
        self.api.replace(&self.config.name, &PostParams::default(), &lease).await?;
        self.observed = None;
        info!(identity = %self.config.identity, "released leadership");
        Ok(())
    }

    /// Campaigns until `shutdown` turns true, publishing on `leading` whether we lead. After a
    /// loss it campaigns again; on shutdown it releases the lease if held.
    pub async fn run(mut self, leading: watch::Sender<bool>, mut shutdown: watch::Receiver<bool>) {
        let mut last_renewal: Option<Instant> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    last_renewal = Some(Instant::now());
                    leading.send_replace(true);
                }
                Ok(false) => {
                    if last_renewal.take().is_some() {
                        warn!(identity = %self.config.identity, "lost leadership");
                    }
                    leading.send_replace(false);
                }
                Err(e) => {
                    warn!(error = %e, "cannot read or write the leader lease");
                    // Step down before the lease can expire for the others.
                    if last_renewal.is_some_and(|t| t.elapsed() >= self.config.renew_deadline) {
                        warn!(identity = %self.config.identity, "renew deadline passed; stepping down");
                        last_renewal = None;
                        leading.send_replace(false);
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.retry_period) => {}
                changed = shutdown.changed() => {
                    // A dropped sender means the process is going away: same as shutdown.
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
        let was_leading = leading.send_replace(false);
        if was_leading && let Err(e) = self.release().await {
            warn!(error = %e, "cannot release the leader lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_string()),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(2),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn missing_lease_is_created() {
        assert_eq!(decide(None, "a", false), Decision::Create);
    }

    #[test]
    fn own_lease_is_renewed_even_if_it_looks_expired() {
        assert_eq!(decide(Some(&held_by("a")), "a", true), Decision::Renew);
    }

    #[test]
    fn live_lease_of_another_is_followed_and_expired_one_taken_over() {
        assert_eq!(
            decide(Some(&held_by("b")), "a", false),
            Decision::Follow { holder: "b".to_string() }
        );
        assert_eq!(decide(Some(&held_by("b")), "a", true), Decision::TakeOver);
    }

    #[test]
    fn released_lease_is_taken_over_at_once() {
        let released = LeaseSpec { holder_identity: None, ..held_by("b") };
        assert_eq!(decide(Some(&released), "a", false), Decision::TakeOver);
        let empty = LeaseSpec { holder_identity: Some(String::new()), ..held_by("b") };
        assert_eq!(decide(Some(&empty), "a", false), Decision::TakeOver);
    }

    #[test]
    fn take_over_counts_a_transition_and_renew_keeps_acquire_time() {
        let config = LeaseConfig::new("l", "ns", "a");
        let t0 = Timestamp::from_second(1_000).unwrap_or(Timestamp::UNIX_EPOCH);
        let t1 = Timestamp::from_second(1_002).unwrap_or(Timestamp::UNIX_EPOCH);
        let taken = next_spec(Some(&held_by("b")), &config, t0);
        assert_eq!(taken.holder_identity.as_deref(), Some("a"));
        assert_eq!(taken.lease_transitions, Some(3));
        assert_eq!(taken.acquire_time, Some(MicroTime(t0)));
        let renewed = next_spec(Some(&taken), &config, t1);
        assert_eq!(renewed.acquire_time, Some(MicroTime(t0)));
        assert_eq!(renewed.renew_time, Some(MicroTime(t1)));
        assert_eq!(renewed.lease_transitions, Some(3));
        let created = next_spec(None, &config, t0);
        assert_eq!(created.lease_transitions, Some(0));
        assert_eq!(created.lease_duration_seconds, Some(15));
    }
}
