//! The status the operator reports: Ready, Progressing, Degraded and Paused conditions (plus
//! MonitoringReady with a PodMonitor, [`crate::monitoring`]), each carrying the generation they
//! describe, and the endpoints of every ready replica, computed (purely) from the `ZmqProxy`, its
//! observed StatefulSet and the pods the Pod watch saw.
//! `lastTransitionTime` only moves when a condition's status flips, so recomputing the status of
//! an unchanged object gives an equal value and the reconciler skips the write.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::build::{endpoints, endpoints_at, headless_name, replica_host};
use crate::crd::{
    Endpoints, INSTANCE_LABEL, MAX_LISTED_REPLICAS, Mechanism, ReplicaEndpoints, SocketMechanisms,
    ZmqProxy, ZmqProxyStatus, selector_string,
};

/// The label the StatefulSet controller sets to a pod's ordinal (Kubernetes 1.28 and later).
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

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

/// Where the StatefulSet's rollout stands, read from its status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    pub replicas: i32,
    pub ready: i32,
    pub updated: i32,
    /// The StatefulSet controller has seen the StatefulSet's latest generation.
    pub observed: bool,
    /// Every pod runs the update revision (`currentRevision == updateRevision`, when set).
    pub one_revision: bool,
}

impl Rollout {
    pub fn of(stateful_set: &StatefulSet) -> Rollout {
        let status = stateful_set.status.clone().unwrap_or_default();
        let generation = stateful_set.metadata.generation.unwrap_or(0);
        let one_revision = match (&status.current_revision, &status.update_revision) {
            (Some(current), Some(update)) => current == update,
            _ => true,
        };
        Rollout {
            replicas: status.replicas,
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            observed: status.observed_generation.unwrap_or(0) >= generation,
            one_revision,
        }
    }

    /// Every wanted pod runs the current template and is ready, and no other pod is left. (A
    /// StatefulSet has no progress deadline, so a stuck rollout stays Progressing.)
    fn complete(&self, want: i32) -> bool {
        self.observed
            && self.one_revision
            && self.replicas == want
            && self.updated == want
            && self.ready == want
    }
}

/// The ordinal of `pod` when it is replica `<name>-<ordinal>` of `zp`: its name says so (the
/// StatefulSet's `apps.kubernetes.io/pod-index` label, where set, must agree), and it carries the
/// object's instance label.
pub fn ordinal(zp: &ZmqProxy, pod: &Pod) -> Option<u32> {
    let name = zp.name_any();
    let labels = pod.metadata.labels.as_ref()?;
    if labels.get(INSTANCE_LABEL) != Some(&name) {
        return None;
    }
    let suffix = pod.metadata.name.as_deref()?.strip_prefix(&name)?.strip_prefix('-')?;
    if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ordinal: u32 = suffix.parse().ok()?;
    match labels.get(POD_INDEX_LABEL) {
        Some(index) if index.parse::<u32>().ok() != Some(ordinal) => None,
        _ => Some(ordinal),
    }
}

/// Ready (condition Ready=True) and not terminating: a pod's drain starts with its deletion, and
/// it is unlisted then.
fn serving(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|conditions| {
            conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// `status.replicaEndpoints` from the pods the watch saw: every serving replica with an ordinal
/// below `spec.replicas`, in ordinal order, at most [`MAX_LISTED_REPLICAS`] per socket.
pub fn replica_endpoints<'a>(
    zp: &ZmqProxy,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Option<ReplicaEndpoints> {
    let namespace = zp.namespace()?;
    let name = zp.name_any();
    let want = u32::try_from(zp.spec.replicas).unwrap_or(0);
    let ready: BTreeSet<u32> = pods
        .into_iter()
        .filter(|pod| serving(pod))
        .filter_map(|pod| ordinal(zp, pod))
        .filter(|i| *i < want)
        .collect();
    let listed: Vec<Endpoints> = ready
        .iter()
        .take(MAX_LISTED_REPLICAS)
        .map(|i| endpoints_at(zp, &replica_host(&name, &namespace, *i)))
        .collect();
    let of = |pick: fn(&Endpoints) -> Option<&String>| -> Vec<String> {
        listed.iter().filter_map(|e| pick(e).cloned()).collect()
    };
    Some(ReplicaEndpoints {
        ready: i32::try_from(ready.len()).unwrap_or(i32::MAX),
        frontend: of(|e| e.frontend.as_ref()),
        backend: of(|e| e.backend.as_ref()),
        capture: zp.spec.sockets.capture.as_ref().map(|_| of(|e| e.capture.as_ref())),
        control: zp.spec.sockets.control.as_ref().map(|_| of(|e| e.control.as_ref())),
    })
}

/// The status of `zp` given its StatefulSet (None when it could not be read or applied), its
/// pods (None when not known yet: the listed replicas stay as they were) and the failure of this
/// reconcile, if any. `now` stamps conditions whose status changed.
pub fn compute(
    zp: &ZmqProxy,
    stateful_set: Option<&StatefulSet>,
    pods: Option<&[&Pod]>,
    failure: Option<&Failure>,
    now: Timestamp,
) -> ZmqProxyStatus {
    let generation = zp.metadata.generation;
    let want = zp.spec.replicas;
    let rollout = stateful_set.map(Rollout::of);
    let namespace = zp.namespace().unwrap_or_default();
    let headless = format!("{}.{namespace}.svc", headless_name(&zp.name_any()));
    // Each replica is its own proxy, so peers that reach one pod through the Service see only a
    // share of the others: say how to reach them all wherever readiness is reported.
    let fan_out = if want > 1 {
        format!(
            "; each of the {want} replicas is a separate proxy: peers must connect to every pod, \
             listed in status.replicaEndpoints"
        )
    } else {
        String::new()
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
            cond(READY, false, "Progressing", "the StatefulSet does not exist yet".to_string()),
            cond(PROGRESSING, true, "Creating", "creating the StatefulSet".to_string()),
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
                        "the StatefulSet runs the current spec".to_string(),
                    ),
                    as_expected(),
                )
            } else {
                let what = if r.observed {
                    format!("{} of {want} pods updated, {} ready", r.updated, r.ready)
                } else {
                    "the StatefulSet controller has not seen the latest spec".to_string()
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

    let replica_endpoints = match pods {
        Some(pods) => replica_endpoints(zp, pods.iter().copied()),
        None => zp.status.as_ref().and_then(|s| s.replica_endpoints.clone()),
    };
    ZmqProxyStatus {
        observed_generation: generation,
        replicas: rollout.as_ref().map_or(0, |r| r.replicas),
        ready_replicas: ready_count,
        selector: Some(selector_string(&zp.name_any())),
        conditions: vec![ready, progressing, degraded, paused_condition(zp, now)],
        endpoints: endpoints(zp),
        headless_service: Some(headless),
        replica_endpoints,
        security: Some(mechanisms(zp)),
        connects: Vec::new(),
        sidecar_pods: Vec::new(),
    }
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
        let reason = if resumed { "Resumed" } else { "NotPaused" };
        (false, reason, format!("spec.paused is false: forwarding; {delivery}"))
    };
    condition_of(zp, PAUSED, ok, reason, message, now)
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
    use k8s_openapi::api::apps::v1::StatefulSetStatus;

    fn proxy(replicas: i32) -> ZmqProxy {
        let mut zp: ZmqProxy = serde_yaml::from_str(
            "apiVersion: zmqproxy.io/v1alpha1\nkind: ZmqProxy\nmetadata: {name: tasks, namespace: q, generation: 4}\nspec:\n  frontend: {type: ROUTER, port: 5555}\n  backend: {type: DEALER, port: 5556}\n",
        )
        .expect("valid yaml");
        zp.spec.replicas = replicas;
        zp
    }

    fn stateful_set(generation: i64, status: StatefulSetStatus) -> StatefulSet {
        let mut d = StatefulSet::default();
        d.metadata.generation = Some(generation);
        d.status = Some(status);
        d
    }

    /// A rolled-out StatefulSet status: `n` pods, all ready, all of the update revision.
    fn rolled_out(generation: i64, n: i32) -> StatefulSetStatus {
        StatefulSetStatus {
            observed_generation: Some(generation),
            replicas: n,
            ready_replicas: Some(n),
            updated_replicas: Some(n),
            current_revision: Some("tasks-7d9f".into()),
            update_revision: Some("tasks-7d9f".into()),
            ..StatefulSetStatus::default()
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn get<'a>(s: &'a ZmqProxyStatus, t: &str) -> (&'a str, &'a str) {
        let c = condition(s, t).unwrap_or_else(|| panic!("no {t} condition"));
        (c.status.as_str(), c.reason.as_str())
    }

    fn of(zp: &ZmqProxy, st: StatefulSetStatus) -> ZmqProxyStatus {
        compute(zp, Some(&stateful_set(1, st)), None, None, at(1))
    }

    /// Pod `name` of the object `instance`, Ready or not, terminating or not.
    fn pod(instance: &str, name: &str, ready: bool, terminating: bool) -> Pod {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "q",
                "labels": {"app.kubernetes.io/instance": instance}},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .expect("pod");
        if terminating {
            pod.metadata.deletion_timestamp = Some(Time(at(5)));
        }
        pod
    }

    #[test]
    fn fresh_stateful_set_is_not_ready_and_progressing() {
        let st = StatefulSetStatus { observed_generation: Some(1), ..Default::default() };
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
        assert_eq!(s.headless_service.as_deref(), Some("tasks-pods.q.svc"));
    }

    #[test]
    fn completed_rollout_is_ready() {
        let s = compute(&proxy(1), Some(&stateful_set(2, rolled_out(2, 1))), None, None, at(1));
        assert_eq!(get(&s, READY), ("True", "AllReplicasReady"));
        assert_eq!(get(&s, PROGRESSING), ("False", "RolloutComplete"));
        assert_eq!((s.replicas, s.ready_replicas), (1, 1));
    }

    #[test]
    fn stale_or_half_updated_stateful_set_is_not_ready() {
        // Ready pods of the previous generation: the controller has not seen the new spec.
        let s = compute(&proxy(1), Some(&stateful_set(2, rolled_out(1, 1))), None, None, at(1));
        assert_eq!(get(&s, READY), ("False", "Progressing"));
        assert!(condition(&s, PROGRESSING).is_some_and(|c| c.message.contains("not seen")));
        // Seen, but one of three pods still runs the old revision.
        let st = StatefulSetStatus { updated_replicas: Some(2), ..rolled_out(1, 3) };
        assert_eq!(get(&of(&proxy(3), st), PROGRESSING), ("True", "RollingOut"));
        // Every count right, revisions not yet swapped (the controller's last step).
        let st = StatefulSetStatus { current_revision: Some("old".into()), ..rolled_out(1, 3) };
        assert_eq!(get(&of(&proxy(3), st), READY), ("False", "Progressing"));
        // An extra pod left over from a scale-down in progress.
        let st = StatefulSetStatus { replicas: 4, ..rolled_out(1, 3) };
        assert_eq!(get(&of(&proxy(3), st), READY), ("False", "Progressing"));
        // Without revisions (an older API server) the counts decide.
        let st =
            StatefulSetStatus { current_revision: None, update_revision: None, ..rolled_out(1, 3) };
        assert_eq!(get(&of(&proxy(3), st), READY), ("True", "AllReplicasReady"));
    }

    #[test]
    fn several_replicas_say_peers_must_reach_every_pod() {
        let s = of(&proxy(3), rolled_out(1, 3));
        assert_eq!(get(&s, READY), ("True", "AllReplicasReady"));
        let message = &condition(&s, READY).map(|c| c.message.clone()).unwrap_or_default();
        assert!(message.contains("connect to every pod"), "{message}");
        assert!(message.contains("status.replicaEndpoints"), "{message}");
    }

    #[test]
    fn failures_are_degraded_and_a_stuck_rollout_is_progressing() {
        let f = Failure { reason: "ApplyFailed".into(), message: "boom".into() };
        let s = compute(&proxy(1), None, None, Some(&f), at(1));
        assert_eq!(get(&s, READY), ("False", "ApplyFailed"));
        assert_eq!(get(&s, DEGRADED), ("True", "ApplyFailed"));
        let st = StatefulSetStatus { ready_replicas: Some(0), ..rolled_out(1, 1) };
        let s = of(&proxy(1), st);
        assert_eq!(get(&s, PROGRESSING), ("True", "RollingOut"));
        assert_eq!(get(&s, DEGRADED), ("False", "AsExpected"));
    }

    #[test]
    fn replica_endpoints_list_ready_pods_below_the_replica_count_in_order() {
        let zp = proxy(3);
        let pods = [
            pod("tasks", "tasks-2", true, false),
            pod("tasks", "tasks-0", true, false),
            pod("tasks", "tasks-1", false, false), // starting: not listed yet
            pod("tasks", "tasks-3", true, false),  // beyond replicas: being scaled down
            pod("tasks", "tasks-7d9f-x2", true, false), // an old Deployment's pod
            pod("other", "tasks-4", true, false),  // another object's label
        ];
        let e = replica_endpoints(&zp, &pods).expect("endpoints");
        assert_eq!(e.ready, 2);
        assert_eq!(
            e.frontend,
            ["tcp://tasks-0.tasks-pods.q.svc:5555", "tcp://tasks-2.tasks-pods.q.svc:5555"]
        );
        assert_eq!(e.backend[1], "tcp://tasks-2.tasks-pods.q.svc:5556");
        assert_eq!((e.capture, e.control), (None, None));
        // A draining pod is unlisted at once, ready or not.
        let draining = [pod("tasks", "tasks-0", true, true), pod("tasks", "tasks-1", true, false)];
        let e = replica_endpoints(&zp, &draining).expect("endpoints");
        assert_eq!(e.frontend, ["tcp://tasks-1.tasks-pods.q.svc:5555"]);
    }

    #[test]
    fn replica_endpoints_are_bounded_and_count_them_all() {
        let mut zp = proxy(250);
        zp.spec.sockets.control = Some(serde_yaml::from_str("{port: 5558}").expect("control"));
        let pods: Vec<Pod> =
            (0..250).map(|i| pod("tasks", &format!("tasks-{i}"), true, false)).collect();
        let e = replica_endpoints(&zp, &pods).expect("endpoints");
        assert_eq!(e.ready, 250);
        assert_eq!(e.frontend.len(), MAX_LISTED_REPLICAS);
        assert_eq!(e.control.as_ref().map(Vec::len), Some(MAX_LISTED_REPLICAS));
        assert_eq!(
            e.frontend.last().map(String::as_str),
            Some("tcp://tasks-99.tasks-pods.q.svc:5555")
        );
    }

    #[test]
    fn ordinals_come_from_the_name_and_agree_with_the_pod_index_label() {
        let zp = proxy(3);
        assert_eq!(ordinal(&zp, &pod("tasks", "tasks-12", true, false)), Some(12));
        for name in ["tasks-", "tasks-+1", "tasks-a", "tasks1", "task-1", "tasks-1-0"] {
            assert_eq!(ordinal(&zp, &pod("tasks", name, true, false)), None, "{name}");
        }
        let mut labelled = pod("tasks", "tasks-1", true, false);
        let labels = labelled.metadata.labels.get_or_insert_default();
        labels.insert(POD_INDEX_LABEL.into(), "1".into());
        assert_eq!(ordinal(&zp, &labelled), Some(1));
        labelled.metadata.labels.get_or_insert_default().insert(POD_INDEX_LABEL.into(), "2".into());
        assert_eq!(ordinal(&zp, &labelled), None);
    }

    #[test]
    fn unknown_pods_keep_the_listed_replicas_and_known_pods_replace_them() {
        let mut zp = proxy(1);
        let ready = [pod("tasks", "tasks-0", true, false)];
        let refs: Vec<&Pod> = ready.iter().collect();
        let st = stateful_set(1, rolled_out(1, 1));
        let s = compute(&zp, Some(&st), Some(&refs), None, at(1));
        assert_eq!(s.replica_endpoints.as_ref().map(|e| e.ready), Some(1));
        zp.status = Some(s.clone());
        let kept = compute(&zp, Some(&st), None, None, at(2));
        assert_eq!(kept.replica_endpoints, s.replica_endpoints);
        let none = compute(&zp, Some(&st), Some(&[]), None, at(2));
        assert_eq!(none.replica_endpoints.map(|e| (e.ready, e.frontend.len())), Some((0, 0)));
    }

    #[test]
    fn security_says_which_sockets_are_curve() {
        let s = compute(&proxy(1), None, None, None, at(1));
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
        let s = compute(&secured, None, None, None, at(1));
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
        let s = of(&proxy(0), StatefulSetStatus::default());
        assert_eq!(get(&s, READY), ("False", "ScaledToZero"));
        assert_eq!(get(&s, PROGRESSING), ("False", "ScaledToZero"));
        let s = of(&proxy(0), StatefulSetStatus { replicas: 2, ..Default::default() });
        assert_eq!(get(&s, PROGRESSING), ("True", "ScalingDown"));
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let zp = proxy(1);
        let d = stateful_set(1, StatefulSetStatus::default());
        let first = carry_transition_times(None, compute(&zp, Some(&d), None, None, at(10)));
        let again =
            carry_transition_times(Some(&first), compute(&zp, Some(&d), None, None, at(20)));
        assert_eq!(first, again, "recomputing an unchanged object gives the stored status");
        let ready = stateful_set(1, rolled_out(1, 1));
        let flipped =
            carry_transition_times(Some(&first), compute(&zp, Some(&ready), None, None, at(30)));
        let t = |s: &ZmqProxyStatus, c: &str| condition(s, c).map(|c| c.last_transition_time.0);
        assert_eq!(t(&flipped, READY), Some(at(30)));
        assert_eq!(t(&flipped, DEGRADED), Some(at(10)), "Degraded stayed False");
    }

    #[test]
    fn paused_follows_the_spec_and_a_resume_stays_resumed() {
        let mut zp = proxy(1);
        let s = compute(&zp, None, None, None, at(1));
        assert_eq!(get(&s, PAUSED), ("False", "NotPaused"));
        zp.spec.paused = true;
        zp.status = Some(s);
        let s = carry_transition_times(zp.status.as_ref(), compute(&zp, None, None, None, at(2)));
        assert_eq!(get(&s, PAUSED), ("True", "PauseRequested"));
        let message = condition(&s, PAUSED).map(|c| c.message.clone()).unwrap_or_default();
        assert!(message.contains("ConfigMap tasks-steering"), "{message}");
        zp.spec.paused = false;
        zp.status = Some(s);
        let resumed =
            carry_transition_times(zp.status.as_ref(), compute(&zp, None, None, None, at(3)));
        assert_eq!(get(&resumed, PAUSED), ("False", "Resumed"));
        // Recomputed later: the same status, so no write and no flapping reason.
        zp.status = Some(resumed.clone());
        let again =
            carry_transition_times(zp.status.as_ref(), compute(&zp, None, None, None, at(4)));
        assert_eq!(again, resumed);
    }

    #[test]
    fn a_failed_reconcile_keeps_what_it_could_not_find_out_again() {
        let mut zp = proxy(1);
        zp.spec.paused = true;
        let mut old = compute(&zp, None, None, None, at(1));
        old.conditions.push(condition_of(
            &zp,
            MONITORING_READY,
            true,
            "PodMonitorReady",
            String::new(),
            at(1),
        ));
        let f = Failure { reason: "ApplyFailed".into(), message: "boom".into() };
        let mut failed = compute(&zp, None, None, Some(&f), at(2));
        keep_previous(Some(&old), &mut failed, &[PAUSED, MONITORING_READY]);
        assert_eq!(get(&failed, PAUSED), ("True", "PauseRequested"));
        assert_eq!(get(&failed, MONITORING_READY), ("True", "PodMonitorReady"));
        let mut fresh = compute(&zp, None, None, Some(&f), at(2));
        keep_previous(None, &mut fresh, &[PAUSED, MONITORING_READY]);
        assert!(
            condition(&fresh, PAUSED).is_none() && condition(&fresh, MONITORING_READY).is_none()
        );
    }
}
