//! The status the operator reports: Ready, Progressing, Degraded and Paused conditions (plus
//! MonitoringReady with a PodMonitor, [`crate::monitoring`]), each carrying the generation they
//! describe, computed (purely) from the `ZmqProxy` and its observed Deployment; Federated and
//! `status.federation` come from `federation_status.rs`.
//! `lastTransitionTime` only moves when a condition's status flips, so recomputing the status of
//! an unchanged object gives an equal value and the reconciler skips the write.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::build::{endpoints, federation_of};
use crate::crd::{Mechanism, SocketMechanisms, ZmqProxy, ZmqProxyStatus, selector_string};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
/// True while `spec.paused` is: every replica has been told to pause (through the steering
/// ConfigMap, see [`crate::build::STEERING_SUFFIX`]).
pub const PAUSED: &str = "Paused";
/// With a PodMonitor wanted: whether it exists (False, with the reason, when its API is missing).
pub const MONITORING_READY: &str = "MonitoringReady";
/// For an object whose sockets connect: whether every ready pod reports every connect entry
/// connected to each address it resolves to (False, with the reason, when not or when no pod
/// answered; see `connect_status.rs`).
pub const CONNECTED: &str = "Connected";
/// For a federation (more than one replica): whether every ready replica links with every
/// other, as they report it (see `federation_status.rs`).
pub const FEDERATED: &str = "Federated";
/// Present, True, only while the object carries [`PAUSE_RECONCILIATION`] = "true".
pub const RECONCILIATION_PAUSED: &str = "ReconciliationPaused";
/// The annotation that stops the operator from writing an object's children (maintenance,
/// debugging); removing it resumes.
pub const PAUSE_RECONCILIATION: &str = "zmqproxy.io/pause-reconciliation";

/// Whether `zp` asks the operator to leave its children alone.
pub fn reconciliation_paused(zp: &ZmqProxy) -> bool {
    zp.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PAUSE_RECONCILIATION))
        .is_some_and(|v| v == "true")
}

/// The status of a paused object: what it last said, plus ReconciliationPaused=True observed at
/// the current generation. `observedGeneration` stays where it was: the spec is not applied.
pub fn paused(zp: &ZmqProxy, now: Timestamp) -> ZmqProxyStatus {
    let mut status = zp.status.clone().unwrap_or_default();
    status.conditions.retain(|c| c.type_ != RECONCILIATION_PAUSED);
    status.conditions.push(Condition {
        type_: RECONCILIATION_PAUSED.to_string(),
        status: "True".to_string(),
        reason: "AnnotationSet".to_string(),
        message: format!(
            "{PAUSE_RECONCILIATION} is \"true\": the operator writes none of this object's children; remove the annotation to resume"
        ),
        observed_generation: zp.metadata.generation,
        last_transition_time: Time(now),
    });
    status
}

/// A reconcile failure to report in the conditions: a CamelCase reason and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
    pub message: String,
}

/// Where the Deployment's rollout stands, read from its status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    pub replicas: i32,
    pub ready: i32,
    pub updated: i32,
    /// The Deployment controller has seen the Deployment's latest generation.
    pub observed: bool,
    /// The Deployment controller gave up waiting (its Progressing condition says
    /// ProgressDeadlineExceeded): its message, to pass on.
    pub stuck: Option<String>,
}

impl Rollout {
    pub fn of(deployment: &Deployment) -> Rollout {
        let status = deployment.status.clone().unwrap_or_default();
        let generation = deployment.metadata.generation.unwrap_or(0);
        let stuck = status.conditions.iter().flatten().find(|c| {
            c.type_ == "Progressing"
                && c.status == "False"
                && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        });
        Rollout {
            replicas: status.replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            observed: status.observed_generation.unwrap_or(0) >= generation,
            stuck: stuck.map(|c| c.message.clone().unwrap_or_default()),
        }
    }

    /// Every wanted pod runs the current template and is ready, and no other pod is left.
    fn complete(&self, want: i32) -> bool {
        self.observed && self.replicas == want && self.updated == want && self.ready == want
    }
}

/// The status of `zp` given its Deployment (None when it could not be read or applied) and the
/// failure of this reconcile, if any. `now` stamps conditions whose status changed.
pub fn compute(
    zp: &ZmqProxy,
    deployment: Option<&Deployment>,
    failure: Option<&Failure>,
    now: Timestamp,
) -> ZmqProxyStatus {
    let generation = zp.metadata.generation;
    let want = zp.spec.replicas;
    let rollout = deployment.map(Rollout::of);
    // Several replicas act as one proxy: say so wherever readiness is reported.
    let fan_out = match federation_of(&zp.spec) {
        Some(pattern) => format!("; the {want} replicas form one {pattern} federation"),
        None => String::new(),
    };
    let ready_count = rollout.as_ref().map_or(0, |r| r.ready);

    let cond = |type_: &str, ok: bool, reason: &str, message: String| {
        condition_of(zp, type_, ok, reason, message, now)
    };
    let as_expected = || cond(DEGRADED, false, "AsExpected", String::new());

    let (ready, progressing, degraded) = match (failure, &rollout) {
        (Some(f), _) => (
            cond(READY, false, &f.reason, f.message.clone()),
            cond(PROGRESSING, false, &f.reason, "the last reconcile failed".to_string()),
            cond(DEGRADED, true, &f.reason, f.message.clone()),
        ),
        (None, None) => (
            cond(READY, false, "Progressing", "the Deployment does not exist yet".to_string()),
            cond(PROGRESSING, true, "Creating", "creating the Deployment".to_string()),
            as_expected(),
        ),
        (None, Some(r)) => {
            if want == 0 {
                let done = r.replicas == 0;
                (
                    cond(READY, false, "ScaledToZero", "replicas is 0: no proxy runs".to_string()),
                    cond(
                        PROGRESSING,
                        !done,
                        if done { "ScaledToZero" } else { "ScalingDown" },
                        format!("{} pods left", r.replicas),
                    ),
                    as_expected(),
                )
            } else if r.complete(want) {
                (
                    cond(
                        READY,
                        true,
                        "AllReplicasReady",
                        format!("{}/{want} replicas ready{fan_out}", r.ready),
                    ),
                    cond(
                        PROGRESSING,
                        false,
                        "RolloutComplete",
                        "the Deployment runs the current spec".to_string(),
                    ),
                    as_expected(),
                )
            } else if let Some(why) = &r.stuck {
                (
                    cond(
                        READY,
                        false,
                        "Progressing",
                        format!("{}/{want} replicas ready, rollout stuck{fan_out}", r.ready),
                    ),
                    cond(PROGRESSING, false, "ProgressDeadlineExceeded", why.clone()),
                    cond(DEGRADED, true, "ProgressDeadlineExceeded", why.clone()),
                )
            } else {
                let what = if r.observed {
                    format!("{} of {want} pods updated, {} ready", r.updated, r.ready)
                } else {
                    "the Deployment controller has not seen the latest spec".to_string()
                };
                (
                    cond(
                        READY,
                        false,
                        "Progressing",
                        format!("{}/{want} replicas ready, rollout in progress{fan_out}", r.ready),
                    ),
                    cond(PROGRESSING, true, "RollingOut", what),
                    as_expected(),
                )
            }
        }
    };

    ZmqProxyStatus {
        observed_generation: generation,
        replicas: rollout.as_ref().map_or(0, |r| r.replicas),
        ready_replicas: ready_count,
        selector: Some(selector_string(&zp.name_any())),
        conditions: vec![ready, progressing, degraded, paused_condition(zp, now)],
        endpoints: endpoints(zp),
        federation: None,
        security: Some(mechanisms(zp)),
        connects: Vec::new(),
        sidecar_pods: Vec::new(),
    }
}

/// Whether `new` differs from `old` only in how far a rollout that both describe as under way
/// has got (pods created, pods updated, the words of Ready and Progressing), with the same ready
/// count. Such a status is not written: the Deployment's status moves several times before its
/// pods are ready, and what the object reports then is the count of ready replicas. A pod
/// turning ready, the rollout completing or getting stuck, a new generation or a failure is
/// written at once.
pub fn rollout_progress_only(old: &ZmqProxyStatus, new: &ZmqProxyStatus) -> bool {
    let rolling = |s: &ZmqProxyStatus| {
        condition(s, PROGRESSING).is_some_and(|c| {
            c.status == "True" && (c.reason == "Creating" || c.reason == "RollingOut")
        })
    };
    let masked = |s: &ZmqProxyStatus| {
        let mut s = s.clone();
        s.replicas = 0;
        for c in s.conditions.iter_mut().filter(|c| c.type_ == READY || c.type_ == PROGRESSING) {
            c.reason.clear();
            c.message.clear();
        }
        s
    };
    rolling(old) && rolling(new) && masked(old) == masked(new)
}

/// Paused: True with `spec.paused` (PauseRequested); False otherwise, reason Resumed once the
/// object has been paused before (NotPaused if never), so a resume is visible in the reason.
fn paused_condition(zp: &ZmqProxy, now: Timestamp) -> Condition {
    let steering = crate::build::steering_name(&zp.name_any());
    let delivery = format!(
        "delivered to every replica through the ConfigMap {steering}, applies within seconds"
    );
    let (ok, reason, message) = if zp.spec.paused {
        let m = format!(
            "spec.paused is true: forwarding paused, sockets stay connected and messages wait; {delivery}"
        );
        (true, "PauseRequested", m)
    } else {
        let was = zp.status.as_ref().and_then(|s| condition(s, PAUSED));
        let resumed = was.is_some_and(|c| c.reason == "PauseRequested" || c.reason == "Resumed");
        if resumed {
            (false, "Resumed", format!("spec.paused is false: forwarding; {delivery}"))
        } else {
            // Never paused: there is no steering ConfigMap yet, and none is needed to forward.
            (false, "NotPaused", "spec.paused is false: forwarding".to_string())
        }
    };
    condition_of(zp, PAUSED, ok, reason, message, now)
}

/// What a condition computed from the pods' reports says (Connected, Federated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub reason: &'static str,
    pub message: String,
}

/// A condition of `zp` observed at its current generation.
pub fn condition_of(
    zp: &ZmqProxy,
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: zp.metadata.generation,
        last_transition_time: Time(now),
    }
}

/// `status` with the conditions of `types` as `old` had them (none if it had none): what a
/// failed reconcile could not find out again.
pub fn keep_previous(old: Option<&ZmqProxyStatus>, status: &mut ZmqProxyStatus, types: &[&str]) {
    status.conditions.retain(|c| !types.contains(&c.type_.as_str()));
    let kept = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    status.conditions.extend(kept.iter().filter(|c| types.contains(&c.type_.as_str())).cloned());
}

/// Which sockets are CURVE and which NULL, from the spec.
pub fn mechanisms(zp: &ZmqProxy) -> SocketMechanisms {
    let of = |s: Option<&zmq_proxy_api::security::SocketSecurity>| match s {
        Some(_) => Mechanism::Curve,
        None => Mechanism::Null,
    };
    let s = &zp.spec.sockets;
    SocketMechanisms {
        frontend: of(s.frontend.security.as_ref()),
        backend: of(s.backend.security.as_ref()),
        capture: s.capture.as_ref().map(|c| of(c.security.as_ref())),
        control: s.control.as_ref().map(|c| of(c.security.as_ref())),
    }
}

/// `new` with the `lastTransitionTime` of every condition whose status did not change taken
/// from `old`, so a recomputed status of an unchanged object equals the stored one.
pub fn carry_transition_times(
    old: Option<&ZmqProxyStatus>,
    mut new: ZmqProxyStatus,
) -> ZmqProxyStatus {
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    for c in &mut new.conditions {
        if let Some(prev) =
            old_conditions.iter().find(|o| o.type_ == c.type_ && o.status == c.status)
        {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
    new
}

/// Now, truncated to the second as the API server stores it, so a stamped status round-trips.
pub fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The condition of `type_` in `status`, if any.
pub fn condition<'a>(status: &'a ZmqProxyStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};

    fn proxy(replicas: i32) -> ZmqProxy {
        let mut zp: ZmqProxy = serde_yaml::from_str(
            "apiVersion: zmqproxy.io/v1alpha1\nkind: ZmqProxy\nmetadata: {name: tasks, namespace: q, generation: 4}\nspec:\n  frontend: {type: ROUTER, port: 5555}\n  backend: {type: DEALER, port: 5556}\n",
        )
        .expect("valid yaml");
        zp.spec.replicas = replicas;
        zp
    }

    fn deployment(generation: i64, status: DeploymentStatus) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.generation = Some(generation);
        d.status = Some(status);
        d
    }

    /// A rolled-out Deployment status: `n` pods, all ready, all of the current template.
    fn rolled_out(generation: i64, n: i32) -> DeploymentStatus {
        DeploymentStatus {
            observed_generation: Some(generation),
            replicas: Some(n),
            ready_replicas: Some(n),
            updated_replicas: Some(n),
            available_replicas: Some(n),
            ..DeploymentStatus::default()
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn get<'a>(s: &'a ZmqProxyStatus, t: &str) -> (&'a str, &'a str) {
        let c = condition(s, t).unwrap_or_else(|| panic!("no {t} condition"));
        (c.status.as_str(), c.reason.as_str())
    }

    fn of(zp: &ZmqProxy, st: DeploymentStatus) -> ZmqProxyStatus {
        compute(zp, Some(&deployment(1, st)), None, at(1))
    }

    #[test]
    fn fresh_deployment_is_not_ready_and_progressing() {
        let st = DeploymentStatus { observed_generation: Some(1), ..Default::default() };
        let s = of(&proxy(1), st);
        assert_eq!(get(&s, READY), ("False", "Progressing"));
        assert_eq!(get(&s, PROGRESSING), ("True", "RollingOut"));
        assert_eq!(get(&s, DEGRADED), ("False", "AsExpected"));
        assert!(s.conditions.iter().all(|c| c.observed_generation == Some(4)));
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(
            s.endpoints.as_ref().and_then(|e| e.frontend.as_deref()),
            Some("tcp://tasks.q.svc:5555")
        );
        assert_eq!(
            s.selector.as_deref(),
            Some("app.kubernetes.io/instance=tasks,app.kubernetes.io/name=zmq-proxy")
        );
        assert_eq!(s.federation, None);
    }

    #[test]
    fn completed_rollout_is_ready() {
        let s = compute(&proxy(1), Some(&deployment(2, rolled_out(2, 1))), None, at(1));
        assert_eq!(get(&s, READY), ("True", "AllReplicasReady"));
        assert_eq!(get(&s, PROGRESSING), ("False", "RolloutComplete"));
        assert_eq!((s.replicas, s.ready_replicas), (1, 1));
    }

    #[test]
    fn stale_or_half_updated_deployment_is_not_ready() {
        // Ready pods of the previous generation: the controller has not seen the new spec.
        let s = compute(&proxy(1), Some(&deployment(2, rolled_out(1, 1))), None, at(1));
        assert_eq!(get(&s, READY), ("False", "Progressing"));
        assert!(condition(&s, PROGRESSING).is_some_and(|c| c.message.contains("not seen")));
        // Seen, but one of three pods still runs the old revision.
        let st = DeploymentStatus { updated_replicas: Some(2), ..rolled_out(1, 3) };
        assert_eq!(get(&of(&proxy(3), st), PROGRESSING), ("True", "RollingOut"));
        // The surge pod of a rolling update: one more than wanted.
        let st = DeploymentStatus { replicas: Some(4), ..rolled_out(1, 3) };
        assert_eq!(get(&of(&proxy(3), st), READY), ("False", "Progressing"));
    }

    #[test]
    fn several_replicas_say_they_federate() {
        let s = of(&proxy(3), rolled_out(1, 3));
        assert_eq!(get(&s, READY), ("True", "AllReplicasReady"));
        let message = &condition(&s, READY).map(|c| c.message.clone()).unwrap_or_default();
        assert!(message.contains("one ROUTER/DEALER federation"), "{message}");
        let one = of(&proxy(1), rolled_out(1, 1));
        assert!(condition(&one, READY).is_some_and(|c| !c.message.contains("federation")));
    }

    #[test]
    fn a_rollout_past_its_deadline_is_degraded() {
        let st = DeploymentStatus {
            updated_replicas: Some(1),
            conditions: Some(vec![DeploymentCondition {
                type_: "Progressing".into(),
                status: "False".into(),
                reason: Some("ProgressDeadlineExceeded".into()),
                message: Some("ReplicaSet \"tasks-7d9f\" has timed out progressing.".into()),
                ..DeploymentCondition::default()
            }]),
            ..rolled_out(1, 3)
        };
        let s = of(&proxy(3), DeploymentStatus { ready_replicas: Some(2), ..st });
        assert_eq!(get(&s, PROGRESSING), ("False", "ProgressDeadlineExceeded"));
        assert_eq!(get(&s, DEGRADED), ("True", "ProgressDeadlineExceeded"));
        assert!(condition(&s, DEGRADED).is_some_and(|c| c.message.contains("timed out")));
    }

    #[test]
    fn failures_are_degraded_and_a_stuck_rollout_is_progressing() {
        let f = Failure { reason: "ApplyFailed".into(), message: "boom".into() };
        let s = compute(&proxy(1), None, Some(&f), at(1));
        assert_eq!(get(&s, READY), ("False", "ApplyFailed"));
        assert_eq!(get(&s, DEGRADED), ("True", "ApplyFailed"));
        let st = DeploymentStatus { ready_replicas: Some(0), ..rolled_out(1, 1) };
        let s = of(&proxy(1), st);
        assert_eq!(get(&s, PROGRESSING), ("True", "RollingOut"));
        assert_eq!(get(&s, DEGRADED), ("False", "AsExpected"));
    }

    #[test]
    fn security_says_which_sockets_are_curve() {
        let s = compute(&proxy(1), None, None, at(1));
        let null = SocketMechanisms {
            frontend: Mechanism::Null,
            backend: Mechanism::Null,
            capture: None,
            control: None,
        };
        assert_eq!(s.security, Some(null));
        let secured: ZmqProxy = serde_yaml::from_str(
            "apiVersion: zmqproxy.io/v1alpha1\nkind: ZmqProxy\nmetadata: {name: t, namespace: q}\nspec:\n  frontend: {type: XSUB, port: 1, security: {curve: {serverKey: {secretName: k}, allowAnyClient: true}}}\n  backend: {type: XPUB, port: 2}\n  control: {port: 3, security: {curve: {serverKey: {secretName: k}, authorizedKeys: {secretName: ops}}}}\n",
        )
        .expect("valid yaml");
        let s = compute(&secured, None, None, at(1));
        let expected = SocketMechanisms {
            frontend: Mechanism::Curve,
            backend: Mechanism::Null,
            capture: None,
            control: Some(Mechanism::Curve),
        };
        assert_eq!(s.security, Some(expected));
        let json = serde_json::to_value(&s.security).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({"frontend": "CURVE", "backend": "NULL", "control": "CURVE"})
        );
    }

    #[test]
    fn zero_replicas_is_reported_as_scaled_to_zero() {
        let s = of(&proxy(0), DeploymentStatus::default());
        assert_eq!(get(&s, READY), ("False", "ScaledToZero"));
        assert_eq!(get(&s, PROGRESSING), ("False", "ScaledToZero"));
        let s = of(&proxy(0), DeploymentStatus { replicas: Some(2), ..Default::default() });
        assert_eq!(get(&s, PROGRESSING), ("True", "ScalingDown"));
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let zp = proxy(1);
        let d = deployment(1, DeploymentStatus::default());
        let first = carry_transition_times(None, compute(&zp, Some(&d), None, at(10)));
        let again = carry_transition_times(Some(&first), compute(&zp, Some(&d), None, at(20)));
        assert_eq!(first, again, "recomputing an unchanged object gives the stored status");
        let ready = deployment(1, rolled_out(1, 1));
        let flipped =
            carry_transition_times(Some(&first), compute(&zp, Some(&ready), None, at(30)));
        let t = |s: &ZmqProxyStatus, c: &str| condition(s, c).map(|c| c.last_transition_time.0);
        assert_eq!(t(&flipped, READY), Some(at(30)));
        assert_eq!(t(&flipped, DEGRADED), Some(at(10)), "Degraded stayed False");
    }

    #[test]
    fn paused_follows_the_spec_and_a_resume_stays_resumed() {
        let mut zp = proxy(1);
        let s = compute(&zp, None, None, at(1));
        assert_eq!(get(&s, PAUSED), ("False", "NotPaused"));
        let message = condition(&s, PAUSED).map(|c| c.message.clone()).unwrap_or_default();
        assert!(!message.contains("ConfigMap"), "never paused, no steering ConfigMap: {message}");
        zp.spec.paused = true;
        zp.status = Some(s);
        let s = carry_transition_times(zp.status.as_ref(), compute(&zp, None, None, at(2)));
        assert_eq!(get(&s, PAUSED), ("True", "PauseRequested"));
        let message = condition(&s, PAUSED).map(|c| c.message.clone()).unwrap_or_default();
        assert!(message.contains("ConfigMap tasks-steering"), "{message}");
        zp.spec.paused = false;
        zp.status = Some(s);
        let resumed = carry_transition_times(zp.status.as_ref(), compute(&zp, None, None, at(3)));
        assert_eq!(get(&resumed, PAUSED), ("False", "Resumed"));
        // Recomputed later: the same status, so no write and no flapping reason.
        zp.status = Some(resumed.clone());
        let again = carry_transition_times(zp.status.as_ref(), compute(&zp, None, None, at(4)));
        assert_eq!(again, resumed);
    }

    #[test]
    fn a_failed_reconcile_keeps_what_it_could_not_find_out_again() {
        let mut zp = proxy(1);
        zp.spec.paused = true;
        let mut old = compute(&zp, None, None, at(1));
        old.conditions.push(condition_of(
            &zp,
            MONITORING_READY,
            true,
            "PodMonitorReady",
            String::new(),
            at(1),
        ));
        let f = Failure { reason: "ApplyFailed".into(), message: "boom".into() };
        let mut failed = compute(&zp, None, Some(&f), at(2));
        keep_previous(Some(&old), &mut failed, &[PAUSED, MONITORING_READY]);
        assert_eq!(get(&failed, PAUSED), ("True", "PauseRequested"));
        assert_eq!(get(&failed, MONITORING_READY), ("True", "PodMonitorReady"));
        let mut fresh = compute(&zp, None, Some(&f), at(2));
        keep_previous(None, &mut fresh, &[PAUSED, MONITORING_READY]);
        assert!(
            condition(&fresh, PAUSED).is_none() && condition(&fresh, MONITORING_READY).is_none()
        );
    }
}
