//! The reconcile pipeline of one `ZmqProxy`: validate and build (pure, [`crate::build`]), apply
//! each child with server-side apply only when it differs from what the API server holds
//! ([`crate::diff`]), compute the status ([`crate::status`]) and write it only when it changed,
//! publish events for what was written or what failed, and back off per object on errors.
//! A resync of an unchanged object therefore only reads.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Future, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use crate::build::{self, BuildError, BuildOptions};
use crate::crd::{MANAGED_BY, ZmqProxy, ZmqProxyStatus};
use crate::diff;
use crate::metrics::Metrics;
use crate::status::{self, Failure};

/// The one field manager of every write, so ownership of each field is the operator's alone.
pub const MANAGER: &str = "zmq-proxy-operator";
/// Periodic resync of a healthy object; read-only when nothing changed.
pub const RESYNC: Duration = Duration::from_secs(300);
/// First retry after a failure; doubled per consecutive failure up to [`BACKOFF_MAX`].
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

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
    /// Consecutive failures per object (namespace/name), for the exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
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
            failures: Mutex::default(),
        })
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
    let started = Instant::now();
    let result = apply_all(&zp, &ctx).await;
    ctx.metrics.reconciled(started.elapsed());
    match &result {
        Ok(_) => ctx.reset_backoff(&zp),
        Err(e) => {
            warn!(object = %key(&zp), error = %e, reason = e.reason(), "reconcile failed");
            ctx.metrics.failed(e.reason());
            publish(&ctx, &zp, EventType::Warning, e.reason(), e.to_string(), None).await;
            let failure = Failure { reason: e.reason().to_string(), message: e.to_string() };
            let mut status = status::compute(&zp, None, Some(&failure), status::now());
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

async fn apply_all(zp: &ZmqProxy, ctx: &Context) -> Result<Action, Error> {
    let namespace = zp.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let children = build::children(zp, &ctx.options)?;
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);

    let deployment =
        apply_child(&deployments, &children.deployment, zp, ctx, recreate_fixup).await?;
    apply_child(&services, &children.service, zp, ctx, no_fixup).await?;
    match &children.headless {
        Some(headless) => {
            apply_child(&services, headless, zp, ctx, no_fixup).await?;
        }
        None => delete_owned(&services, &build::headless_name(&zp.name_any()), zp, ctx).await?,
    }

    let status = status::compute(zp, Some(&deployment), None, status::now());
    write_status(zp, ctx, status).await?;
    Ok(Action::requeue(RESYNC))
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

/// A merge patch to send before applying `desired` over `observed`, for changes server-side
/// apply cannot make in one step.
type Fixup<K> = fn(desired: &K, observed: &K) -> Option<serde_json::Value>;

fn no_fixup<K>(_: &K, _: &K) -> Option<serde_json::Value> {
    None
}

/// The API server refuses `rollingUpdate` next to `type: Recreate`, and when the operator stops
/// setting `rollingUpdate` server-side apply may leave an empty one behind; so the switch to
/// Recreate (scaling down to one replica) clears it in the same write that changes the type.
fn recreate_fixup(desired: &Deployment, observed: &Deployment) -> Option<serde_json::Value> {
    let strategy = |d: &Deployment| d.spec.as_ref().and_then(|s| s.strategy.clone());
    let wants_recreate = strategy(desired).and_then(|s| s.type_).as_deref() == Some("Recreate");
    let has_rolling_update = strategy(observed).is_some_and(|s| s.rolling_update.is_some());
    (wants_recreate && has_rolling_update).then(
        || serde_json::json!({"spec": {"strategy": {"type": "Recreate", "rollingUpdate": null}}}),
    )
}

/// Reads the child and applies `desired` only when the child is missing or differs; returns the
/// child as the API server holds it afterwards.
async fn apply_child<K>(
    api: &Api<K>,
    desired_object: &K,
    zp: &ZmqProxy,
    ctx: &Context,
    fixup: Fixup<K>,
) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let kind = K::kind(&()).to_string();
    let name = desired_object.meta().name.clone().unwrap_or_default();
    let desired = diff::stamp(serde_json::to_value(desired_object)?);
    let observed = api.get_opt(&name).await.map_err(|source| Error::Get {
        kind: kind.clone(),
        name: name.clone(),
        source,
    })?;
    let change = match &observed {
        None => "Created",
        Some(current) => {
            if !controlled_by(current, zp) {
                return Err(Error::ChildNotOwned { kind, name });
            }
            if !diff::needs_apply(&desired, &serde_json::to_value(current)?) {
                debug!(object = %key(zp), %kind, %name, "child up to date");
                return Ok(current.clone());
            }
            if let Some(patch) = fixup(desired_object, current) {
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(
                    |source| Error::Apply { kind: kind.clone(), name: name.clone(), source },
                )?;
            }
            "Updated"
        }
    };
    let applied = api
        .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&desired))
        .await
        .map_err(|source| Error::Apply { kind: kind.clone(), name: name.clone(), source })?;
    info!(object = %key(zp), %kind, %name, change, "applied child");
    ctx.metrics.wrote(&kind, change);
    let note = format!("{change} {kind} {name}");
    publish(ctx, zp, EventType::Normal, change, note, Some(applied.object_ref(&()))).await;
    Ok(applied)
}

/// Deletes the child `name` if it exists and this `ZmqProxy` controls it.
async fn delete_owned<K>(
    api: &Api<K>,
    name: &str,
    zp: &ZmqProxy,
    ctx: &Context,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    let kind = K::kind(&()).to_string();
    let observed = api.get_opt(name).await.map_err(|source| Error::Get {
        kind: kind.clone(),
        name: name.to_string(),
        source,
    })?;
    let Some(current) = observed else { return Ok(()) };
    if !controlled_by(&current, zp) {
        return Ok(());
    }
    api.delete(name, &DeleteParams::background()).await.map_err(|source| Error::Delete {
        kind: kind.clone(),
        name: name.to_string(),
        source,
    })?;
    info!(object = %key(zp), %kind, %name, "deleted child");
    ctx.metrics.wrote(&kind, "Deleted");
    publish(ctx, zp, EventType::Normal, "Deleted", format!("Deleted {kind} {name}"), None).await;
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
    let client = ctx.client.clone();
    let (zps, deployments, services) = match &namespace {
        Some(ns) => (
            Api::<ZmqProxy>::namespaced(client.clone(), ns),
            Api::<Deployment>::namespaced(client.clone(), ns),
            Api::<Service>::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone()), Api::all(client)),
    };
    // Only children carry the managed-by label, so the owned watches skip every other object.
    let owned = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    Controller::new(zps, watcher::Config::default().any_semantic())
        .owns(deployments, owned.clone())
        .owns(services, owned)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(object = %object, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile error"),
            }
        })
        .await;
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
