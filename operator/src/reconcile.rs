//! The reconcile pipeline of one `ZmqProxy`: validate and build (pure, [`crate::build`]), apply
//! each child (the steering ConfigMap, StatefulSet, Service, headless Service, and the
//! PodDisruptionBudget when wanted, deleted when no longer wanted and ours) with server-side
//! apply only when it differs from what the API server holds
//! ([`crate::diff`]), compute the status ([`crate::status`]) and write it only when it changed,
//! publish events for what was written or what failed, and back off per object on errors.
//! Children are read from the controller's own watches ([`crate::watches`]); the API server is
//! asked only when the cache cannot answer (not listed yet, no such child, or a child that looks
//! out of date, which is read again before it is written). A resync of an unchanged object
//! therefore makes no request at all, and one that changed makes one event per kind of change.
//! An object annotated `zmqproxy.io/pause-reconciliation: "true"` gets only its
//! ReconciliationPaused condition written.
//!
//! Migration: an older operator ran each proxy as a Deployment `<name>`. When one controlled by
//! the object exists, the StatefulSet is applied with no replicas, the Deployment is deleted
//! (background propagation) and the StatefulSet gets its replicas only once the Pod watch shows
//! none of the Deployment's pods left: like a Recreate rollout, the old pods drain within their
//! grace period before the new ones start, so a single-replica proxy never runs twice. While such
//! pods remain, a Deployment the labeled watch does not show is looked up at the server.
//!
//! `spec.paused` reaches the proxies through the steering ConfigMap each pod mounts (why:
//! [`zmq_proxy::pause_file`]); when its value changes, every running pod of the object is
//! nudged with a `zmqproxy.io/steering-generation` annotation, because a pod update makes the
//! kubelet sync that pod and refresh its ConfigMap volumes at once instead of on its periodic
//! sync (up to about a minute). The nudge is best effort: a failure is logged and only makes
//! the pause slower. The PodMonitor is [`crate::monitoring`]'s.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::{Future, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{Store, store::Writer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use crate::build::{self, BuildError, BuildOptions};
use crate::crd::{MANAGED_BY, ZmqProxy, ZmqProxyStatus, selector_string};
use crate::diff;
use crate::metrics::Metrics;
use crate::monitoring::{self, Discovery};
use crate::status::{self, Failure, MONITORING_READY, PAUSED};
use crate::watches::{self, Cached, ChildCaches, Trigger};

/// The one field manager of every write, so ownership of each field is the operator's alone.
pub const MANAGER: &str = "zmq-proxy-operator";
/// Pod annotation patched when `spec.paused` changes (the value: the object's generation), so
/// the kubelet refreshes the pod's steering volume at once.
pub const STEERING_GENERATION: &str = "zmqproxy.io/steering-generation";
/// Periodic resync of a healthy object; read-only when nothing changed.
pub const RESYNC: Duration = Duration::from_secs(300);
/// First retry after a failure; doubled per consecutive failure up to [`BACKOFF_MAX`].
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Reconciles running at once (`--concurrency`). Measured with `benches/scale.rs` on a 2-core
/// machine running kube-apiserver, etcd and the operator (1000 objects, cold start): 19.5 s at
/// 16, 17.1 s at 64; at 500 objects 4, 16, 64 and unbounded were within noise of each other
/// (6.7-7.7 s). Bounded so that a large cluster's first pass cannot put thousands of requests
/// in flight at once, which the API server's priority and fairness answers with 429s.
pub const CONCURRENCY: u16 = 64;
/// Triggers of one object arriving this close together make one reconcile: creating a child or
/// writing the status triggers the object again, and the children's watch events come in a
/// burst. Short enough that a user's change is applied at once.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Why a reconcile failed. [`Error::reason`] is the metric label, the event reason and the
/// condition reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),
    #[error("{kind} {name} exists and is not controlled by this ZmqProxy; rename or delete it")]
    ChildNotOwned { kind: String, name: String },
    #[error("cannot read {kind} {name}: {source}")]
    Get { kind: String, name: String, source: kube::Error },
    #[error("cannot apply {kind} {name}: {source}")]
    Apply { kind: String, name: String, source: kube::Error },
    #[error("cannot delete {kind} {name}: {source}")]
    Delete { kind: String, name: String, source: kube::Error },
    #[error("cannot update the status: {0}")]
    Status(#[source] kube::Error),
    #[error("cannot serialize an object: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::MissingObjectKey(_) => "MissingObjectKey",
            Error::ChildNotOwned { .. } => "ChildNotOwned",
            Error::Get { .. } => "GetFailed",
            Error::Apply { .. } => "ApplyFailed",
            Error::Delete { .. } => "DeleteFailed",
            Error::Status(_) => "StatusUpdateFailed",
            Error::Serialize(_) => "SerializeFailed",
        }
    }
}

impl From<BuildError> for Error {
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::MissingObjectKey(key) => Error::MissingObjectKey(key),
            BuildError::InvalidSpec(why) => Error::InvalidSpec(why),
        }
    }
}

/// Everything a reconcile needs besides the object.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub options: BuildOptions,
    pub metrics: Arc<Metrics>,
    /// Whether the cluster serves PodMonitors (asked lazily, cached).
    pub monitoring: Discovery,
    /// Consecutive failures per object (namespace/name), for the exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The children's caches of the running controller; None outside [`run`] (every child is
    /// then read from the API server).
    caches: RwLock<Option<ChildCaches>>,
}

impl Context {
    pub fn new(client: Client, options: BuildOptions, metrics: Arc<Metrics>) -> Arc<Context> {
        let reporter =
            Reporter { controller: MANAGER.to_string(), instance: std::env::var("POD_NAME").ok() };
        Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            options,
            metrics,
            monitoring: Discovery::default(),
            failures: Mutex::default(),
            caches: RwLock::default(),
        })
    }

    /// Reconciles read children from `caches` (None: from the API server).
    pub fn use_caches(&self, caches: Option<ChildCaches>) {
        *self.caches.write().unwrap_or_else(std::sync::PoisonError::into_inner) = caches;
    }

    fn caches(&self) -> Option<ChildCaches> {
        self.caches.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // A panic while holding this lock leaves only counters behind; keep using them.
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The delay before retrying `zp` after one more failure: 5 s, 10 s, 20 s ... 300 s.
    pub fn next_backoff(&self, zp: &ZmqProxy) -> Duration {
        let mut failures = self.failures();
        let n = failures.entry(key(zp)).or_insert(0);
        *n = n.saturating_add(1);
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(16));
        BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_MAX)
    }

    fn reset_backoff(&self, zp: &ZmqProxy) {
        self.failures().remove(&key(zp));
    }
}

fn key(zp: &ZmqProxy) -> String {
    format!("{}/{}", zp.namespace().unwrap_or_default(), zp.name_any())
}

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
    let started = Instant::now();
    let mut changes = Vec::new();
    let result = apply_all(&zp, &ctx, &mut changes).await;
    ctx.metrics.reconciled(started.elapsed());
    publish_changes(&ctx, &zp, changes).await;
    match &result {
        Ok(_) => ctx.reset_backoff(&zp),
        Err(e) => {
            warn!(object = %key(&zp), error = %e, reason = e.reason(), "reconcile failed");
            ctx.metrics.failed(e.reason());
            publish(&ctx, &zp, EventType::Warning, e.reason(), e.to_string(), None).await;
            let failure = Failure { reason: e.reason().to_string(), message: e.to_string() };
            let mut status = status::compute(&zp, None, None, Some(&failure), status::now());
            status::keep_previous(zp.status.as_ref(), &mut status, &[PAUSED, MONITORING_READY]);
            if let Some(old) = &zp.status {
                status.replicas = old.replicas;
                status.ready_replicas = old.ready_replicas;
            }
            if let Err(status_error) = write_status(&zp, &ctx, status).await {
                warn!(object = %key(&zp), error = %status_error, "cannot report the failure in the status");
            }
        }
    }
    result
}

/// Per-object exponential backoff; a success resets it.
pub fn error_policy(zp: Arc<ZmqProxy>, _error: &Error, ctx: Arc<Context>) -> Action {
    Action::requeue(ctx.next_backoff(&zp))
}

async fn apply_all(
    zp: &ZmqProxy,
    ctx: &Context,
    changes: &mut Vec<Change>,
) -> Result<Action, Error> {
    let namespace = zp.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let mut children = build::children(zp, &ctx.options)?;
    let caches = ctx.caches();
    let stateful_sets = Child::<StatefulSet>::new(
        ctx,
        &namespace,
        caches.as_ref().map(|c| c.stateful_sets.clone()),
    );
    let services =
        Child::<Service>::new(ctx, &namespace, caches.as_ref().map(|c| c.services.clone()));
    let pdbs = Child::<PodDisruptionBudget>::new(
        ctx,
        &namespace,
        caches.as_ref().map(|c| c.pod_disruption_budgets.clone()),
    );
    let deployments =
        Child::<Deployment>::new(ctx, &namespace, caches.as_ref().map(|c| c.deployments.clone()));
    let name = zp.name_any();
    // None until the Pod watch has listed: the listed replicas then stay as they were.
    let pods = caches.as_ref().and_then(|c| watches::pods_of(&c.pods, &namespace, &name));
    let pods: Option<Vec<&Pod>> = pods.as_ref().map(|p| p.iter().map(|pod| &**pod).collect());
    let config_maps =
        Child::<ConfigMap>::new(ctx, &namespace, caches.as_ref().map(|c| c.config_maps.clone()));

    // Before the StatefulSet, so a new pod mounts the current value and starts in it.
    let before = changes.len();
    apply_child(&config_maps, &children.steering, zp, ctx, changes).await?;
    if changes[before..].iter().any(|c| c.action == "Updated") {
        nudge_pods(zp, ctx, &namespace).await;
    }

    let old_pods_remain = pods.as_deref().is_some_and(deployment_pods_remain);
    let old_deployment = old_deployment(&deployments, &name, zp, ctx, old_pods_remain).await?;
    // Migrating: no new proxy until the old ones have terminated (drain included).
    if (old_deployment.is_some() || old_pods_remain)
        && let Some(spec) = children.stateful_set.spec.as_mut()
    {
        spec.replicas = Some(0);
    }
    let stateful_set =
        apply_child(&stateful_sets, &children.stateful_set, zp, ctx, changes).await?;
    if old_deployment.is_some_and(|d| d.metadata.deletion_timestamp.is_none()) {
        delete_child(&deployments, &name, zp, ctx, changes).await?;
    }
    apply_child(&services, &children.service, zp, ctx, changes).await?;
    apply_child(&services, &children.headless, zp, ctx, changes).await?;
    match &children.pdb {
        Some(pdb) => {
            apply_child(&pdbs, pdb, zp, ctx, changes).await?;
        }
        None => {
            let name = build::pdb_name(&zp.name_any());
            delete_owned(&pdbs, &name, zp, ctx, changes).await?;
        }
    }

    let had_pod_monitor =
        zp.status.as_ref().is_some_and(|s| status::condition(s, MONITORING_READY).is_some());
    let (report, retry) = monitoring::reconcile(zp, ctx, had_pod_monitor, changes).await;
    let now = status::now();
    let mut status = status::compute(zp, Some(&stateful_set), pods.as_deref(), None, now);
    if let Some(r) = report {
        let c = status::condition_of(zp, MONITORING_READY, r.ready, r.reason, r.message, now);
        status.conditions.push(c);
    }
    write_status(zp, ctx, status).await?;
    Ok(Action::requeue(retry.map_or(RESYNC, |r| r.min(RESYNC))))
}

/// Patches [`STEERING_GENERATION`] onto every pod of `zp` (best effort, see the module docs).
/// Lists them from the server rather than the Pod cache: the nudge happens once per change, and
/// a pod created just before it may not have reached the cache yet, so it would never be nudged
/// (the envtest's steering check caught exactly that when this read the cache). One LIST per
/// pause or resume.
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

/// Pods of the Deployment an older operator ran (their controller is one of its ReplicaSets) are
/// still there, terminating or not.
fn deployment_pods_remain(pods: &[&Pod]) -> bool {
    pods.iter().any(|pod| {
        pod.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.kind == "ReplicaSet")
    })
}

/// The Deployment `name` an older operator ran, if this object controls it. The watch sees only
/// Deployments with the managed-by label, the Pod watch sees their pods by the template's label:
/// while such pods remain and the watch has no Deployment, the server is asked, so a Deployment
/// whose label was taken off is still deleted rather than holding the StatefulSet at zero for
/// good. (Once it is gone that costs a read per reconcile until its pods have terminated.)
async fn old_deployment(
    deployments: &Child<'_, Deployment>,
    name: &str,
    zp: &ZmqProxy,
    ctx: &Context,
    old_pods_remain: bool,
) -> Result<Option<Deployment>, Error> {
    match deployments.cached(name) {
        Cached::NotOwned if old_pods_remain => {
            Ok(deployments.get(name, ctx).await?.filter(|d| controlled_by(d, zp)))
        }
        _ => owned(deployments, name, zp, ctx).await,
    }
}

fn controlled_by(child: &impl Resource, zp: &ZmqProxy) -> bool {
    let uid = zp.meta().uid.as_deref();
    child
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

/// One kind of child in one namespace: where to write it and the cache to read it from.
struct Child<'a, K: Resource<DynamicType = ()> + Clone + 'static> {
    api: Api<K>,
    cache: Option<Store<K>>,
    namespace: &'a str,
}

impl<'a, K> Child<'a, K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + 'static,
{
    /// The children of kind `K` in `namespace`, read from `cache` when there is one.
    fn new(ctx: &Context, namespace: &'a str, cache: Option<Store<K>>) -> Self
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    {
        Child { api: Api::namespaced(ctx.client.clone(), namespace), cache, namespace }
    }

    /// The cache's answer for `name` (Unknown without a cache).
    fn cached(&self, name: &str) -> Cached<K> {
        match &self.cache {
            Some(store) => watches::lookup(store, self.namespace, name),
            None => Cached::Unknown,
        }
    }

    /// `name` as the API server holds it now.
    async fn get(&self, name: &str, ctx: &Context) -> Result<Option<K>, Error> {
        let kind = K::kind(&()).to_string();
        ctx.metrics.requested(&kind, "get");
        self.api.get_opt(name).await.map_err(|source| Error::Get {
            kind,
            name: name.to_string(),
            source,
        })
    }
}

/// A write made by a reconcile, reported in an event once the reconcile is done.
pub struct Change {
    action: &'static str,
    kind: String,
    name: String,
    reference: Option<ObjectReference>,
}

impl Change {
    pub fn new(
        action: &'static str,
        kind: &str,
        name: &str,
        reference: Option<ObjectReference>,
    ) -> Change {
        Change { action, kind: kind.to_string(), name: name.to_string(), reference }
    }
}

/// Reads the child and applies `desired` only when the child is missing or differs; returns the
/// child as the API server holds it afterwards.
async fn apply_child<K>(
    child: &Child<'_, K>,
    desired_object: &K,
    zp: &ZmqProxy,
    ctx: &Context,
    changes: &mut Vec<Change>,
) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let kind = K::kind(&()).to_string();
    let name = desired_object.meta().name.clone().unwrap_or_default();
    let desired = diff::stamp(serde_json::to_value(desired_object)?);
    let up_to_date = |current: &K| -> Result<bool, Error> {
        Ok(controlled_by(current, zp)
            && !diff::needs_apply(&desired, &serde_json::to_value(current)?))
    };
    if let Cached::Found(current) = child.cached(&name)
        && up_to_date(&current)?
    {
        debug!(object = %key(zp), %kind, %name, "child up to date (cache)");
        return Ok((*current).clone());
    }
    // Not cached, or cached but different: the cache may be a moment behind, so decide on what
    // the API server holds.
    let observed = child.get(&name, ctx).await?;
    let api = &child.api;
    let action = match &observed {
        None => "Created",
        Some(current) => {
            if !controlled_by(current, zp) {
                return Err(Error::ChildNotOwned { kind, name });
            }
            if up_to_date(current)? {
                debug!(object = %key(zp), %kind, %name, "child up to date");
                return Ok(current.clone());
            }
            "Updated"
        }
    };
    ctx.metrics.requested(&kind, "apply");
    let applied = api
        .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&desired))
        .await
        .map_err(|source| Error::Apply { kind: kind.clone(), name: name.clone(), source })?;
    info!(object = %key(zp), %kind, %name, change = action, "applied child");
    ctx.metrics.wrote(&kind, action);
    changes.push(Change { action, kind, name, reference: Some(applied.object_ref(&())) });
    Ok(applied)
}

/// The child `name` if it exists and this `ZmqProxy` controls it (from the cache when it can
/// tell).
async fn owned<K>(
    child: &Child<'_, K>,
    name: &str,
    zp: &ZmqProxy,
    ctx: &Context,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    let current = match child.cached(name) {
        // A complete cache of the operator's children without it: nothing of ours.
        Cached::NotOwned => return Ok(None),
        Cached::Found(current) => Some((*current).clone()),
        Cached::Unknown => child.get(name, ctx).await?,
    };
    Ok(current.filter(|c| controlled_by(c, zp)))
}

/// Deletes the child `name` if it exists and this `ZmqProxy` controls it.
async fn delete_owned<K>(
    child: &Child<'_, K>,
    name: &str,
    zp: &ZmqProxy,
    ctx: &Context,
    changes: &mut Vec<Change>,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    if owned(child, name, zp, ctx).await?.is_none() {
        return Ok(());
    }
    delete_child(child, name, zp, ctx, changes).await
}

/// Deletes the child `name`, which the caller found controlled by this `ZmqProxy`.
async fn delete_child<K>(
    child: &Child<'_, K>,
    name: &str,
    zp: &ZmqProxy,
    ctx: &Context,
    changes: &mut Vec<Change>,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    let kind = K::kind(&()).to_string();
    ctx.metrics.requested(&kind, "delete");
    match child.api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        // Already gone (the cache was a moment behind).
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        Err(source) => {
            return Err(Error::Delete { kind, name: name.to_string(), source });
        }
    }
    info!(object = %key(zp), %kind, %name, "deleted child");
    ctx.metrics.wrote(&kind, "Deleted");
    changes.push(Change { action: "Deleted", kind, name: name.to_string(), reference: None });
    Ok(())
}

/// Writes `computed` unless the object already carries it (transition times kept).
async fn write_status(zp: &ZmqProxy, ctx: &Context, computed: ZmqProxyStatus) -> Result<(), Error> {
    let new = status::carry_transition_times(zp.status.as_ref(), computed);
    if zp.status.as_ref() == Some(&new) {
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
    api.patch_status(&zp.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(Error::Status)?;
    Ok(())
}

/// The API server refuses an Event whose note is longer than this many bytes
/// (`NoteLengthLimit` of Kubernetes' event validation).
pub const EVENT_NOTE_LIMIT: usize = 1024;

/// `note` cut to [`EVENT_NOTE_LIMIT`] bytes at a character boundary, ending in `...` when cut:
/// error messages that quote an API server's answer can be longer than an Event may carry.
pub fn event_note(mut note: String) -> String {
    if note.len() > EVENT_NOTE_LIMIT {
        let mut end = EVENT_NOTE_LIMIT - 3;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    note
}

/// One Normal event per kind of change a reconcile made ("Created StatefulSet tasks, Service
/// tasks"), naming the child as the event's related object when there is only one.
async fn publish_changes(ctx: &Context, zp: &ZmqProxy, changes: Vec<Change>) {
    // In order of first appearance: a migration deletes the Deployment between two creations.
    let mut actions: Vec<&'static str> = Vec::new();
    for change in &changes {
        if !actions.contains(&change.action) {
            actions.push(change.action);
        }
    }
    for action in actions {
        let group: Vec<&Change> = changes.iter().filter(|c| c.action == action).collect();
        let children: Vec<String> =
            group.iter().map(|c| format!("{} {}", c.kind, c.name)).collect();
        let note = format!("{action} {}", children.join(", "));
        let secondary = match group.as_slice() {
            [only] => only.reference.clone(),
            _ => None,
        };
        publish(ctx, zp, EventType::Normal, action, note, secondary).await;
    }
}

/// Events are best effort: a failure to publish one is logged, never fails the reconcile.
async fn publish(
    ctx: &Context,
    zp: &ZmqProxy,
    type_: EventType,
    reason: &str,
    note: String,
    secondary: Option<ObjectReference>,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(event_note(note)),
        action: "Reconcile".to_string(),
        secondary,
    };
    ctx.metrics.requested("Event", "create");
    if let Err(e) = ctx.recorder.publish(&event, &zp.object_ref(&())).await {
        warn!(object = %key(zp), error = %e, "cannot publish event");
    }
}

/// Runs the controller until `shutdown` completes; in-flight reconciles finish first.
/// `namespace` limits every watch to one namespace (all namespaces when None).
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    run_with(ctx, namespace, CONCURRENCY, shutdown).await;
}

/// [`run`] with at most `concurrency` reconciles at once (0: unbounded).
pub async fn run_with(
    ctx: Arc<Context>,
    namespace: Option<String>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (zps, stateful_sets, services, pdbs, pods, deployments, config_maps) = (
        scoped(&client, &namespace),
        scoped::<StatefulSet>(&client, &namespace),
        scoped::<Service>(&client, &namespace),
        scoped::<PodDisruptionBudget>(&client, &namespace),
        scoped::<Pod>(&client, &namespace),
        scoped::<Deployment>(&client, &namespace),
        scoped::<ConfigMap>(&client, &namespace),
    );
    // Only children and proxy pods carry the managed-by label, so the owned watches skip every
    // other object.
    // Asked once at startup, so the log says at once whether PodMonitors can be made.
    let _ = ctx.monitoring.lookup(&ctx.client).await;
    let owned = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    let zp_writer = Writer::<ZmqProxy>::default();
    let zp_store = zp_writer.as_reader();
    let stateful_set_writer = Writer::<StatefulSet>::default();
    let service_writer = Writer::<Service>::default();
    let pdb_writer = Writer::<PodDisruptionBudget>::default();
    let pod_writer = Writer::<Pod>::default();
    let deployment_writer = Writer::<Deployment>::default();
    let config_map_writer = Writer::<ConfigMap>::default();
    ctx.use_caches(Some(ChildCaches {
        stateful_sets: stateful_set_writer.as_reader(),
        services: service_writer.as_reader(),
        pod_disruption_budgets: pdb_writer.as_reader(),
        pods: pod_writer.as_reader(),
        deployments: deployment_writer.as_reader(),
        config_maps: config_map_writer.as_reader(),
    }));
    let config = controller::Config::default().concurrency(concurrency).debounce(DEBOUNCE);
    let main = watches::watch(zps, watcher::Config::default(), zp_writer, Trigger::Applied);
    Controller::for_stream(main, zp_store)
        .with_config(config)
        .owns_stream(watches::watch(
            stateful_sets,
            owned.clone(),
            stateful_set_writer,
            Trigger::Touched,
        ))
        .owns_stream(watches::watch(services, owned.clone(), service_writer, Trigger::Touched))
        .owns_stream(watches::watch(
            deployments,
            owned.clone(),
            deployment_writer,
            Trigger::Touched,
        ))
        .owns_stream(watches::watch(pdbs, owned.clone(), pdb_writer, Trigger::Touched))
        .owns_stream(watches::watch(
            config_maps,
            owned.clone(),
            config_map_writer,
            Trigger::Touched,
        ))
        // Pods are the StatefulSet's, not the object's: mapped by their instance label.
        .watches_stream(
            watches::watch_slimmed(pods, owned, pod_writer, Trigger::Touched, watches::slim_pod),
            |pod| watches::owner_of_pod(&pod),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(object = %object, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile error"),
            }
        })
        .await;
    ctx.use_caches(None);
}

/// An Api of `K` in `namespace` (every namespace when None).
fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_notes_fit_the_api_servers_limit() {
        assert_eq!(event_note("Created Service tasks".into()), "Created Service tasks");
        let exact = "x".repeat(EVENT_NOTE_LIMIT);
        assert_eq!(event_note(exact.clone()), exact);
        let long = event_note("é".repeat(EVENT_NOTE_LIMIT));
        assert!(long.len() <= EVENT_NOTE_LIMIT, "{}", long.len());
        assert!(long.ends_with("...") && long.starts_with("éé"));
    }
}
