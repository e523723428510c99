//! The reconcile pipeline of one `ZmqProxy`: validate and build (pure, [`crate::build`]), apply
//! each child in order through [`crate::children`] (the steering ConfigMap; for a federation its
//! Secret, created once by [`crate::federation_secret`], and its headless Service; the
//! Deployment, the Service, the headless Service of each connect entry that selects pods by label
//! (stale ones deleted, [`crate::connect_services`]), the PodDisruptionBudget when wanted, deleted
//! when no longer wanted and ours, and the PodMonitor where the cluster serves it,
//! [`crate::monitoring`]), then compute the status ([`crate::status`]; for an object that
//! connects, with what its ready pods report on `/connects`, refreshed every 15 s; for a
//! federation, with what they report on `/federation`, [`crate::federation_status`]) and write it
//! only when it changed. One event per kind of change; on failure a Warning event, a Degraded
//! condition and a per-object backoff. An object annotated `zmqproxy.io/pause-reconciliation:
//! "true"` gets only its ReconciliationPaused condition written. The StatefulSet of an earlier
//! version is replaced on the way, without a gap in service ([`crate::migration`]).
//!
//! `spec.paused` reaches the proxies through the steering ConfigMap each pod mounts (why:
//! the proxy's `--pause-file`). The ConfigMap is made the first time the object is paused, not
//! before: the pods mount it as optional, so until it exists their steering directory is empty
//! and the proxy, finding no pause file, forwards. Once made it stays (a resume writes "false").
//! When it is created or its value changes, every running pod of the object is
//! nudged with a `zmqproxy.io/steering-generation` annotation, because a pod update makes the
//! kubelet sync that pod and refresh its ConfigMap volumes at once instead of on its periodic
//! sync (up to about a minute). The nudge is best effort: a failure is logged and only makes
//! the pause slower.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::{debug, warn};

use crate::build::{self, federation_name, federation_of, pod_monitor};
use crate::children::{self, Change, Child};
use crate::connect_services::{self, CONNECTS_REFRESH, MAX_PODS_ASKED};
use crate::connect_status;
use crate::context::{Context, Error, MANAGER, key};
use crate::crd::{ZmqProxy, ZmqProxyStatus, selector_string};
use crate::federation_secret;
use crate::federation_status::{self, FEDERATION_PATH};
use crate::migration;
use crate::monitoring::{Lookup, Report};
use crate::proxy_http;
use crate::status::{self, CONNECTED, FEDERATED, Failure, MONITORING_READY, PAUSED, PROGRESSING};
use crate::watches;

/// Pod annotation patched when `spec.paused` changes (the value: the object's generation), so
/// the kubelet refreshes the pod's steering volume at once.
pub const STEERING_GENERATION: &str = "zmqproxy.io/steering-generation";
/// Periodic resync of a healthy object; read-only when nothing changed.
pub const RESYNC: Duration = Duration::from_secs(300);
/// How often a federation's status is refreshed from its pods while every link is up.
pub const FEDERATION_REFRESH: Duration = Duration::from_secs(15);
/// How soon it is looked at again while it is not (replicas starting, links coming up).
pub const FEDERATION_RETRY: Duration = Duration::from_secs(3);

/// The controller's reconcile: the pipeline plus metrics, a Warning event and a Degraded
/// status on failure.
pub async fn reconcile(zp: Arc<ZmqProxy>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Children carry owner references, so the garbage collector removes them: nothing to do.
    if zp.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if status::reconciliation_paused(&zp) {
        debug!(object = %key(&zp), "reconciliation paused by annotation");
        write_status(&zp, &ctx, status::paused(&zp, status::now())).await?;
        return Ok(Action::await_change());
    }
    if zp.spec.is_sidecar() {
        let status = crate::sidecar::status::observe(&zp, &ctx).await?;
        write_status(&zp, &ctx, status).await?;
        return Ok(Action::requeue(crate::sidecar::status::SIDECAR_RESYNC));
    }
    let started = Instant::now();
    let mut changes = Vec::new();
    let result = apply_all(&zp, &ctx, &mut changes).await;
    ctx.metrics.reconciled(started.elapsed());
    children::publish_changes(&ctx, &zp, changes).await;
    match &result {
        Ok(_) => ctx.reset_backoff(&zp),
        Err(e) => {
            warn!(object = %key(&zp), error = %e, reason = e.reason(), "reconcile failed");
            ctx.metrics.failed(e.reason());
            ctx.publish(&zp, EventType::Warning, e.reason(), e.to_string(), None).await;
            let failure = Failure { reason: e.reason().to_string(), message: e.to_string() };
            let mut status = status::compute(&zp, None, Some(&failure), status::now());
            status::keep_previous(
                zp.status.as_ref(),
                &mut status,
                &[PAUSED, MONITORING_READY, CONNECTED, FEDERATED],
            );
            if let Some(old) = &zp.status {
                status.replicas = old.replicas;
                status.ready_replicas = old.ready_replicas;
                status.connects = old.connects.clone();
                status.federation = old.federation.clone();
            }
            if let Err(status_error) = write_status(&zp, &ctx, status).await {
                warn!(object = %key(&zp), error = %status_error, "cannot report the failure in the status");
            }
        }
    }
    result
}

/// Per-object exponential backoff; a success resets it. Beside [`reconcile`], as the other half
/// of what the controller runs per object.
pub fn error_policy(zp: Arc<ZmqProxy>, _error: &Error, ctx: Arc<Context>) -> Action {
    Action::requeue(ctx.next_backoff(&zp))
}

async fn apply_all(
    zp: &ZmqProxy,
    ctx: &Context,
    changes: &mut Vec<Change>,
) -> Result<Action, Error> {
    let namespace = zp.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let mut built = build::children(zp, &ctx.options)?;
    let caches = ctx.caches();
    let names = caches.as_ref().and_then(|c| c.names.clone());
    let deployments =
        Child::<Deployment>::new(ctx, &namespace, caches.as_ref().map(|c| c.deployments.clone()))
            .with_names(names.as_ref().map(|n| n.deployments.clone()));
    let services =
        Child::<Service>::new(ctx, &namespace, caches.as_ref().map(|c| c.services.clone()))
            .with_names(names.as_ref().map(|n| n.services.clone()));
    let pdbs = Child::<PodDisruptionBudget>::new(
        ctx,
        &namespace,
        caches.as_ref().map(|c| c.pod_disruption_budgets.clone()),
    );
    let name = zp.name_any();
    // None until the Pod watch has listed: what was reported from the pods then stands.
    let pods = caches.as_ref().and_then(|c| watches::pods_of(&c.pods, &namespace, &name));
    let pods: Option<Vec<&Pod>> = pods.as_ref().map(|p| p.iter().map(|pod| &**pod).collect());
    let config_maps =
        Child::<ConfigMap>::new(ctx, &namespace, caches.as_ref().map(|c| c.config_maps.clone()))
            .with_names(names.as_ref().map(|n| n.config_maps.clone()));

    // Before the Deployment, so a new pod mounts the current value and starts in it. Only an
    // object that is paused, or was, has one: a pod mounts it as optional, and without it the
    // proxy is not paused (see the module docs).
    let before = changes.len();
    apply_steering(zp, &config_maps, &built.steering, ctx, changes).await?;
    let deployment_known = !matches!(deployments.cached(&name), watches::Cached::NotOwned);
    if deployment_known && changes.len() > before {
        nudge_pods(zp, ctx, &namespace).await;
    }

    // The key and the peers' name before the pods that mount and resolve them. Both stay when
    // the object goes back to one replica (the key is kept for the next scale-up). A Deployment
    // that needs no write and whose pods all serve has its key mounted: the Secret is read only
    // when the Deployment is new or changes, or while a pod is not ready (one that cannot mount
    // a missing Secret never is), so an unchanged resync makes no request.
    let settled = children::cached_up_to_date(&deployments, &built.deployment, zp)?
        .is_some_and(|d| migration::available(&d, zp.spec.replicas));
    if !settled {
        federation_secret::ensure(zp, ctx, &namespace, changes).await?;
    }
    match &built.federation {
        Some(service) => {
            children::apply(&services, service, zp, ctx, changes).await?;
        }
        None => {
            children::delete_owned(&services, &federation_name(&name), zp, ctx, changes).await?
        }
    }
    let deployment = children::apply(&deployments, &built.deployment, zp, ctx, changes).await?;
    // The Service before the StatefulSet of an earlier version can go: peers are served through
    // it by whichever pods are ready.
    children::apply(&services, &built.service, zp, ctx, changes).await?;
    let stateful_sets = caches.as_ref().map(|c| c.stateful_sets.clone());
    let migrating =
        migration::migrate(ctx, &namespace, stateful_sets, &services, zp, &deployment, changes)
            .await?;
    let service_cache = caches.as_ref().map(|c| &c.services);
    let connect_services = std::mem::take(&mut built.connect_services);
    connect_services::apply(zp, ctx, &services, &connect_services, service_cache, changes).await?;
    match &built.pdb {
        Some(pdb) => {
            children::apply(&pdbs, pdb, zp, ctx, changes).await?;
        }
        None => {
            let name = build::pdb_name(&name);
            children::delete_owned(&pdbs, &name, zp, ctx, changes).await?;
        }
    }

    let had_pod_monitor =
        zp.status.as_ref().is_some_and(|s| status::condition(s, MONITORING_READY).is_some());
    let (report, retry) = apply_pod_monitor(zp, ctx, had_pod_monitor, changes).await;
    let now = status::now();
    let mut status = status::compute(zp, Some(&deployment), None, now);
    if migrating {
        status.conditions.retain(|c| c.type_ != PROGRESSING);
        let message = "replacing the StatefulSet of an earlier version: it serves until the Deployment's pods are ready, then it is deleted and its pods drain".to_string();
        status.conditions.push(status::condition_of(
            zp,
            PROGRESSING,
            true,
            "Migrating",
            message,
            now,
        ));
    }
    if let Some(r) = report {
        let c = status::condition_of(zp, MONITORING_READY, r.ready, r.reason, r.message, now);
        status.conditions.push(c);
    }
    let connects = connect_services::entries(zp);
    let retry = if connects.is_empty() {
        retry
    } else {
        match pods.as_deref() {
            Some(pods) => {
                let answers = connect_services::read_reports(zp, pods).await;
                let (entries, verdict) = connect_status::aggregate(&connects, &answers);
                status.connects = entries;
                let (ok, reason, message) = (verdict.ok, verdict.reason, verdict.message);
                status
                    .conditions
                    .push(status::condition_of(zp, CONNECTED, ok, reason, message, now));
            }
            // The pods are not listed yet: what was reported stands until they are.
            None => {
                status.connects =
                    zp.status.as_ref().map(|s| s.connects.clone()).unwrap_or_default();
                status::keep_previous(zp.status.as_ref(), &mut status, &[CONNECTED]);
            }
        }
        Some(retry.map_or(CONNECTS_REFRESH, |r| r.min(CONNECTS_REFRESH)))
    };
    let retry = match federation_of(&zp.spec) {
        None => retry,
        Some(pattern) => {
            let next = match pods.as_deref() {
                Some(pods) => {
                    let answers = read_federation(zp, pods).await;
                    let ok = federation_status::report(zp, &mut status, pattern, &answers, now);
                    if ok { FEDERATION_REFRESH } else { FEDERATION_RETRY }
                }
                // The pods are not listed yet: what was reported stands until they are.
                None => {
                    status.federation = zp.status.as_ref().and_then(|s| s.federation.clone());
                    status::keep_previous(zp.status.as_ref(), &mut status, &[FEDERATED]);
                    FEDERATION_RETRY
                }
            };
            Some(retry.map_or(next, |r| r.min(next)))
        }
    };
    write_status(zp, ctx, status).await?;
    Ok(Action::requeue(retry.map_or(RESYNC, |r| r.min(RESYNC))))
}

/// Applies the steering ConfigMap while `spec.paused` is true, and once the object has one
/// (kept with "false" after a resume, so the pods' mounted file says so); an object never paused
/// gets none.
async fn apply_steering(
    zp: &ZmqProxy,
    config_maps: &Child<'_, ConfigMap>,
    steering: &ConfigMap,
    ctx: &Context,
    changes: &mut Vec<Change>,
) -> Result<(), Error> {
    if zp.spec.paused {
        children::apply(config_maps, steering, zp, ctx, changes).await?;
        return Ok(());
    }
    let name = steering.metadata.name.clone().unwrap_or_default();
    match config_maps.cached(&name) {
        watches::Cached::NotOwned => {}
        watches::Cached::Found(_) => {
            children::apply(config_maps, steering, zp, ctx, changes).await?;
        }
        watches::Cached::Unknown => {
            if let Some(current) = children::owned(config_maps, &name, zp, ctx).await? {
                children::apply_observed(config_maps, steering, Some(current), zp, ctx, changes)
                    .await?;
            }
        }
    }
    Ok(())
}

/// Applies, keeps or deletes the PodMonitor of `zp` where the cluster serves the API. Returns
/// the MonitoringReady condition to report (None when no PodMonitor is wanted) and, when it is
/// not ready, how soon to look again. Never fails the reconcile (see [`crate::monitoring`]).
async fn apply_pod_monitor(
    zp: &ZmqProxy,
    ctx: &Context,
    had_one: bool,
    changes: &mut Vec<Change>,
) -> (Option<Report>, Option<Duration>) {
    let wanted = pod_monitor::wanted(zp, &ctx.options);
    if !wanted && !had_one {
        return (None, None);
    }
    let resource = match ctx.monitoring.lookup(&ctx.client).await {
        Lookup::Present(resource) => resource,
        Lookup::Missing if wanted => {
            let recheck = ctx.monitoring.recheck();
            return (Some(Report::api_missing(recheck)), Some(recheck));
        }
        Lookup::Failed(e) if wanted => {
            return (Some(Report::discovery_failed(&e)), Some(ctx.monitoring.recheck()));
        }
        // Turned off, and there is no API (or no answer) to delete from.
        Lookup::Missing | Lookup::Failed(_) => return (None, None),
    };
    let namespace = zp.namespace().unwrap_or_default();
    let pod_monitors = Child::dynamic(ctx, &namespace, &resource);
    let name = zp.name_any();
    let result = if wanted {
        let desired = build::pod_monitor(zp)
            .map_err(|e| e.to_string())
            .and_then(|v| serde_json::from_value::<DynamicObject>(v).map_err(|e| e.to_string()));
        match desired {
            Ok(desired) => children::apply(&pod_monitors, &desired, zp, ctx, changes)
                .await
                .map(|_| Some(Report::ready(&name))),
            Err(why) => return (Some(Report::build_failed(why)), None),
        }
    } else {
        children::delete_owned(&pod_monitors, &name, zp, ctx, changes).await.map(|()| None)
    };
    let source = match result {
        Ok(report) => return (report, None),
        Err(Error::ChildNotOwned { .. }) => {
            return (wanted.then(|| Report::not_owned(&name)), None);
        }
        Err(
            Error::Get { source, .. } | Error::Apply { source, .. } | Error::Delete { source, .. },
        ) => source,
        Err(Error::Serialize(e)) => kube::Error::SerdeError(e),
        Err(other) => {
            warn!(object = %key(zp), error = %other, "PodMonitor write failed");
            return (Some(Report::write_failed(&name, other)), Some(ctx.monitoring.recheck()));
        }
    };
    match source {
        // The API went away after discovery found it (its CRD was removed): ask again.
        kube::Error::Api(status) if status.code == 404 => {
            ctx.monitoring.forget();
            (wanted.then(Report::api_gone), Some(ctx.monitoring.recheck()))
        }
        e => {
            warn!(object = %key(zp), error = %e, "PodMonitor write failed");
            (Some(Report::write_failed(&name, e)), Some(ctx.monitoring.recheck()))
        }
    }
}

/// Each ready pod's `/federation` answer (at most [`MAX_PODS_ASKED`], asked at once). A 404 is
/// a proxy without federation: an image from before it, or a pod of the StatefulSet being
/// replaced.
async fn read_federation(
    zp: &ZmqProxy,
    pods: &[&Pod],
) -> Vec<(String, Result<federation_status::Report, String>)> {
    proxy_http::ask_ready_pods(zp, pods, FEDERATION_PATH, MAX_PODS_ASKED)
        .await
        .into_iter()
        .map(|(pod, body)| {
            let report = body
                .map_err(|e| {
                    if e.contains("HTTP 404") {
                        "federation is off in this proxy (HTTP 404 on /federation)".to_string()
                    } else {
                        e
                    }
                })
                .and_then(|b| federation_status::parse(&b));
            (pod, report)
        })
        .collect()
}

/// Patches [`STEERING_GENERATION`] onto every pod of `zp` (best effort, see the module docs).
/// Lists them from the server rather than the Pod cache: the nudge happens once per change, and
/// a pod created just before it may not have reached the cache yet, so it would never be
/// nudged. One LIST per pause or resume.
async fn nudge_pods(zp: &ZmqProxy, ctx: &Context, namespace: &str) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let generation = zp.metadata.generation.unwrap_or_default().to_string();
    ctx.metrics.requested("Pod", "list");
    let selector = ListParams::default().labels(&selector_string(&zp.name_any()));
    let listed = match pods.list_metadata(&selector).await {
        Ok(list) => list,
        Err(e) => {
            warn!(object = %key(zp), error = %e, "cannot list pods to nudge; the pause reaches them on the kubelet's next sync");
            return;
        }
    };
    let patch = serde_json::json!({"metadata": {"annotations": {STEERING_GENERATION: generation}}});
    for pod in listed.items {
        let name = pod.name_any();
        ctx.metrics.requested("Pod", "patch");
        if let Err(e) = pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            warn!(object = %key(zp), pod = %name, error = %e, "cannot nudge pod; the pause reaches it on the kubelet's next sync");
        }
    }
}

/// Writes `computed` unless the object already carries it (transition times kept) or it only
/// tells how far a rollout under way has got ([`status::rollout_progress_only`]). "Already
/// carries" counts a write of this operator that the cache does not show yet ([`crate::written`]).
async fn write_status(zp: &ZmqProxy, ctx: &Context, computed: ZmqProxyStatus) -> Result<(), Error> {
    let uid = zp.metadata.uid.clone().unwrap_or_default();
    let based_on = zp.metadata.resource_version.clone();
    let current = ctx.written.current(&uid, based_on.as_deref(), zp.status.as_ref());
    let new = status::carry_transition_times(current.as_ref(), computed);
    if current.as_ref().is_some_and(|old| *old == new || status::rollout_progress_only(old, &new)) {
        return Ok(());
    }
    let namespace = zp.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let api: Api<ZmqProxy> = Api::namespaced(ctx.client.clone(), &namespace);
    ctx.metrics.requested("ZmqProxy", "apply_status");
    let patch = serde_json::json!({
        "apiVersion": ZmqProxy::api_version(&()),
        "kind": ZmqProxy::kind(&()),
        "status": new,
    });
    let written = api
        .patch_status(&zp.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(Error::Status)?;
    ctx.written.remember(&uid, based_on, written.metadata.resource_version, new);
    Ok(())
}
